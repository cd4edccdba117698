"""README promises about the CLI that no other test checked: `info` plain when piped, `ls
--filter/--all/--json`, `diff --device cuda` without a GPU, and the app's `--no-mouse`.

Every check runs the real command in a subprocess on files written by gsvinspect.synth.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time

import pytest

from gsvinspect import synth

ANSI = re.compile(r"\x1b\[")


def _gsv(*argv, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, argv)], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def gpt_pair(tmp_path_factory):
    return synth.write_pair(tmp_path_factory.mktemp("promises"), "gpt", "v2", scale=8)


def test_info_piped_is_plain_text_with_the_facts(gpt_pair):
    _, ft = gpt_pair
    r = _gsv("info", ft)
    assert r.returncode == 0, r.stderr
    assert not ANSI.search(r.stdout) and "┃" not in r.stdout and "│" not in r.stdout
    lines = dict(ln.split(None, 1) for ln in r.stdout.splitlines()[1:] if ln and not ln.startswith(" "))
    assert lines["layout"] == "gpt-lightning" and lines["version"] == "v2"
    assert "MixedPrecision" in r.stdout and r.stdout.splitlines()[0] == str(ft)


def test_ls_filter_all_and_json(gpt_pair):
    _, ft = gpt_pair
    every = json.loads(_gsv("ls", ft, "--json").stdout)["keys"]
    assert len(every) == 295 and all(k["key"].startswith("model.") for k in every)
    some = json.loads(_gsv("ls", ft, "--json", "--filter", r"\.self_attn\.in_proj_weight$").stdout)["keys"]
    assert [k["key"] for k in some] == [k["key"] for k in every if k["key"].endswith(".self_attn.in_proj_weight")]
    assert len(some) == 24  # one per layer, in file order
    with_opt = json.loads(_gsv("ls", ft, "--json", "--all").stdout)["keys"]
    extra = [k["key"] for k in with_opt[len(every):]]
    # tensors outside the state dict: the optimizer moments and the checkpoint callback's scores
    assert any(k.startswith("optimizer_states/0/state/") for k in extra)
    assert all(k.split("/", 1)[0] in ("optimizer_states", "callbacks") for k in extra)
    bad = _gsv("ls", ft, "--filter", "(")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--filter" in bad.stderr


def test_diff_device_cuda_without_gpu_is_a_usage_error(gpt_pair):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA path itself is exercised instead")
    pre, ft = gpt_pair
    r = _gsv("diff", pre, ft, "--device", "cuda")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "cuda" in r.stderr.lower()
    assert _gsv("diff", pre, ft, "--device", "cpu", "--json").returncode == 0


def _screen_until(fd, proc, needle: bytes, timeout: float = 30.0) -> bytes:
    out = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end and needle not in out and proc.poll() is None:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


@pytest.mark.parametrize("no_mouse", [False, True])
def test_no_mouse_turns_mouse_reporting_off(gpt_pair, no_mouse):
    """In a real pseudo-terminal the app asks for mouse reporting (CSI ?1000h) unless --no-mouse."""
    import pty

    pre, ft = gpt_pair
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100", LINES="30")
    env.pop("TEXTUAL_DRIVER", None)
    argv = [sys.executable, "-m", "gsvinspect", "open", str(pre), str(ft), "--no-stats"]
    proc = subprocess.Popen(argv + (["--no-mouse"] if no_mouse else []), stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True)
    os.close(slave)
    try:
        out = _screen_until(master, proc, b"ar_text_embedding")
        assert b"ar_text_embedding" in out, out[-500:]
        assert (b"\x1b[?1000h" in out) is (not no_mouse)
        os.write(master, b"q")
        proc.wait(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
