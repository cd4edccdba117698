"""Fault-injected exports: OUT is absent or complete and verified, inputs never change.

* kill -9 after random delays (24 trials): each export runs in its own process, forked from a
  server that imported torch once (so the delays land inside the export, not in the import);
* disk full: a 2 MiB tmpfs when this sandbox may mount one, and ENOSPC injected into the
  writer in-process everywhere;
* a read-only output directory (ro tmpfs, or chmod when not root);
* OUT equal to an input: same path, through a symlink, through `..`, a hard link;
* OUT on another filesystem (/dev/shm).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hostile_corpus as hc
from helpers_export import sha256_of

TRIALS = 24


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from gsvinspect import synth

    root = tmp_path_factory.mktemp("faults")
    pre, ft = synth.write_pair(root, "sovits-G", "v2", scale=4, optimizer="light")
    ref = root / "reference.pth"
    proc = _cli(["export", str(pre), str(ft), "-o", str(ref)], root)
    assert proc.returncode == 0, proc.stderr
    return pre, ft, ref, sha256_of(ref)


@pytest.fixture
def inputs_unchanged(pair):
    pre, ft, _ref, _ = pair
    before = (sha256_of(pre), sha256_of(ft))
    yield
    assert (sha256_of(pre), sha256_of(ft)) == before, "an input file changed"


def _cli(args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "gsvinspect", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def _temps(folder: Path) -> list[str]:
    from gsvinspect.export.atomic import TEMP_TAG

    return [n for n in os.listdir(folder) if TEMP_TAG in n]


def _assert_complete(out: Path, ref_sha: str) -> None:
    """A complete OUT: the reference bytes, readable by our loader and by torch.load."""
    import torch

    from gsvinspect.load.checkpoint import open_checkpoint

    assert sha256_of(out) == ref_sha
    with open_checkpoint(out) as ck:
        keys = list(ck.weights)
        assert keys and ck.array(keys[-1]).size
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert len(obj["weight"]) == len(keys)


# ---------------------------------------------------------------------------------------------
# kill -9

_FORK_SERVER = textwrap.dedent(r"""
    import json, os, random, signal, sys, time
    import torch  # noqa: F401  (imported once, before forking: the delays fall inside the export)
    from gsvinspect.cli.main import main
    pre, ft, folder, trials, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

    def export(out):
        pid = os.fork()
        if pid == 0:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os._exit(main(["export", pre, ft, "-o", out]))
        return pid

    t0 = time.perf_counter()
    pid = export(os.path.join(folder, "timing.pth"))
    _, status = os.waitpid(pid, 0)
    duration = time.perf_counter() - t0
    rng = random.Random(seed)
    results = []
    for i in range(trials):
        # spread over [0, 1.3 x the export's duration]: before, during writing, verifying, renaming, after
        delay = duration * 1.3 * (i + rng.random()) / trials
        out = os.path.join(folder, "out_%02d.pth" % i)
        pid = export(out)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, st = os.waitpid(pid, 0)
        results.append({"out": out, "delay": delay, "pid": pid, "killed": os.WIFSIGNALED(st),
                        "code": os.WEXITSTATUS(st) if os.WIFEXITED(st) else None})
    print(json.dumps({"duration": duration, "timing_status": status, "trials": results}))
""")


def test_kill_9_at_random_points(pair, tmp_path, inputs_unchanged):
    pre, ft, _ref, ref_sha = pair
    proc = subprocess.run([sys.executable, "-c", _FORK_SERVER, str(pre), str(ft), str(tmp_path), str(TRIALS), "7"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["timing_status"] == 0
    trials = report["trials"]
    assert len(trials) >= 20
    absent = complete = 0
    for t in trials:
        out = Path(t["out"])
        if out.exists():
            _assert_complete(out, ref_sha)
            complete += 1
        else:
            absent += 1
            assert t["killed"], t  # an export that ended by itself must have written OUT
    assert absent >= 1  # the earliest kills land before the rename
    # kill -9 cannot be caught: leftovers are clearly named temp files, never a half OUT
    for name in _temps(tmp_path):
        assert name.startswith(".out_") and name.split("-")[-1].isdigit()
    # and the next export to such an OUT removes the orphan and succeeds
    orphans = {t["out"] for t in trials for n in _temps(tmp_path) if n.startswith("." + Path(t["out"]).name)}
    for out in sorted(orphans)[:1]:
        again = _cli(["export", str(pre), str(ft), "-o", out], tmp_path)
        assert again.returncode == 0, again.stderr
        _assert_complete(Path(out), ref_sha)
        assert not [n for n in _temps(tmp_path) if n.startswith("." + Path(out).name)]


# ---------------------------------------------------------------------------------------------
# disk full

def _mount_tmpfs(path: Path, size: str, *, ro: bool = False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount") or os.geteuid() != 0:
        return False
    opts = f"size={size}" + (",ro" if ro else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def _disk_full_cli(pair, tmp_path):
    pre, ft, ref, _ = pair
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "2m"):
        pytest.skip("cannot mount a tmpfs here; ENOSPC is injected by test_disk_full_injected instead")
    try:
        assert os.path.getsize(ref) > 2 * 1024 * 1024
        out = small / "out.pth"
        proc = _cli(["export", str(pre), str(ft), "-o", str(out)], tmp_path)
        left = os.listdir(small)
    finally:
        _umount(small)
    return out, proc, left


def test_disk_full_on_a_small_tmpfs_leaves_nothing(pair, tmp_path, inputs_unchanged):
    out, proc, left = _disk_full_cli(pair, tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert left == []  # no OUT, no temp file left filling the disk


def test_disk_full_on_a_small_tmpfs_says_so(pair, tmp_path, inputs_unchanged):
    out, proc, _left = _disk_full_cli(pair, tmp_path)
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[0]
    assert str(out) in line and ("space" in line.lower() or "full" in line.lower())


class _FullDisk:
    """A file object that fails with ENOSPC once `budget` bytes were written."""

    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, b) -> int:
        n = len(memoryview(b).cast("B"))
        if n > self._left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= n
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _export_with_full_disk(pair, tmp_path, monkeypatch, capsys, budget):
    from gsvinspect.export import atomic
    from gsvinspect.cli.main import main

    pre, ft, _ref, _ = pair
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), budget))
    out = tmp_path / "out.pth"
    rc = main(["export", str(pre), str(ft), "-o", str(out)])
    return out, rc, capsys.readouterr().err


@pytest.mark.parametrize("budget", [0, 4096, 3_000_000])
def test_disk_full_injected_leaves_nothing(pair, tmp_path, monkeypatch, capsys, inputs_unchanged, budget):
    out, rc, err = _export_with_full_disk(pair, tmp_path, monkeypatch, capsys, budget)
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and _temps(tmp_path) == []


@pytest.mark.parametrize("budget", [0, 3_000_000])
def test_disk_full_injected_says_so(pair, tmp_path, monkeypatch, capsys, inputs_unchanged, budget):
    out, rc, err = _export_with_full_disk(pair, tmp_path, monkeypatch, capsys, budget)
    assert rc == 3, err
    line = err.strip().splitlines()[0]
    assert str(out) in line and "space" in line.lower(), err


# ---------------------------------------------------------------------------------------------
# read-only directory, OUT = input, another filesystem

def test_read_only_output_directory(pair, tmp_path, inputs_unchanged):
    pre, ft, _ref, _ = pair
    ro = tmp_path / "ro"
    mounted = _mount_tmpfs(ro, "1m", ro=True)
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions and mount is unavailable")
        ro.chmod(0o555)
    try:
        out = ro / "out.pth"
        proc = _cli(["export", str(pre), str(ft), "-o", str(out)], tmp_path)
        assert proc.returncode == 3, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and "Traceback" not in proc.stderr
        assert not out.exists() and os.listdir(ro) == []
    finally:
        if mounted:
            _umount(ro)
        else:
            ro.chmod(0o755)


def test_output_equal_to_an_input_in_every_disguise(pair, tmp_path, inputs_unchanged):
    pre, ft, _ref, _ = pair
    link = tmp_path / "link.pth"
    link.symlink_to(ft)
    hard = tmp_path / "hard.pth"
    os.link(pre, hard)
    sub = tmp_path / "sub"
    sub.mkdir()
    dotdot = sub / ".." / os.path.relpath(ft, tmp_path)
    outs = [str(pre), str(ft), str(link), str(hard), str(dotdot), os.path.relpath(ft, tmp_path)]
    jobs = [["export", str(pre), str(ft), "-o", o, "--force"] for o in outs]
    for argv, (rc, err, _out) in zip(jobs, hc.run_cli_batch(jobs, cwd=tmp_path)):
        lines = err.strip().splitlines()
        assert rc == 3 and len(lines) == 1, (argv, rc, err)
        assert "input" in lines[0], lines[0]
    assert link.is_symlink() and os.readlink(link) == str(ft)


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK), reason="no /dev/shm")
def test_output_on_another_filesystem(pair, tmp_path, inputs_unchanged):
    pre, ft, _ref, ref_sha = pair
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the inputs here")
    folder = Path(f"/dev/shm/gsvinspect-faults-{os.getpid()}")
    folder.mkdir()
    try:
        out = folder / "out.pth"
        proc = _cli(["export", str(pre), str(ft), "-o", str(out)], tmp_path)
        assert proc.returncode == 0, proc.stderr
        _assert_complete(out, ref_sha)
        assert _temps(folder) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
