"""Safe writes: OUT is absent (or untouched) or the complete verified file, inputs never change.

Covers refusals (OUT is an input by path, symlink, `..`, hard link; existing OUT without --force),
failures at every stage, SIGTERM, kill -9 mid-export (subprocess), and non-ASCII paths.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from gsvinspect.export import mixing, verify as verify_mod
from gsvinspect import synth
from gsvinspect.export.atomic import TEMP_TAG, AtomicOutput, check_output, remove_stale_temps, temp_path_for
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import ExportError
from gsvinspect.export.writer import export
from helpers_export import SCALE, sha256_of


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("模型 目录")  # non-ASCII directory on purpose
    return synth.write_pair(root, "sovits-D", "v2", scale=SCALE, optimizer="light")


def _temps(d) -> list[str]:
    return [n for n in os.listdir(d) if TEMP_TAG in n]


@pytest.fixture
def digests(pair):
    before = [sha256_of(p) for p in pair]
    yield
    assert [sha256_of(p) for p in pair] == before, "an input file changed"


def test_refuses_input_paths_in_every_disguise(pair, tmp_path, digests):
    pre, ft = pair
    link = tmp_path / "link.pth"
    link.symlink_to(ft)
    hard = tmp_path / "hard.pth"
    os.link(ft, hard)
    dotdot = pre.parent / ".." / pre.parent.name / pre.name
    for out in (pre, ft, link, hard, dotdot):
        with pytest.raises(ExportError, match="input"):
            export(pre, ft, out, force=True)
    assert not _temps(tmp_path) and not _temps(pre.parent)


def test_existing_out_needs_force(pair, tmp_path, digests):
    pre, ft = pair
    out = tmp_path / "out.pth"
    out.write_bytes(b"precious")
    with pytest.raises(ExportError, match="already exists"):
        export(pre, ft, out)
    assert out.read_bytes() == b"precious"
    rep = export(pre, ft, out, force=True)
    assert rep.sha256 == sha256_of(out) and out.stat().st_size == rep.size
    assert torch.load(out, weights_only=True)["weight"]


def test_missing_directory_is_refused(pair, tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        check_output(tmp_path / "nope" / "x.pth", pair)


@pytest.mark.parametrize("stage", ["compute", "write", "verify", "verdict"])
def test_failure_at_any_stage_leaves_out_untouched(pair, tmp_path, monkeypatch, digests, stage):
    pre, ft = pair
    out = tmp_path / "out.pth"
    out.write_bytes(b"old complete file")

    def boom(*a, **k):
        raise RuntimeError(f"boom in {stage}")

    if stage == "compute":
        real = mixing.compute_tensor
        calls = iter(range(1000))
        monkeypatch.setattr(mixing, "compute_tensor",
                            lambda plan, ts: boom() if next(calls) == 5 else real(plan, ts))
    elif stage == "write":
        from gsvinspect.export import torch_writer

        monkeypatch.setattr(torch_writer, "save", boom)
    elif stage == "verify":
        real_verify = verify_mod.verify_written

        def corrupt_then_verify(plan, temp, weights, obj):
            with open(temp, "r+b") as f:  # flip one byte deep inside the tensor data
                f.seek(os.path.getsize(temp) // 2)
                b = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([b[0] ^ 0xFF]))
            return real_verify(plan, temp, weights, obj)

        monkeypatch.setattr(verify_mod, "verify_written", corrupt_then_verify)
    else:
        monkeypatch.setattr(verify_mod, "upstream_verdict", boom)
    with pytest.raises((RuntimeError, ExportError)):
        export(pre, ft, out, force=True)
    assert out.read_bytes() == b"old complete file"
    assert not _temps(tmp_path)


def test_progress_callback_can_cancel(pair, tmp_path):
    pre, ft = pair

    class Cancelled(Exception):
        pass

    def progress(phase, done, total):
        if phase == "verify":
            raise Cancelled

    with pytest.raises(Cancelled):
        export(pre, ft, tmp_path / "o.pth", progress=progress)
    assert not (tmp_path / "o.pth").exists() and not _temps(tmp_path)


def test_atomic_output_refuses_and_cleans(tmp_path):
    out = tmp_path / "x.bin"
    with pytest.raises(ValueError):
        with AtomicOutput(out) as w:
            w.file.write(b"partial")
            assert w.temp.exists() and w.temp.name == f".x.bin{TEMP_TAG}{os.getpid()}"
            raise ValueError
    assert not out.exists() and not _temps(tmp_path)
    with AtomicOutput(out) as w:
        w.file.write(b"complete")
        w.commit()
    assert out.read_bytes() == b"complete"


def test_stale_temp_of_dead_process_is_removed(tmp_path):
    out = tmp_path / "m.pth"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    stale = temp_path_for(out, dead)
    stale.write_bytes(b"half")
    alive = temp_path_for(out, os.getppid())  # a live process's temp is left alone
    alive.write_bytes(b"busy")
    assert remove_stale_temps(out) == [stale]
    assert not stale.exists() and alive.exists()


_CHILD = textwrap.dedent("""
    import os, sys, signal, time
    from gsvinspect.export.writer import export
    pre, ft, out, phase, how = sys.argv[1:6]
    def progress(p, done, total):
        if p == phase:
            print("AT", p, flush=True)
            if how == "term":
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
    export(pre, ft, out, progress=progress)
""")


def _child(pair, out, phase, how):
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(pair[0]), str(pair[1]), str(out), phase, how],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("phase", ["compute", "verify"])
def test_kill_9_mid_export(pair, tmp_path, digests, phase):
    out = tmp_path / "新模型.pth"
    child = _child(pair, out, phase, "sleep")
    try:
        assert child.stdout.readline().startswith("AT"), child.stderr.read()
        temp = temp_path_for(out, child.pid)
        assert temp.exists()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists()
    assert _temps(tmp_path) == [temp.name]  # clearly named, pid included
    # the next export to the same OUT removes the orphan and writes a verified file
    rep = export(*pair, out)
    assert out.exists() and rep.sha256 == sha256_of(out) and not _temps(tmp_path)


def test_sigterm_removes_temp(pair, tmp_path, digests):
    out = tmp_path / "o.pth"
    child = _child(pair, out, "verify", "term")
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0 and "interrupted by SIGTERM" in err
    assert not out.exists() and not _temps(tmp_path)


def test_chinese_paths_everywhere(tmp_path):
    pre, ft = synth.write_pair(tmp_path / "预训练", "sovits-D", "v1", scale=SCALE, optimizer="light")
    pre2 = pre.with_name("底模_判别器.pth")
    ft2 = ft.with_name("微调_判别器.pth")
    pre.rename(pre2)
    ft.rename(ft2)
    out = tmp_path / "输出" / "新底模.pth"
    out.parent.mkdir()
    rep = export(pre2, ft2, out)
    assert rep.out_path == out and out.exists()
    assert rep.plan.pre_path == pre2 and rep.plan.ft_path == ft2
    assert list(torch.load(out, weights_only=True)) == ["weight", "config"]
    with open_checkpoint(out) as ck:
        assert len(ck.weights) == 111
