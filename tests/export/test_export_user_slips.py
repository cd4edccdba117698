"""Issue 13, points 13, 14 and the export bits of 17, from the user's seat (the CLI in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gsvinspect.align.alignment import align
from gsvinspect.align.knowledge import diagnose
from gsvinspect.cli.main import main
from gsvinspect.load.checkpoint import open_checkpoint

from helpers_export import export_ok, one_torch_thread, pair_factory  # noqa: F401


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return pair_factory(tmp_path_factory)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, args)], capture_output=True, text=True,
                          timeout=180)


def test_check_and_export_give_one_verdict_on_scaled_widths(pairs, tmp_path):
    pre, ft = pairs("sovits-G", "v2")
    out = tmp_path / "base.pth"
    _, rep = export_ok(pre, ft, out)
    said_by_export = rep.manifest_check["verdict"]
    r = _cli("check", out, "--json")
    checked = json.loads(r.stdout)
    assert checked["name"] == rep.manifest_check["name"] == "sovits-G-v2"
    assert checked["verdict"] == said_by_export
    assert said_by_export.startswith("keys match, widths do not: all 776 expected keys present")
    assert [f["code"] for f in checked["findings"]][:1] == ["nonstandard-widths"]
    assert "shape-differs" not in [f["code"] for f in checked["findings"]]
    text = _cli("check", out).stdout
    assert said_by_export in " ".join(text.split()) and "NOT loadable" not in text
    assert dict(rep.describe())["expected keys"] == f"sovits-G-v2: {said_by_export}"


def test_swapped_arguments_are_refused_with_the_override_named(pairs, tmp_path, capsys):
    pre, ft = pairs("sovits-G", "v2")  # pretrained s2G, then a training G_*.pth
    out = tmp_path / "out.pth"
    r = _cli("export", ft, pre, "-o", out)  # as a user types it: a subprocess
    assert r.returncode == 3 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "look swapped" in lines[0] and "--allow-swapped" in lines[0]
    assert main(["export", str(ft), str(pre), "-o", str(out), "--allow-swapped"]) == 0 and out.exists()
    assert main(["export", str(pre), str(ft), "-o", str(tmp_path / "right.pth")]) == 0
    capsys.readouterr()


def test_diff_says_the_files_look_swapped(pairs):
    pre, ft = pairs("gpt", "v2")  # pretrained GPT, then a Lightning ckpt
    with open_checkpoint(pre) as p, open_checkpoint(ft) as f:
        swapped = diagnose(f, p, align(f.weights, p.weights))
        right = diagnose(p, f, align(p.weights, f.weights))
    assert [x for x in swapped if x.code == "swapped-files"][0].severity == "error"
    assert "swapped-files" not in [x.code for x in right]


def test_dry_run_shows_out(pairs, tmp_path, capsys):
    pre, ft = pairs("gpt", "v2")
    out = tmp_path / "new-base.ckpt"
    r = _cli("export", pre, ft, "-o", out, "--dry-run")
    assert r.returncode == 0 and str(out) in " ".join(r.stdout.split()) and not out.exists()
    assert main(["export", str(pre), str(ft), "-o", str(out), "--dry-run", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["out"] == str(out) and d["dry_run"]
