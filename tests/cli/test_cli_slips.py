"""Issue 13 points 15 and 17: a typo is a usage error, a bad file is one line before the app starts,
and `ls FILE | head` is not an error. Real `python -m gsvinspect` processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TIMEOUT = 60


def _run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, args)], capture_output=True,
                          text=True, timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module")
def g_file(tmp_path_factory):
    from gsvinspect.meta import Layout
    from gsvinspect.synth import write_checkpoint

    d = tmp_path_factory.mktemp("slips")
    return write_checkpoint(d / "G_1000.pth", Layout.SOVITS_G_TRAIN, "v2", scale=16, optimizer=False)


def test_a_typo_is_an_unknown_command_with_a_suggestion(g_file):
    r = _run("inof", g_file)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["gsvinspect: error: unknown command 'inof'; did you mean 'info'?"]


def test_an_unknown_word_without_a_close_command_lists_the_commands():
    r = _run("frobnicate")
    assert r.returncode == 2
    assert "unknown command 'frobnicate'" in r.stderr and "info, ls, diff" in r.stderr


@pytest.mark.parametrize("second", ["missing.pth", "sub/missing"])
def test_a_missing_second_file_is_exit_3_before_the_app(g_file, second):
    missing = g_file.parent / second
    r = _run(g_file, missing)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines() == [f"gsvinspect: error: {missing}: no such file"]


def test_a_missing_first_file_named_like_a_checkpoint_is_exit_3(tmp_path):
    r = _run(tmp_path / "nope.pth")
    assert r.returncode == 3 and "nope.pth: no such file" in r.stderr


def test_an_unreadable_file_is_exit_3_before_the_app(g_file, tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_bytes(b"these are my training notes\n")
    r = _run("open", g_file, bad)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in r.stderr


def test_good_files_still_reach_the_app(g_file):
    """Without a terminal the app refuses to start: that refusal proves the pre-check let it through."""
    r = _run(g_file)
    assert r.returncode == 2 and "interactive terminal" in r.stderr


@pytest.fixture(scope="module")
def wide_file(tmp_path_factory):
    """3000 keys: the listing (~250 kB) is larger than a pipe's buffer, so `head` closing it early
    always hits the writer (a small listing can fit the pipe and pass by luck)."""
    import torch

    from gsvinspect.synth import wide_state_dict

    p = tmp_path_factory.mktemp("wide") / "wide.pth"
    torch.save(wide_state_dict(3000), p)
    return p


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_ls_into_head_exits_0(wide_file, extra):
    cmd = f"{sys.executable} -m gsvinspect ls {' '.join(extra)} {wide_file} | head -n 2 >/dev/null; " \
          "echo ${PIPESTATUS[0]}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as for a user
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert r.stdout.strip() == "0", r.stderr
    assert r.stderr == ""
