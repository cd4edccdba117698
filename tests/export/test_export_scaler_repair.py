"""GradScaler state survives the export bit for bit (or is reported absent), and the repair layout
turns a Lightning checkpoint's pathlib objects into strings so weights_only loading works."""

from __future__ import annotations

import pickle
import struct

import pytest
import torch

from gsvinspect import synth
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.meta import Layout
from helpers_export import SCALE, export_ok, one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def gpt_pre(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt")
    return synth.write_checkpoint(root / "s1v3.ckpt", Layout.GPT_PRETRAINED, "v2", scale=SCALE)


def _bits(v):
    """Exact identity of a plain value: type plus IEEE bytes for floats."""
    if isinstance(v, float):
        return ("float", struct.pack("<d", v))
    if isinstance(v, dict):
        return ("dict", tuple((k, _bits(x)) for k, x in v.items()))
    return (type(v).__name__, v)


@pytest.mark.parametrize("key", ["MixedPrecision", "MixedPrecisionPlugin", "native_amp_scaling_state"])
def test_lightning_scaler_state_kept_bit_for_bit(gpt_pre, tmp_path, key):
    ft_p = synth.write_checkpoint(tmp_path / "logs_s1_v2" / "ckpt" / "epoch=3-step=40.ckpt", Layout.GPT_LIGHTNING,
                                  "v2", scale=SCALE, scaler_key=key, optimizer="light")
    original = torch.load(ft_p, weights_only=False)[key]
    plan, rep = export_ok(gpt_pre, ft_p, tmp_path / "base.ckpt")
    assert plan.scaler_where == (key,) and plan.scaler_from == "fine-tuned"
    assert key in rep.to_json()["scaler_note"] and rep.to_json()["scaler"] == {"where": [key], "from": "fine-tuned"}
    out = torch.load(tmp_path / "base.ckpt", weights_only=True)
    assert list(out) == ["weight", "config", key]
    assert _bits(out[key]) == _bits(original)
    with open_checkpoint(tmp_path / "base.ckpt") as ck:
        assert ck.scaler is not None and ck.scaler.path == (key,)


@pytest.mark.parametrize("key", ["scaler", "scaler_state_dict", "grad_scaler"])
def test_other_scaler_entries_kept(tmp_path, key):
    pre_p, ft_p = synth.write_pair(tmp_path / "p", "sovits-D", "v2", scale=SCALE, optimizer="light")
    obj = torch.load(ft_p, weights_only=True)
    odd = {"scale": 0.1 + 0.2, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
           "_growth_tracker": 7}
    obj[key] = odd
    ft2 = tmp_path / "D_77.pth"
    torch.save(obj, ft2)
    plan, rep = export_ok(pre_p, ft2, tmp_path / "d.pth")
    assert plan.scaler_where == (key,)
    out = torch.load(tmp_path / "d.pth", weights_only=True)
    assert _bits(out[key]) == _bits(odd)
    assert out[key]["scale"] == 0.30000000000000004 and type(out[key]["_growth_tracker"]) is int


def test_sovits_export_reports_no_scaler(tmp_path):
    pre_p, ft_p = synth.write_pair(tmp_path / "p", "sovits-D", "v1", scale=SCALE, optimizer="light")
    plan, rep = export_ok(pre_p, ft_p, tmp_path / "d.pth")
    assert plan.scaler_where is None
    text = dict(rep.describe())["scaler state"]
    assert text.startswith("absent") and "nothing is invented" in text and "SoVITS training never saves one" in text
    out = torch.load(tmp_path / "d.pth", weights_only=True)
    assert set(out) == {"weight", "config"}
    assert rep.to_json()["scaler"] is None


def test_repair_lightning_paths_become_strings(gpt_pre, tmp_path):
    ft_p = synth.write_checkpoint(tmp_path / "logs_s1_v2" / "ckpt" / "epoch=14-step=1500.ckpt",
                                  Layout.GPT_LIGHTNING, "v2", scale=SCALE, optimizer="full")
    with pytest.raises(pickle.UnpicklingError):  # upstream's resume failure (FORMATS §3.2)
        torch.load(ft_p, weights_only=True)
    plan, rep = export_ok(gpt_pre, ft_p, tmp_path / "repaired.ckpt", layout="repair")
    assert plan.layout == Layout.GPT_LIGHTNING and plan.dtype_changes() == {}
    fixed = torch.load(tmp_path / "repaired.ckpt", weights_only=True)
    orig = torch.load(ft_p, weights_only=False)
    assert list(fixed) == list(orig)
    assert fixed["hyper_parameters"]["output_dir"] == str(orig["hyper_parameters"]["output_dir"])
    assert isinstance(fixed["hyper_parameters"]["output_dir"], str)
    assert fixed["hyper_parameters"]["config"] == orig["hyper_parameters"]["config"]
    assert _bits(fixed["MixedPrecision"]) == _bits(orig["MixedPrecision"])
    for k, v in orig["state_dict"].items():
        assert torch.equal(fixed["state_dict"][k], v) and fixed["state_dict"][k].dtype == v.dtype
    st_o, st_f = orig["optimizer_states"][0]["state"], fixed["optimizer_states"][0]["state"]
    assert st_o.keys() == st_f.keys() and st_o
    for i in st_o:
        for name, val in st_o[i].items():
            if isinstance(val, torch.Tensor):
                assert torch.equal(st_f[i][name], val)
    assert fixed["loops"] == orig["loops"]
    with open_checkpoint(tmp_path / "repaired.ckpt") as ck:
        assert ck.layout == Layout.GPT_LIGHTNING
        assert not [g for g in ck.globals if g.startswith("pathlib")]
