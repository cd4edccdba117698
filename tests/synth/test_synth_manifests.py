"""Manifest loading, named expected-key sets, and the generator's shapes against the manifests."""

from __future__ import annotations

import io
import json
import zipfile
from collections import defaultdict
from importlib import resources

import pytest
import torch

from gsvinspect.load import manifest
from gsvinspect import synth
from gsvinspect.errors import UsageError
from gsvinspect.meta import Layout

MODEL_VERSIONS = [
    ("gpt", "v1"), ("gpt", "v2"), ("gpt", "v3"), ("gpt", "v4"), ("gpt", "v2Pro"), ("gpt", "v2ProPlus"),
    ("sovits-G", "v1"), ("sovits-G", "v2"), ("sovits-G", "v2Pro"), ("sovits-G", "v2ProPlus"),
    ("sovits-G", "v3"), ("sovits-G", "v4"),
    ("sovits-G-lora", "v3"), ("sovits-G-lora", "v4"),
    ("sovits-D", "v1"), ("sovits-D", "v2"), ("sovits-D", "v2Pro"), ("sovits-D", "v2ProPlus"),
    ("vocoder", "v4"),
]


def _raw_manifest(stem: str) -> dict:
    text = resources.files("gsvinspect.data.manifests").joinpath(f"{stem}.json").read_text()
    return json.loads(text)


# ------------------------------------------------------------------------------------------
# manifest.py

@pytest.mark.parametrize("stem", manifest.MANIFEST_STEMS)
def test_every_manifest_loads_with_its_declared_key_count(stem):
    m = manifest.load_manifest(stem)
    raw = _raw_manifest(stem)
    assert m.name == stem
    assert len(m.entries) == m.header["n_keys"] == len(raw["keys"])
    assert [e.key for e in m.entries] == [k["key"] for k in raw["keys"]]
    assert sum(e.info().numel for e in m.entries) == m.header["state_dict_numel"]


def test_thirteen_manifest_files_are_shipped():
    shipped = {p.name[:-5] for p in resources.files("gsvinspect.data.manifests").iterdir()
               if p.name.endswith(".json")}
    assert shipped == set(manifest.MANIFEST_STEMS)
    assert len(shipped) == 13


def test_manifest_entry_flags_are_read():
    g = manifest.load_manifest("sovits_G_v2")
    assert g.entry("enc_q.pre.weight").in_export is False
    assert g.entry("quantizer.vq.layers.0._codebook.inited").buffer is True
    lora = manifest.load_manifest("sovits_G_v4_lora_r32")
    a = lora.entry("cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.lora_A.default.weight")
    assert a.in_lora_export is True and a.shape == (32, 1024)
    base = lora.entry("cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.base_layer.weight")
    assert base.requires_grad is False and base.in_lora_export is False


REQUIRED_NAMES = [
    "gpt-v1", "gpt-v2", "gpt-v3", "gpt-v4", "gpt-v2Pro", "gpt-v2ProPlus",
    "sovits-G-v1", "sovits-G-v2", "sovits-G-v2Pro", "sovits-G-v2ProPlus", "sovits-G-v3", "sovits-G-v4",
    "sovits-G-v3-lora", "sovits-G-v4-lora", "sovits-D-v1", "sovits-D-v2", "sovits-D-v2Pro",
    "sovits-D-v2ProPlus", "vocoder-v4", "sovits-G-v2-export", "sovits-G-v4-lora-export",
]


def test_manifest_names_cover_every_name_users_type():
    names = manifest.manifest_names()
    assert set(REQUIRED_NAMES) <= set(names)
    assert len(names) == len(set(names))
    for name in names:
        assert manifest.expected_weights(name), name
        assert manifest.describe_name(name)


def test_unknown_name_is_a_usage_error_listing_valid_names():
    with pytest.raises(UsageError) as err:
        manifest.expected_weights("sovits-G-v5")
    assert "sovits-G-v2" in str(err.value) and "gpt-v1" in str(err.value)
    assert err.value.exit_code == 2


def test_names_are_case_insensitive():
    assert manifest.expected_weights("SOVITS-g-V2PRO") == manifest.expected_weights("sovits-G-v2Pro")


@pytest.mark.parametrize("alias", ["gpt-v3", "gpt-v4", "gpt-v2Pro", "gpt-v2ProPlus"])
def test_gpt_aliases_are_the_v2_architecture(alias):
    assert manifest.expected_weights(alias) == manifest.expected_weights("gpt-v2")
    assert manifest.expected_weights(alias) != manifest.expected_weights("gpt-v1")


def test_discriminator_aliases():
    assert manifest.expected_weights("sovits-D-v1") == manifest.expected_weights("sovits-D-v2")
    assert manifest.expected_weights("sovits-D-v2Pro") == manifest.expected_weights("sovits-D-v2ProPlus")
    assert len(manifest.expected_weights("sovits-D-v1")) == 111
    assert len(manifest.expected_weights("sovits-D-v2Pro")) == 147


def test_export_subsets_follow_the_flags():
    full = manifest.expected_weights("sovits-G-v2")
    export = manifest.expected_weights("sovits-G-v2-export")
    assert set(export) == {k for k in full if "enc_q" not in k}
    assert len(full) - len(export) == 103
    lora_export = manifest.expected_weights("sovits-G-v4-lora-export")
    assert len(lora_export) == 258
    assert sum(1 for k in lora_export if ".lora_" in k) == 176
    assert not any(k.startswith("enc_p.") for k in lora_export)
    assert "quantizer.vq.layers.0._codebook.embed" in lora_export


def test_lora_rank_changes_only_adapter_shapes():
    r32 = manifest.expected_weights("sovits-G-v3-lora")
    r16 = manifest.expected_weights("sovits-G-v3-lora", rank=16)
    assert list(r16) == list(r32)
    changed = {k for k in r32 if r32[k].shape != r16[k].shape}
    assert changed == {k for k in r32 if ".lora_A." in k or ".lora_B." in k}
    a = next(k for k in r16 if ".lora_A." in k)
    b = next(k for k in r16 if ".lora_B." in k)
    assert r16[a].shape == (16, 1024) and r16[b].shape == (1024, 16)


def test_dtype_override():
    w = manifest.expected_weights("gpt-v2", dtype="float16")
    assert {t.dtype for t in w.values()} == {"float16"}
    assert {t.dtype for t in manifest.expected_weights("gpt-v2").values()} == {"float32"}


def test_manifest_module_does_not_need_torch():
    import subprocess
    import sys

    code = ("import sys; from gsvinspect.load import manifest; manifest.expected_weights('sovits-G-v4-lora', rank=8); "
            "from gsvinspect import synth; "
            "synth.planned_shapes('sovits-G', 'v2', scale=4); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------
# generator shapes == manifests

@pytest.mark.parametrize("model,version", MODEL_VERSIONS)
def test_full_size_keys_and_shapes_equal_the_manifest(model, version):
    stem = manifest.manifest_stem(model, version)
    raw = _raw_manifest(stem)["keys"]
    sd = synth.state_dict(model, version, materialize=False)
    assert list(sd) == [k["key"] for k in raw]
    assert [tuple(t.shape) for t in sd.values()] == [tuple(k["shape"]) for k in raw]
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for t in sd.values())
    assert synth.planned_shapes(model, version) == {k["key"]: tuple(k["shape"]) for k in raw}


@pytest.mark.parametrize("model,version", [("vocoder", "v4"), ("sovits-D", "v2")])
def test_full_size_materialized_matches_manifest(model, version):
    sd = synth.state_dict(model, version, dtype="float16")
    expected = manifest.expected_weights(f"{model}-{version}", dtype="float16")
    assert list(sd) == list(expected)
    for key, t in sd.items():
        assert tuple(t.shape) == expected[key].shape and t.dtype == torch.float16, key


@pytest.mark.parametrize("scale", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("model,version", MODEL_VERSIONS)
def test_scaling_keeps_keys_and_equal_dims_equal(model, version, scale):
    full = synth.planned_shapes(model, version)
    small = synth.planned_shapes(model, version, scale=scale)
    assert list(full) == list(small)
    images: dict[int, set[int]] = defaultdict(set)
    for key in full:
        assert len(full[key]) == len(small[key]), key
        for axis, (d, s) in enumerate(zip(full[key], small[key])):
            assert s <= d
            if d < synth.SCALE_FROM_DIM:
                assert s == d, (key, axis)  # kernels, heads, ranks untouched
            exempt = key in synth.PHONEME_TABLES and axis == 0
            if not exempt and ".lora_" not in key:
                images[d].add(s)
    assert all(len(v) == 1 for v in images.values()), {d: v for d, v in images.items() if len(v) > 1}


@pytest.mark.parametrize("model,key,rows", [
    ("gpt", "model.ar_text_embedding.word_embeddings.weight", {"v1": 512, "v2": 732}),
    ("sovits-G", "enc_p.text_embedding.weight", {"v1": 322, "v2": 732}),
])
def test_scaling_keeps_phoneme_rows(model, key, rows):
    for version, n in rows.items():
        shape = synth.planned_shapes(model, version, scale=8)[key]
        assert shape[0] == n
        assert shape[1] == synth.planned_shapes(model, version)[key][1] // 8


@pytest.mark.parametrize("a,b,model", [("v2Pro", "v2ProPlus", "sovits-G"), ("v1", "v2", "sovits-G"),
                                       ("v2", "v2Pro", "sovits-G"), ("v1", "v2", "gpt"),
                                       ("v2", "v2Pro", "sovits-D")])
def test_scaled_versions_differ_where_full_size_ones_do(a, b, model):
    fa, fb = synth.planned_shapes(model, a), synth.planned_shapes(model, b)
    sa, sb = synth.planned_shapes(model, a, scale=8), synth.planned_shapes(model, b, scale=8)
    full_diff = {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}
    small_diff = {k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k)}
    assert full_diff and full_diff == small_diff


def test_v2proplus_kernel_survives_scaling():
    assert synth.planned_shapes("sovits-G", "v2Pro", scale=8)["dec.ups.0.weight_v"][2] == 16
    assert synth.planned_shapes("sovits-G", "v2ProPlus", scale=8)["dec.ups.0.weight_v"][2] == 20


def test_lora_rank_is_never_scaled():
    shapes = synth.planned_shapes("sovits-G-lora", "v4", scale=8, rank=128)
    a = next(s for k, s in shapes.items() if ".lora_A." in k)
    b = next(s for k, s in shapes.items() if ".lora_B." in k)
    assert a == (128, 128) and b == (128, 128)
    base = next(s for k, s in shapes.items() if k.endswith("to_q.base_layer.weight"))
    assert base == (128, 128)  # 1024 / 8, consistent with the adapters' other dims


def test_bad_scale_and_model():
    with pytest.raises(UsageError):
        synth.state_dict("sovits-G", "v2", scale=0)
    with pytest.raises(UsageError):
        synth.state_dict("sovits-D", "v3")
    with pytest.raises(UsageError):
        synth.state_dict("bert", "v2")


# ------------------------------------------------------------------------------------------
# values

def test_values_are_deterministic_by_seed_and_differ_across_seeds():
    a = synth.state_dict("sovits-G", "v2", scale=8, seed=3)
    b = synth.state_dict("sovits-G", "v2", scale=8, seed=3)
    c = synth.state_dict("sovits-G", "v2", scale=8, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    moved = [k for k in a if not torch.equal(a[k], c[k])]
    assert len(moved) > 0.9 * len(a)


def test_values_look_like_a_trained_net():
    sd = synth.state_dict("sovits-G", "v2", scale=8)
    assert torch.all(sd["quantizer.vq.layers.0._codebook.inited"] == 1)
    assert all(float(v.min()) > 0 for k, v in sd.items() if k.endswith("weight_g"))
    w = sd["dec.conv_pre.weight"]
    assert 0.01 < float(w.std()) < 0.05 and torch.isfinite(w).all()
    v3 = synth.state_dict("sovits-G", "v3", scale=8)
    inv = v3["cfm.estimator.rotary_embed.inv_freq"]
    assert float(inv[0]) == 1.0 and torch.all(inv[1:] < inv[:-1])


def test_lora_base_layers_equal_the_plain_generator():
    plain = synth.state_dict("sovits-G", "v4", scale=8, seed=5)
    lora = synth.state_dict("sovits-G-lora", "v4", scale=8, seed=5)
    key = "cfm.estimator.transformer_blocks.3.attn.to_v.weight"
    wrapped = "cfm.base_model.model.estimator.transformer_blocks.3.attn.to_v.base_layer.weight"
    assert torch.equal(plain[key], lora[wrapped])
    assert torch.equal(plain["enc_p.text_embedding.weight"], lora["enc_p.text_embedding.weight"])


def test_dtype_argument():
    sd = synth.state_dict("gpt", "v1", scale=8, dtype="bfloat16")
    assert {t.dtype for t in sd.values()} == {torch.bfloat16}
    with pytest.raises(UsageError):
        synth.state_dict("gpt", "v1", scale=8, dtype="float17")


def test_full_size_pretrained_files_read_back_with_plain_torch_load(tmp_path):
    """GPT v2 and SoVITS G v2 at real size, checked against the measured reconstruction sizes."""
    measured = json.loads(resources.files("gsvinspect.data").joinpath("measured_sizes.json").read_text())
    g = synth.write_checkpoint(tmp_path / "s2G2333k.pth", Layout.SOVITS_G_PRETRAINED, "v2")
    gpt = synth.write_checkpoint(tmp_path / "s1v3.ckpt", Layout.GPT_PRETRAINED, "v2")
    for path, name in ((g, "sovits-G-v2"), (gpt, "gpt-v2")):
        obj = torch.load(path, weights_only=True, mmap=True)
        expected = manifest.expected_weights(name)
        assert list(obj["weight"]) == list(expected)
        for key, t in obj["weight"].items():
            assert tuple(t.shape) == expected[key].shape and t.dtype == torch.float16, key
        with zipfile.ZipFile(path) as z:
            assert z.namelist()[0] == f"{path.stem}/data.pkl"
    # tensor bytes dominate: within 0.1 % of the size measured for the real save code
    want = measured["v2"]["pretrained_like_bytes"]
    assert abs(g.stat().st_size - want) / want < 0.001
    assert abs(gpt.stat().st_size - 2 * 77_606_402) / (2 * 77_606_402) < 0.002


def test_full_size_materialize_is_consistent_with_bytes():
    buf = io.BytesIO()
    sd = synth.state_dict("vocoder", "v4")
    torch.save(sd, buf)
    assert sum(t.numel() for t in sd.values()) == 14_425_409
    assert len(buf.getvalue()) > 4 * 14_425_409
