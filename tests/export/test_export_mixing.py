"""Interpolation (--alpha, per-module alphas), rules, missing-key policy, and LoRA merging.

Every value check recomputes the expected tensor from the input files independently and compares
bit for bit with what was written.
"""

from __future__ import annotations

import io

import pytest
import torch

from gsvinspect import synth
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import ExportError, UsageError
from gsvinspect.export.plan import plan_export
from gsvinspect.export.writer import run_export
from gsvinspect.export.lora import in_lora_export, lora_view, plain_key
from gsvinspect.load.manifest import expected_weights, load_manifest
from gsvinspect.meta import TensorInfo
from gsvinspect.align.rules import parse_rules
from helpers_export import SCALE, one_torch_thread, pair_factory, try_export  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return pair_factory(tmp_path_factory)


def _mix(p, f, a, dtype):
    return ((1.0 - a) * p.to(torch.float32) + a * f.to(torch.float32)).to(dtype)


def test_global_alpha_is_fp32_interpolation_then_cast(pairs, tmp_path):
    pre_p, ft_p = pairs("gpt", "v2")
    plan, rep = try_export(pre_p, ft_p, tmp_path / "a.ckpt", alpha=0.7)
    assert plan.alphas_used() == {"0.7": 295}
    assert rep.to_json()["alphas_used"] == {"0.7": 295}
    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft, open_checkpoint(tmp_path / "a.ckpt") as out:
        for key in ("model.ar_text_embedding.word_embeddings.weight", "model.h.layers.3.linear1.weight",
                    "model.ar_audio_position.alpha"):
            want = _mix(pre.tensor(key), ft.tensor(key), 0.7, torch.float16)
            got = out.tensor(key)
            assert got.dtype == torch.float16
            assert torch.equal(got.view(torch.int16), want.view(torch.int16)), key
            # and it really moved toward the pretrained weights
            assert not torch.equal(got, ft.tensor(key).half())


def test_alpha_zero_and_one(pairs, tmp_path):
    pre_p, ft_p = pairs("gpt", "v2")
    try_export(pre_p, ft_p, tmp_path / "zero.ckpt", alpha=0.0)
    try_export(pre_p, ft_p, tmp_path / "one.ckpt", alpha=1.0)
    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft, \
            open_checkpoint(tmp_path / "zero.ckpt") as z, open_checkpoint(tmp_path / "one.ckpt") as o:
        for key in list(pre.weights)[:20]:
            assert bytes(z.raw_bytes(key)) == bytes(pre.raw_bytes(key))
            assert torch.equal(o.tensor(key), ft.tensor(key).half())


def test_per_module_alphas_from_rules(pairs, tmp_path):
    pre_p, ft_p = pairs("sovits-G", "v2")
    rules = parse_rules('[alpha]\ndefault = 0.9\n"enc_p.text_embedding" = 0.3\n"re:^dec\\\\." = 0.5\n')
    plan, rep = try_export(pre_p, ft_p, tmp_path / "m.pth", rules=rules)
    used = plan.alphas_used()
    assert set(used) == {"0.3", "0.5", "0.9"} and used["0.3"] == 1
    assert plan.alpha_by_module()["enc_p.text_embedding"] == 0.3
    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft, open_checkpoint(tmp_path / "m.pth") as out:
        for key, a in (("enc_p.text_embedding.weight", 0.3), ("dec.conv_pre.weight", 0.5),
                       ("enc_q.pre.weight", 0.9)):
            want = _mix(pre.tensor(key), ft.tensor(key), a, torch.float16)
            assert torch.equal(out.tensor(key).view(torch.int16), want.view(torch.int16)), key
    assert "alphas_used" in rep.to_json()


def test_alpha_out_of_range_is_a_usage_error(pairs):
    pre_p, ft_p = pairs("gpt", "v2")
    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft:
        with pytest.raises(UsageError):
            plan_export(pre, ft, alpha=1.5)


def test_ddp_prefix_needs_rules_then_exports(pairs, tmp_path):
    pre_p, ft_p = pairs("sovits-G-ddp", "v2")
    plan, rep = try_export(pre_p, ft_p, tmp_path / "x.pth")
    assert rep is None and any("no fine-tuned tensor matched" in p for p in plan.problems)
    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft:
        with pytest.raises(ExportError):
            run_export(plan_export(pre, ft), tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
    rules = parse_rules('[[rule]]\nstrip_prefix = "module."\n')
    plan, rep = try_export(pre_p, ft_p, tmp_path / "y.pth", rules=rules)
    assert plan.counts()["from_ft"] == 776 and plan.counts()["filled_from_pre"] == 0
    plan2, rep2 = try_export(pre_p, ft_p, tmp_path / "z.pth", suggest=True)
    assert rep2 is not None and plan2.counts()["from_ft"] == 776
    assert [t.ft_key for t in plan.tensors] == [t.ft_key for t in plan2.tensors]
    assert all(t.ft_key.startswith("module.") for t in plan2.tensors)


def test_missing_keys_filled_from_pretrained(pairs, tmp_path):
    pre_p, ft_p = pairs("sovits-G-export", "v2")  # enc_q dropped by savee on the fine-tuned side
    plan, rep = try_export(pre_p, ft_p, tmp_path / "f.pth")
    filled = dict(plan.filled())
    n_enc_q = sum(1 for k in expected_weights("sovits-G-v2") if k.startswith("enc_q."))
    assert len(filled) == n_enc_q and all(k.startswith("enc_q.") for k in filled)
    assert all(r == "not in the fine-tuned file" for r in filled.values())
    with open_checkpoint(pre_p) as pre, open_checkpoint(tmp_path / "f.pth") as out:
        for k in list(filled)[:10]:
            assert bytes(out.raw_bytes(k)) == bytes(pre.raw_bytes(k))
    assert rep.to_json()["counts"]["filled_from_pre"] == n_enc_q
    # --missing error refuses instead
    plan_e, rep_e = try_export(pre_p, ft_p, tmp_path / "e.pth", missing="error")
    assert rep_e is None and len(plan_e.problems) == n_enc_q


def test_shape_mismatch_filled_or_refused(tmp_path):
    pre_p, ft_p = synth.write_pair(tmp_path / "s", "sovits-D", "v2", scale=SCALE)
    # rewrite the fine-tuned D with one tensor of another shape
    sd = torch.load(ft_p, weights_only=True)["model"]
    key = next(iter(sd))
    sd[key] = torch.zeros(3, 3)
    bad = synth.write_checkpoint(tmp_path / "bad" / "D_5.pth", "sovits-d-train", "v2", weights=sd, scale=SCALE)
    plan, rep = try_export(pre_p, bad, tmp_path / "o.pth")
    assert rep is not None
    assert dict(plan.filled())[key].startswith("shape differs")
    assert any(k == key for k, _ in plan.dropped)
    plan_e, rep_e = try_export(pre_p, bad, tmp_path / "o2.pth", missing="error")
    assert rep_e is None and any("shape differs" in p for p in plan_e.problems)


# ---------------------------------------------------------------------------------------------
# LoRA

@pytest.mark.parametrize("version", ["v3", "v4"])
def test_lora_merged_into_plain_base(tmp_path, version):
    pre_p, ft_p = synth.write_pair(tmp_path / "l", "sovits-G-lora", version, scale=SCALE)
    # give the adapters non-zero B so the merge is visible (upstream initialises B to zeros)
    sd = torch.load(ft_p, weights_only=True)["model"]
    gen = torch.Generator().manual_seed(7)
    for k in sd:
        if ".lora_B." in k:
            sd[k] = torch.randn(sd[k].shape, generator=gen) * 0.01
    ft2 = synth.write_checkpoint(tmp_path / "l2" / "G_9.pth", "sovits-g-lora-train", version, weights=sd,
                                 scale=SCALE)
    plan, rep = try_export(pre_p, ft2, tmp_path / "merged.pth")
    assert plan.lora_merged == 88 and plan.lora_rank == 32
    out = torch.load(tmp_path / "merged.pth", weights_only=True)["weight"]
    assert set(out) == set(expected_weights(f"sovits-G-{version}"))
    assert not any("base_model" in k or "lora_" in k or "base_layer" in k for k in out)
    mod = "cfm.base_model.model.estimator.transformer_blocks.5.attn.to_q"
    plain = "cfm.estimator.transformer_blocks.5.attn.to_q"
    want = (sd[mod + ".base_layer.weight"] + sd[mod + ".lora_B.default.weight"] @ sd[mod + ".lora_A.default.weight"]).half()
    assert torch.allclose(out[plain + ".weight"].float(), want.float(), atol=1e-3, rtol=0)
    exact = torch.addmm(sd[mod + ".base_layer.weight"], sd[mod + ".lora_B.default.weight"],
                        sd[mod + ".lora_A.default.weight"]).half()
    assert torch.equal(out[plain + ".weight"], exact)
    assert torch.equal(out[plain + ".bias"], sd[mod + ".base_layer.bias"].half())
    ref_enc = [k for k in sd if k.startswith("ref_enc.")]  # not adapted: copied under the same name
    assert ref_enc and all(torch.equal(out[k], sd[k].half()) for k in ref_enc)
    assert rep.verdict.ok


def test_lora_export_merged_onto_pretrained_base(tmp_path):
    """A headered 04 LoRA export holds adapters only: the base weights come from PRE."""
    pre_p, ft_p = synth.write_pair(tmp_path / "l", "sovits-G-lora", "v4", scale=SCALE)
    lora = synth.state_dict("sovits-G-lora", "v4", scale=SCALE, seed=3)
    exp = synth.write_checkpoint(tmp_path / "SoVITS_weights_v4" / "x_e2_s10_l32.pth", "sovits-weights-lora", "v4",
                                 weights=lora, scale=SCALE)
    assert exp.read_bytes()[:2] == b"04"
    plan, rep = try_export(pre_p, exp, tmp_path / "base.pth")
    assert rep is not None and plan.lora_merged == 88
    assert {m.base_side for m in (t.lora for t in plan.tensors if t.lora is not None)} == {"pre"}
    filled = dict(plan.filled())
    assert filled and all(not k.startswith(("ref_enc.", "bridge.", "wns1.", "linear_mel.")) for k in filled)
    pre = torch.load(pre_p, weights_only=True)["weight"]
    out = torch.load(tmp_path / "base.pth", weights_only=True)["weight"]
    k = "cfm.estimator.transformer_blocks.0.attn.to_v"
    a = lora["cfm.base_model.model.estimator.transformer_blocks.0.attn.to_v.lora_A.default.weight"].half()
    b = lora["cfm.base_model.model.estimator.transformer_blocks.0.attn.to_v.lora_B.default.weight"].half()
    want = torch.addmm(pre[k + ".weight"].float(), b.float(), a.float()).half()
    assert torch.equal(out[k + ".weight"], want)
    assert set(out) == set(expected_weights("sovits-G-v4"))


def test_lora_view_plain_names_and_rank():
    man = load_manifest("sovits_G_v3_lora_r32")
    ft = {e.key: e.info() for e in man.entries}
    view = lora_view(ft)
    assert view.rank == 32 and view.scale == 1.0 and view.adapters == 88
    assert set(view.infos) == set(expected_weights("sovits-G-v3"))
    m = view.merges["cfm.estimator.transformer_blocks.0.attn.to_out.0.weight"]
    assert m.base_side == "ft" and m.base_key.endswith("to_out.0.base_layer.weight")
    assert plain_key("cfm.base_model.model.estimator.proj_out.bias") == "cfm.estimator.proj_out.bias"
    with pytest.raises(ValueError):
        lora_view(ft, declared_rank=16)
    with pytest.raises(ValueError):
        lora_view({"a.weight": TensorInfo("a.weight", (2, 2), "float32")})


def test_in_lora_export_matches_manifest_flags():
    for stem in ("sovits_G_v3_lora_r32", "sovits_G_v4_lora_r32"):
        for e in load_manifest(stem).entries:
            assert in_lora_export(e.key) == bool(e.in_lora_export), e.key


def test_lora_sovits_weights_with_alpha_scales_b(tmp_path):
    pre_p, ft_p = synth.write_pair(tmp_path / "l", "sovits-G-lora", "v3", scale=SCALE)
    sd = torch.load(ft_p, weights_only=True)["model"]
    for k in sd:
        if ".lora_B." in k:
            sd[k] = torch.full(sd[k].shape, 0.25)
    ft2 = synth.write_checkpoint(tmp_path / "l2" / "G_9.pth", "sovits-g-lora-train", "v3", weights=sd, scale=SCALE)
    plan, rep = try_export(pre_p, ft2, tmp_path / "lora.pth", layout="sovits-weights", alpha=0.5)
    raw = (tmp_path / "lora.pth").read_bytes()
    out = torch.load(io.BytesIO(b"PK" + raw[2:]), weights_only=False)["weight"]
    kb = next(k for k in out if ".lora_B." in k)
    assert torch.equal(out[kb], torch.full(sd[kb].shape, 0.125, dtype=torch.float16))
    ka = next(k for k in out if ".lora_A." in k)
    assert torch.equal(out[ka], sd[ka].half())
