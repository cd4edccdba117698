"""Issue 14 points 3 and 4 (and issue 13's "scaler no: no GradScaler state"): what `info` says about
loading a file, run as a user runs it (a subprocess for the CLI, the printed fix command executed).
"""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from gsvinspect import synth
from gsvinspect.cli.main import main
from gsvinspect.export.upstream_version import upstream_reading
from gsvinspect.meta import Layout

from helpers_export import export_ok, one_torch_thread, pair_factory  # noqa: F401


class _Run:
    """The CLI in this process (the subprocess form is covered in test_repair / test_export_user_slips)."""

    def __init__(self, capsys, monkeypatch):
        self.capsys, self.monkeypatch = capsys, monkeypatch

    def __call__(self, *args, cwd=None):
        if cwd is not None:
            self.monkeypatch.chdir(cwd)
        self.capsys.readouterr()
        code = main([str(a) for a in args])
        out = self.capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.fixture
def _cli(capsys, monkeypatch):
    return _Run(capsys, monkeypatch)


def _weights_only_loads(path) -> bool:
    """Plain torch.load with torch's default safe globals (gsvinspect never allowlists anything)."""
    import torch

    try:
        torch.load(path, weights_only=True)
        return True
    except Exception:  # noqa: BLE001 - UnpicklingError and friends: not loadable
        return False


@pytest.mark.parametrize("layout,version,blocker", [
    (Layout.GPT_LIGHTNING, "v2", "GLOBAL pathlib.PosixPath"),
    (Layout.SOVITS_WEIGHTS, "v1", "GLOBAL utils.HParams"),
    (Layout.SOVITS_WEIGHTS, "v2ProPlus", "Unsupported operand 48"),
])
def test_info_names_what_stops_weights_only_and_its_fix_works(tmp_path, _cli, layout, version, blocker):
    src = synth.write_checkpoint(tmp_path / "in.pth", layout, version, scale=16)
    r = _cli("info", "--json", src.name, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["torch_load_weights_only"]
    assert d["loads"] is False and any(blocker in b for b in d["blockers"])
    assert _weights_only_loads(src) is False
    # the command info prints is the one that fixes it
    cmd = shlex.split(d["fix"].replace("FIXED", "fixed.pth"))
    assert cmd[:2] == ["gsvinspect", "repair"]
    fixed = _cli(*cmd[1:], cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert _weights_only_loads(tmp_path / "fixed.pth")
    again = json.loads(_cli("info", "--json", "fixed.pth", cwd=tmp_path).stdout)
    assert again["torch_load_weights_only"] == {"loads": True, "blockers": [], "fix": None}
    text = _cli("info", "in.pth", cwd=tmp_path).stdout
    assert "torch.load" in text and f"fix: {d['fix']}" in text


def test_identical_nets_and_check_as_either_name(tmp_path, capsys, _cli):
    d_file = synth.write_checkpoint(tmp_path / "s2D.pth", Layout.SOVITS_D_PRETRAINED, "v1", scale=16)
    text = _cli("info", d_file).stdout
    assert "v1 or v2: identical nets" in text
    assert json.loads(_cli("info", "--json", d_file).stdout)["version_fits"] == ["v1", "v2"]
    results = []
    for name in ("sovits-D-v1", "sovits-D-v2"):
        r = _cli("check", d_file, "--as", name, "--json")
        results.append((r.returncode, json.loads(r.stdout)))
    (code_a, a), (code_b, b) = results
    assert code_a == code_b and (a["name"], b["name"]) == ("sovits-D-v1", "sovits-D-v2")
    for k in ("missing", "unexpected", "shape_mismatched", "n_expected"):
        assert a[k] == b[k], k
    assert a["missing"] == a["unexpected"] == []


def test_info_names_the_layout_export_wrote(tmp_path_factory, tmp_path, _cli):
    pairs = pair_factory(tmp_path_factory)
    pre, ft = pairs("gpt", "v2")
    export_ok(pre, ft, tmp_path / "w.ckpt", layout="gpt-weights")
    d = json.loads(_cli("info", "--json", tmp_path / "w.ckpt").stdout)
    assert d["layout"] == "gpt-weights" and d["torch_load_weights_only"]["loads"]
    assert d["gpt_sovits_reads"]["inference"].startswith("yes")


def test_upstream_reading_says_when_gpt_sovits_reads_another_version(tmp_path):
    """A full-size plain-PK Pro base: GPT-SoVITS's inference reads it as v2 by its size."""
    f = tmp_path / "s2Gv2Pro-new.pth"
    with open(f, "wb") as out:
        out.write(b"PK\x03\x04" + b"\0" * 8188)
        out.truncate(150 * 1024 * 1024)  # sparse: only the size and the first 8 KiB matter
    inference, training = upstream_reading(f, layout="sovits-g-pretrained", version="v2Pro", fits=("v2Pro",),
                                           text_embedding_rows=732)
    assert inference.startswith("no: reads it as v2 (by size), not v2Pro")
    assert "3-get-semantic) reads v2" in training
    ok, _ = upstream_reading(f, layout="sovits-g-pretrained", version="v2", fits=("v2",), text_embedding_rows=732)
    assert ok.startswith("yes: reads it as v2 (by size)")
    scaled = upstream_reading(f, layout="sovits-g-pretrained", version="v2", fits=("v2",), text_embedding_rows=732,
                              full_size=False)
    assert all("scaled-down file: the size thresholds say nothing" in line for line in scaled)


def test_scaler_line_says_no_once(tmp_path, _cli):
    g = synth.write_checkpoint(tmp_path / "G_1000.pth", Layout.SOVITS_G_TRAIN, "v2", scale=16)
    line = next(l for l in _cli("info", g).stdout.splitlines() if l.startswith("scaler"))
    assert line.split(None, 1)[1].startswith("no GradScaler state: SoVITS training never saves one")
    assert "no: no" not in line and line.count("no GradScaler state") == 1
