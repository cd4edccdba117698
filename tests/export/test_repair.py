"""Issue 14, points 2 and 5: `gsvinspect repair FILE -o OUT`.

Every layout and version the generator writes (real `torch.save` files with an HParams class
pickled as `utils.HParams`, `pathlib.PosixPath`, Lightning's fields, 2-byte headers) is repaired,
then loaded in a subprocess by plain `torch.load(weights_only=True)` with torch's default safe
globals only, and compared tensor by tensor (every tensor in the file, not just the weights) with
the original read by our loader.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from gsvinspect import synth
from gsvinspect.cli.main import main
from gsvinspect.errors import ExportError
from gsvinspect.export.repair import plan_repair, run_repair, weights_only_blockers, weights_only_safe
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.load.safe_unpickle import TensorRef
from gsvinspect.meta import Layout

# Layouts whose container is the same for every version (no placeholder, no header: only the key
# set changes) are repaired at their first and last version; every other layout at every version.
_SAME_CONTAINER = {Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN, Layout.STATE_DICT, Layout.UNKNOWN,
                   Layout.GPT_PRETRAINED, Layout.SOVITS_D_PRETRAINED}
CASES = [(lay, v) for lay in Layout if lay is not Layout.SAFETENSORS for i, v in enumerate(synth.layout_versions(lay))
         if lay not in _SAME_CONTAINER or i in (0, len(synth.layout_versions(lay)) - 1)]

_LOADER = r"""
import hashlib, json, sys, torch
def walk(o, where, out):
    if isinstance(o, torch.Tensor):
        out[where] = hashlib.sha256(o.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    elif isinstance(o, dict):
        for k, v in o.items():
            walk(v, f"{where}.{k}" if where else str(k), out)
    elif isinstance(o, (list, tuple)):
        for i, v in enumerate(o):
            walk(v, f"{where}[{i}]", out)
res = {}
for p in sys.argv[1:]:
    try:
        out = {}
        walk(torch.load(p, weights_only=True), "", out)
        res[p] = out
    except Exception as e:
        res[p] = "FAILED: " + type(e).__name__ + ": " + str(e)
print(json.dumps(res))
"""


def weights_only_load(paths) -> dict:
    """torch.load(weights_only=True) in a fresh interpreter: nothing allowlisted, no gsvinspect imported."""
    r = subprocess.run([sys.executable, "-c", _LOADER, *map(str, paths)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def our_tensors(path) -> dict:
    """Every tensor of the original, read by our restricted loader: where -> sha256 of its bytes."""
    import numpy as np

    out = {}
    with open_checkpoint(path) as ck:
        def walk(o, where):
            if isinstance(o, TensorRef):
                a = np.ascontiguousarray(ck.array_of(o))
                out[where] = hashlib.sha256(a.reshape(-1).view(np.uint8).tobytes()).hexdigest()
            elif isinstance(o, dict):
                for k, v in o.items():
                    walk(v, f"{where}.{k}" if where else str(k))
            elif isinstance(o, (list, tuple)):
                for i, v in enumerate(o):
                    walk(v, f"{where}[{i}]")
        walk(ck.root, "")
    return out


@pytest.fixture(scope="module")
def repaired(tmp_path_factory):
    """(original, repaired) per case, all written once; repair with --header plain."""
    root = tmp_path_factory.mktemp("repair")
    out = {}
    for lay, v in CASES:
        src = synth.write_checkpoint(root / f"{lay.value}-{v}.pth", lay, v, scale=16)
        dst = root / f"{lay.value}-{v}-fixed.pth"
        with open_checkpoint(src) as ck:
            run_repair(plan_repair(ck, header="plain"), dst)
        out[(lay, v)] = (src, dst)
    return out


def test_every_layout_loads_weights_only_after_repair_tensor_for_tensor(repaired):
    originals = weights_only_load([src for src, _ in repaired.values()])
    fixed = weights_only_load([dst for _, dst in repaired.values()])
    failing_before = 0
    for (lay, v), (src, dst) in repaired.items():
        got = fixed[str(dst)]
        assert isinstance(got, dict), f"{lay.value} {v}: {got}"
        assert got == our_tensors(src), f"{lay.value} {v}: tensors differ"
        with open_checkpoint(src) as ck:
            blockers = weights_only_blockers(ck)
        # our prediction of torch's verdict on the original is right, both ways
        assert isinstance(originals[str(src)], str) == bool(blockers), (lay, v, originals[str(src)], blockers)
        failing_before += bool(blockers)
    assert failing_before >= 8  # Lightning, HParams configs and headered exports really failed before


def test_the_three_errors_users_see_are_the_ones_repair_fixes(repaired):
    res = weights_only_load([repaired[(Layout.GPT_LIGHTNING, "v2")][0], repaired[(Layout.SOVITS_WEIGHTS, "v1")][0],
                             repaired[(Layout.SOVITS_WEIGHTS, "v2Pro")][0]])
    lightning, hparams, headered = res.values()
    assert "pathlib" in lightning and "PosixPath" in lightning
    assert "utils.HParams" in hparams
    assert "Unsupported operand 48" in headered or "operand" in headered


def test_safe_global_list_matches_torch():
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = set(_get_allowed_globals())
    assert all(weights_only_safe(g) for g in allowed), sorted(g for g in allowed if not weights_only_safe(g))
    for g in ("utils.HParams", "pathlib.PosixPath", "pathlib._local.PosixPath", "builtins.eval", "os.system",
              "numpy.core.multiarray._reconstruct", "torch.load", "torch.nn.modules.linear.Linear"):
        assert not weights_only_safe(g), g


def test_header_keep_keeps_it_and_says_what_still_fails(tmp_path):
    src = synth.write_checkpoint(tmp_path / "pro.pth", Layout.SOVITS_WEIGHTS, "v2ProPlus", scale=16)
    with open_checkpoint(src) as ck:
        plan = plan_repair(ck)  # default: keep
        rep = run_repair(plan, tmp_path / "out.pth")
    assert not plan.loads_after and any("operand 48" in b for b in plan.blockers)
    with open_checkpoint(rep.out_path) as ck2:
        assert ck2.header == b"06" and ck2.version == "v2ProPlus" and not ck2.opaque
        assert weights_only_blockers(ck2) == ["the 2-byte header '06' (torch reads the file as a legacy pickle: "
                                              "'Unsupported operand 48')"]
        assert ck2.extras["config"]["model"] == ck.extras["config"].as_plain()["model"]


def test_plain_header_moves_the_version_into_the_config(tmp_path):
    src = synth.write_checkpoint(tmp_path / "lora.pth", Layout.SOVITS_WEIGHTS_LORA, "v4", scale=16)
    with open_checkpoint(src) as ck:
        rank = ck.extras["lora_rank"]
        plan = plan_repair(ck, header="plain")
        run_repair(plan, tmp_path / "out.pth")
    assert plan.loads_after and plan.set_version
    assert any("03/04 header" in n for n in plan.notes)  # what GPT-SoVITS's own inference loses is said
    with open_checkpoint(tmp_path / "out.pth") as ck2:
        assert ck2.header == b"PK" and ck2.extras["config"]["model"]["version"] == "v4"
        assert ck2.extras["lora_rank"] == rank and type(ck2.extras["lora_rank"]) is int


def test_cli_dry_run_writes_nothing_and_shows_each_change(tmp_path, capsys):
    src = synth.write_checkpoint(tmp_path / "e.ckpt", Layout.GPT_LIGHTNING, "v2", scale=16)
    out = tmp_path / "fixed.ckpt"
    assert main(["repair", str(src), "-o", str(out), "--dry-run", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert not out.exists() and d["out"] == str(out) and d["loads_after"]
    assert [c["where"] for c in d["changes"]] == ["hyper_parameters.output_dir"]
    assert d["blockers"] == ["GLOBAL pathlib.PosixPath"]
    before = src.read_bytes()
    assert main(["repair", str(src), "-o", str(out)]) == 0
    assert src.read_bytes() == before and out.exists()
    assert main(["repair", str(src), "-o", str(out)]) == 3  # exists: --force needed
    assert "exists" in capsys.readouterr().err


def test_unconvertible_object_is_refused(tmp_path):
    src = synth.write_checkpoint(tmp_path / "g.pth", Layout.SOVITS_WEIGHTS, "v2", scale=16)
    # an object built with constructor arguments has no plain form that keeps its meaning
    with open_checkpoint(src) as ck:
        cfg = ck.extras["config"]
        cfg.args = ("x",)  # as if it had been built with an argument
        plan = plan_repair(ck)
    assert not plan.ok and "utils.HParams" in plan.problems[0]
    with pytest.raises(ExportError, match="repair refused"):
        run_repair(plan, tmp_path / "never.pth")
    assert not (tmp_path / "never.pth").exists()
