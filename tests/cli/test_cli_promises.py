"""README promises about the CLI that no other test checked: `info` plain when piped, `ls
--filter/--all/--json` in file order, `diff --device cuda` without a GPU, the app's `--no-mouse`,
`gsvinspect PRE FT` as shorthand for `open`, and the README's example rules file.

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
from pathlib import Path

import pytest
from test_cli_diff import ANSI, run_sub

from gsvinspect import synth

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def gpt_pair(tmp_path_factory):
    return synth.write_pair(tmp_path_factory.mktemp("promises"), "gpt", "v2", scale=8)


def test_info_piped_is_plain_text_with_the_facts(gpt_pair):
    _, ft = gpt_pair
    r = run_sub("info", ft)
    assert r.returncode == 0, r.stderr
    assert not ANSI.search(r.stdout) and "┃" not in r.stdout and "│" not in r.stdout
    lines = dict(ln.split(None, 1) for ln in r.stdout.splitlines()[1:] if ln and not ln.startswith(" "))
    assert lines["layout"] == "gpt-lightning" and lines["version"] == "v2"
    assert "MixedPrecision" in r.stdout and r.stdout.splitlines()[0] == str(ft)


def test_ls_filter_all_and_json(gpt_pair):
    _, ft = gpt_pair
    import torch

    every = json.loads(run_sub("ls", ft, "--json").stdout)["keys"]
    assert len(every) == 295 and all(k["key"].startswith("model.") for k in every)
    # keys, shapes and dtypes in file order: what torch.load itself reads
    sd = torch.load(ft, weights_only=False)["state_dict"]
    assert [(k["key"], k["shape"], k["dtype"]) for k in every] == \
        [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()]
    some = json.loads(run_sub("ls", ft, "--json", "--filter", r"\.self_attn\.in_proj_weight$").stdout)["keys"]
    assert [k["key"] for k in some] == [k["key"] for k in every if k["key"].endswith(".self_attn.in_proj_weight")]
    assert len(some) == 24  # one per layer, in file order
    with_opt = json.loads(run_sub("ls", ft, "--json", "--all").stdout)["keys"]
    extra = [k["key"] for k in with_opt[len(every):]]
    # tensors outside the state dict: the optimizer moments and the checkpoint callback's scores
    assert any(k.startswith("optimizer_states/0/state/") for k in extra)
    assert all(k.split("/", 1)[0] in ("optimizer_states", "callbacks") for k in extra)
    bad = run_sub("ls", ft, "--filter", "(")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--filter" in bad.stderr


def test_diff_device_cuda_without_gpu_is_a_usage_error(gpt_pair):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CUDA path itself is exercised instead")
    pre, ft = gpt_pair
    r = run_sub("diff", pre, ft, "--device", "cuda")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "cuda" in r.stderr.lower()
    assert run_sub("diff", pre, ft, "--device", "cpu", "--json").returncode == 0


def test_bare_files_are_shorthand_for_open(gpt_pair):
    """`gsvinspect PRE FT` is `gsvinspect open PRE FT`: without a terminal both give the inspector's
    own refusal (not argparse's 'invalid choice'), with the app's options too."""
    pre, ft = gpt_pair
    opened = run_sub("open", pre, ft)
    assert opened.returncode == 2 and "the inspector needs an interactive terminal" in opened.stderr
    for argv in ((pre, ft), (pre, ft, "--no-stats", "--no-mouse"), (pre,)):
        r = run_sub(*argv)
        assert (r.returncode, r.stderr) == (2, opened.stderr), argv


def test_readme_rules_file_example_is_valid(tmp_path):
    """The example under "A rules file" in the README is a file `rules check` accepts as written."""
    example = re.search(r"### A rules file\n\n```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    rules = tmp_path / "rules.toml"
    rules.write_text(example.group(1))
    r = run_sub("rules", "check", rules)
    assert r.returncode == 0, r.stderr
    assert "OK, 2 rules, 2 alpha entries" in r.stdout
    assert "strip_prefix 'module.'" in r.stdout and "rename ^net_g\\. -> ''" in r.stdout


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
