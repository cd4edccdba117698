"""The package installs (non-editable) into a fresh venv: console script, `python -m`, and the
TUI under its distinctive import name `gsvinspect_tui` (never a generic top-level `tui`)."""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("tests/", "bench/", "fuzz/")):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


@pytest.mark.slow
def test_non_editable_install_in_fresh_venv(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the project's files")
    src = tmp_path / "src"
    _copy_tree(src)
    env_dir = tmp_path / "venv"
    # A bare venv: `--version` must need nothing beyond the standard library.
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.rmtree(src)  # prove nothing is imported from the source tree
    out = subprocess.run([str(env_dir / "bin" / "gsvinspect"), "--version"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("gsvinspect ")
    out = subprocess.run([str(py), "-m", "gsvinspect", "--version"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0 and "gsvinspect" in out.stdout
    probe = ("import importlib.util, gsvinspect_tui, gsvinspect;"
             "assert importlib.util.find_spec('tui') is None, 'a generic top-level tui module was installed';"
             "print(gsvinspect_tui.__file__)")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "site-packages" in out.stdout and "gsvinspect_tui" in out.stdout
    # the manifests travel with the package (the project must run without ../shared)
    probe = ("from importlib import resources;"
             "print(len(list(resources.files('gsvinspect.data.manifests').iterdir())))")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and int(out.stdout.strip().splitlines()[-1]) >= 13, out.stderr
    # every module of the source tree is installed (a new subpackage must be listed in pyproject.toml)
    probe = ("import pathlib, gsvinspect, gsvinspect_tui;"
             "[print(p.relative_to(pathlib.Path(m.__file__).parent.parent).as_posix())"
             " for m in (gsvinspect, gsvinspect_tui) for p in pathlib.Path(m.__file__).parent.rglob('*.py')]")
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    installed = set(out.stdout.split())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gsvinspect").rglob("*.py")}
    expected |= {"gsvinspect_tui/" + p.relative_to(ROOT / "tui").as_posix() for p in (ROOT / "tui").rglob("*.py")}
    assert expected - installed == set(), f"not installed: {sorted(expected - installed)}"
