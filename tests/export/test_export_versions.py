"""Exports per version and layout are loadable by GPT-SoVITS the way GPT-SoVITS loads them.

"Loadable" is checked against the manifests built from the real upstream classes: the weight keys
equal the expected set (a strict load_state_dict succeeds; for SoVITS G the strict=False load
reports nothing missing), shapes equal the generator's plan for the scale used, the file opens with
plain ``torch.load`` (and with our loader), and the emulation of upstream's version detection
classifies it as the intended version. Files are scaled down (scale 16) except in
test_export_fullsize.py.
"""

from __future__ import annotations

import io
from collections import OrderedDict

import pytest
import torch

from gsvinspect import synth
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.export.plan import plan_export
from gsvinspect.load.manifest import expected_weights
from gsvinspect.meta import Layout
from gsvinspect.load.safe_unpickle import Opaque
from gsvinspect.export.upstream_version import fast_version
from helpers_export import SCALE, export_ok, one_torch_thread, pair_factory, sha256_of  # noqa: F401  (autouse fixture)

CASES = (
    [("gpt", v) for v in ("v1", "v2")]
    + [("gpt-export", v) for v in ("v3", "v4", "v2Pro", "v2ProPlus")]
    + [("sovits-G", v) for v in ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4")]
    + [("sovits-D", v) for v in ("v1", "v2", "v2Pro", "v2ProPlus")]
    + [("sovits-G-lora", v) for v in ("v3", "v4")]
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return pair_factory(tmp_path_factory)


def _model(kind: str) -> str:
    return {"gpt": "gpt", "gpt-export": "gpt", "sovits-G": "sovits-G", "sovits-D": "sovits-D",
            "sovits-G-lora": "sovits-G"}[kind]


def _manifest(kind: str, version: str) -> str:
    m = _model(kind)
    return {"gpt": f"gpt-{version}", "sovits-G": f"sovits-G-{version}", "sovits-D": f"sovits-D-{version}"}[m]


def _has_opaque(o) -> bool:
    if isinstance(o, Opaque):
        return True
    if isinstance(o, dict):
        return any(_has_opaque(v) for v in o.values())
    if isinstance(o, (list, tuple)):
        return any(_has_opaque(v) for v in o)
    return False


@pytest.mark.parametrize("kind, version", CASES)
def test_base_export_loads_like_upstream(pairs, tmp_path, kind, version):
    pre_p, ft_p = pairs(kind, version)
    before = (sha256_of(pre_p), sha256_of(ft_p))
    out = tmp_path / "new_base.pth"
    plan, report = export_ok(pre_p, ft_p, out)

    # plain torch.load, both ways: plain-dict config means no foreign globals at all
    loaded = torch.load(out, map_location="cpu", weights_only=True)
    assert torch.load(out, map_location="cpu", weights_only=False).keys() == loaded.keys()
    w = loaded["weight"]
    expected = expected_weights(_manifest(kind, version))
    planned = synth.planned_shapes(_model(kind), version, scale=SCALE)
    # strict load_state_dict: exactly the expected keys, each with the shape the net has
    assert set(w) == set(expected)
    assert {k: tuple(v.shape) for k, v in w.items()} == {k: tuple(planned[k]) for k in expected}
    if kind.startswith("sovits-G") and version not in ("v3", "v4"):
        assert any(k.startswith("enc_q.") for k in w)  # strict=False would report nothing missing

    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft, open_checkpoint(out) as ck:
        assert list(ck.weights) == list(pre.weights)  # the pretrained file's key order
        assert {k: i.dtype for k, i in ck.weights.items()} == {k: i.dtype for k, i in pre.weights.items()}
        assert ck.header == b"PK"
        assert ck.layout == pre.layout
        assert ck.version in (pre.version, ft.version)  # GPT v2..v2ProPlus share one net
        assert ck.version == plan.version or _model(kind) == "sovits-D"
        assert not _has_opaque(ck.root.get("config"))
        assert isinstance(ck.root["config"], dict)

    top = list(loaded)
    if _model(kind) == "gpt":
        assert top[:2] == ["weight", "config"]
        assert ("MixedPrecision" in top) == (kind == "gpt")  # Lightning fine-tunes carry AMP scaler state
        assert loaded["config"]["model"]["phoneme_vocab_size"] == (512 if version == "v1" else 732)
    elif kind == "sovits-D":
        assert top == ["weight", "config"]
    else:
        assert top == ["weight", "config", "info"]
        assert ft_p.name in loaded["info"]

    assert report.verdict.ok and report.verdict.intended == plan.version
    assert report.manifest_check["missing"] == [] and report.manifest_check["unexpected"] == []
    assert report.sha256 == sha256_of(out)
    assert (sha256_of(pre_p), sha256_of(ft_p)) == before


@pytest.mark.parametrize("version", ["v1", "v2", "v2Pro", "v2ProPlus", "v3"])
def test_sovits_weights_export(pairs, tmp_path, version):
    pre_p, ft_p = pairs("sovits-G", version)
    out = tmp_path / f"exp_{version}.pth"
    plan, report = export_ok(pre_p, ft_p, out, layout="sovits-weights")
    want_header = {"v2Pro": b"05", "v2ProPlus": b"06"}.get(version, b"PK")
    raw = out.read_bytes()
    assert raw[:2] == want_header
    # upstream's load_sovits_new: put PK back and torch.load from memory
    loaded = torch.load(io.BytesIO(b"PK" + raw[2:]), map_location="cpu", weights_only=False)
    assert type(loaded) is OrderedDict and list(loaded) == ["weight", "config", "info"]
    assert type(loaded["weight"]) is dict  # savee's weight is a plain dict
    assert set(loaded["weight"]) == set(expected_weights(f"sovits-G-{version}-export"))
    assert not any("enc_q" in k for k in loaded["weight"])
    assert {v.dtype for v in loaded["weight"].values()} == {torch.float16}
    if want_header != b"PK":
        assert fast_version(out) == (("v2", version, False), "header")
    assert report.verdict.ok, report.verdict.notes
    assert plan.counts()["dropped"] == sum(1 for k in expected_weights(f"sovits-G-{version}") if "enc_q" in k)


def test_full_v4_has_no_sovits_weights_form(pairs):
    pre_p, ft_p = pairs("sovits-G", "v4")
    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft:
        plan = plan_export(pre, ft, layout="sovits-weights")
    assert not plan.ok and any("v4" in p for p in plan.problems)


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_lora_sovits_weights_export_keeps_lora_form(pairs, tmp_path, version):
    pre_p, ft_p = pairs("sovits-G-lora", version)
    out = tmp_path / "lora.pth"
    plan, report = export_ok(pre_p, ft_p, out, layout="sovits-weights")
    raw = out.read_bytes()
    assert raw[:2] == (b"03" if version == "v3" else b"04")
    assert fast_version(out) == (("v2", version, True), "header")
    loaded = torch.load(io.BytesIO(b"PK" + raw[2:]), map_location="cpu", weights_only=False)
    assert loaded["lora_rank"] == 32 and type(loaded["lora_rank"]) is int
    assert set(loaded["weight"]) == set(expected_weights(f"sovits-G-{version}-lora-export"))
    assert report.verdict.ok
    with open_checkpoint(out) as ck:
        assert ck.layout == Layout.SOVITS_WEIGHTS_LORA and ck.version == version


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_gpt_weights_export(pairs, tmp_path, version):
    pre_p, ft_p = pairs("gpt" if version in ("v1", "v2") else "gpt-export", version)
    out = tmp_path / "gpt.ckpt"
    plan, report = export_ok(pre_p, ft_p, out, layout="gpt-weights")
    loaded = torch.load(out, map_location="cpu", weights_only=True)
    assert type(loaded) is OrderedDict and list(loaded)[:3] == ["weight", "config", "info"]
    assert {v.dtype for v in loaded["weight"].values()} == {torch.float16}
    assert set(loaded["weight"]) == set(expected_weights(f"gpt-{version}"))
    assert report.verdict.ok


def test_dtype_option_float_and_half(pairs, tmp_path):
    pre_p, ft_p = pairs("sovits-D", "v2")
    _, rep = export_ok(pre_p, ft_p, tmp_path / "f.pth", dtype="float")
    assert {v.dtype for v in torch.load(tmp_path / "f.pth", weights_only=True)["weight"].values()} == {torch.float32}
    with open_checkpoint(ft_p) as ft, open_checkpoint(tmp_path / "f.pth") as out:
        k = next(iter(ft.weights))
        assert torch.equal(out.tensor(k), ft.tensor(k))  # fp32 -> fp32: bit for bit
    assert rep.plan.dtype_changes() == {}
    _, rep = export_ok(pre_p, ft_p, tmp_path / "h.pth", dtype="half")
    half = torch.load(tmp_path / "h.pth", weights_only=True)["weight"]
    assert {v.dtype for v in half.values()} == {torch.float16}
    with open_checkpoint(ft_p) as ft:
        assert all(torch.equal(half[k], ft.tensor(k).half()) for k in ft.weights)
        assert rep.plan.dtype_changes() == {"float32->float16": len(ft.weights)}


def test_config_comes_from_the_fine_tuned_file(pairs, tmp_path):
    """README: `config` comes from FT as a plain dict; from PRE only when FT has none (G_*.pth)."""
    pre_p, ft_p = pairs("gpt", "v2")
    obj = torch.load(ft_p, map_location="cpu", weights_only=False)
    obj["hyper_parameters"]["config"]["data"]["max_sec"] = 77  # PRE's config says otherwise
    ft2 = tmp_path / "epoch=1-step=2.ckpt"
    torch.save(obj, ft2)
    plan, _ = export_ok(pre_p, ft2, tmp_path / "gpt.ckpt")
    assert plan.config_source.startswith("fine-tuned hyper_parameters.config")
    cfg = torch.load(tmp_path / "gpt.ckpt", weights_only=True)["config"]
    assert cfg["data"]["max_sec"] == 77
    assert torch.load(pre_p, weights_only=True)["config"]["data"]["max_sec"] != 77

    pre_p, ft_p = pairs("sovits-G", "v2")
    plan, _ = export_ok(pre_p, ft_p, tmp_path / "g.pth")
    assert plan.config_source.startswith("pretrained config") and "the fine-tuned file has none" in plan.config_source
    written, pre_cfg = torch.load(tmp_path / "g.pth", weights_only=True)["config"], torch.load(pre_p, weights_only=True)["config"]
    assert written["model"].pop("version") == written.pop("version") == "v2"  # issue 14: the version is written
    pre_cfg["model"].pop("version", None), pre_cfg.pop("version", None)
    assert written == pre_cfg
