"""GPT-SoVITS knowledge on top of alignments: the findings a user needs, and single-file checks."""

from __future__ import annotations

import pytest

from helpers_align import weights

from gsvinspect.align.alignment import align
from gsvinspect.errors import UsageError
from gsvinspect.align.check import auto_check_name, check_against
from gsvinspect.align.knowledge import diagnose
from gsvinspect.load.manifest import expected_weights
from gsvinspect.meta import Layout, TensorInfo
from gsvinspect.align.rules import parse_rules


class FakeCk:
    def __init__(self, w, layout=None, version="unknown", header=b"PK"):
        self.weights, self.layout, self.version, self.header, self.root = w, layout, version, header, {}


def codes(findings):
    return [f.code for f in findings]


def test_enc_q_missing_explains_random_posterior_encoder():
    pre = FakeCk(weights("sovits-G-v2"), Layout.SOVITS_G_PRETRAINED, "v2")
    ft = FakeCk(weights("sovits-G-v2-export"), Layout.SOVITS_WEIGHTS, "v2")
    f = [x for x in diagnose(pre, ft, align(pre.weights, ft.weights)) if x.code == "enc-q-missing"]
    assert len(f) == 1 and f[0].severity == "error"
    msg = f[0].message
    for words in ("SoVITS_weights export", "pretrained_s2G", "random", "strict=False", "logs_s2_v2/G_*.pth"):
        assert words in msg
    assert len(f[0].keys) == 103


def test_symbol_set_and_phoneme_vocab_mismatch():
    f = diagnose(None, None, align(weights("sovits-G-v1"), weights("sovits-G-v2")))
    sym = [x for x in f if x.code == "symbol-set-mismatch"][0]
    assert "322" in sym.message and "732" in sym.message and "v1 symbol set" in sym.message
    shape = [x for x in f if x.code == "shape-differs"][0]
    assert shape.keys == ["ref_enc.spectral.0.fc.weight"]
    assert "re-initialise" in shape.message
    g = diagnose(None, None, align(weights("gpt-v1"), weights("gpt-v2")))
    voc = [x for x in g if x.code == "phoneme-vocab-mismatch"][0]
    assert "512" in voc.message and "732" in voc.message


def test_gpt_without_model_prefix():
    bare = {k[6:]: TensorInfo(k[6:], v.shape, v.dtype) for k, v in weights("gpt-v2").items()}
    f = diagnose(None, None, align(weights("gpt-v2"), bare))
    hit = [x for x in f if x.code == "gpt-no-model-prefix"][0]
    assert hit.severity == "error" and "strictly" in hit.message and "add_prefix" in hit.message
    fixed = diagnose(None, None, align(weights("gpt-v2"), bare, parse_rules("[[rule]]\nadd_prefix = 'model.'\n")))
    assert [x.severity for x in fixed if x.code == "gpt-no-model-prefix"] == ["warning"]


def test_conflicts_dead_rules_wrappers_lora_and_headers():
    ft = weights("sovits-G-v3-lora", "module.", "float32")
    rules = parse_rules("""
[[rule]]
strip_prefix = "module."
[[rule]]
rename = '\\.base_model\\.model\\.'
to = '.'
[[rule]]
rename = '\\.base_layer\\.'
to = '.'
[[rule]]
strip_prefix = "_orig_mod."
""")
    al = align(weights("sovits-G-v3"), ft, rules)
    f = diagnose(FakeCk(weights("sovits-G-v3")), FakeCk(ft, header=b"03"), al)
    c = codes(f)
    assert {"dead-rule", "wrapper-prefix", "peft-wrapped", "lora-adapters", "headered-file", "dtype-differs"} <= set(c)
    dead = [x for x in f if x.code == "dead-rule"][0]
    assert "rule 4" in dead.message and "line 10" in dead.message
    lora = [x for x in f if x.code == "lora-adapters"][0]
    assert "rank 32" in lora.message and "88 target weights" in lora.message
    # errors come first
    sev = [x.severity for x in f]
    assert sev == sorted(sev, key=["error", "warning", "info"].index)


def test_rename_conflict_finding_names_both_keys():
    pre = weights("sovits-D-v1")
    ft = dict(pre)
    ft["discriminators.0.convs.0.bias_old"] = ft["discriminators.0.convs.0.bias"]
    al = align(pre, ft, parse_rules("[[rule]]\nrename = '_old$'\nto = ''\n"))
    hit = [x for x in diagnose(None, None, al) if x.code == "rename-conflict"][0]
    assert "discriminators.0.convs.0.bias_old" in hit.message and "rule 1" in hit.message


def test_pro_branch_and_different_models():
    f = codes(diagnose(None, None, align(weights("sovits-G-v2Pro"), weights("sovits-G-v2"))))
    assert "pro-branch-missing" in f
    f = codes(diagnose(None, None, align(weights("sovits-G-v2"), weights("sovits-G-v2ProPlus"))))
    assert "pro-branch-extra" in f
    f = codes(diagnose(None, None, align(weights("sovits-G-v2"), weights("sovits-D-v1"))))
    assert "different-models" in f


def test_clean_pair_has_no_findings():
    assert diagnose(None, None, align(weights("sovits-G-v4"), weights("sovits-G-v4"))) == []


@pytest.mark.parametrize("file_set, check_as, ok, missing, unexpected, shapes", [
    ("sovits-G-v2", "sovits-G-v2", True, 0, 0, 0),
    ("sovits-G-v2-export", "sovits-G-v2", False, 103, 0, 0),
    ("sovits-G-v2-export", "sovits-G-v2-export", True, 0, 0, 0),
    ("sovits-G-v1", "sovits-G-v2", False, 0, 0, 2),
    ("sovits-G-v2ProPlus", "sovits-G-v2", False, 0, 5, 297),
    ("gpt-v1", "gpt-v2", False, 0, 0, 1),
    ("sovits-G-v3-lora", "sovits-G-v3", False, 367, 543, 0),
    ("sovits-D-v2Pro", "sovits-D-v1", False, 0, 36, 0),
])
def test_check_against_reports_what_load_state_dict_would(file_set, check_as, ok, missing, unexpected, shapes):
    r = check_against(weights(file_set), check_as)
    assert (r.ok, len(r.missing), len(r.unexpected), len(r.shape_mismatched)) == (ok, missing, unexpected, shapes)
    assert r.name == check_as and r.loader


def test_check_explains_enc_q_and_strictness():
    r = check_against(FakeCk(weights("sovits-G-v2-export"), Layout.SOVITS_WEIGHTS, "v2"))
    assert r.auto and r.name == "sovits-G-v2" and not r.strict
    assert "enc-q-missing" in codes(r.findings)
    g = check_against(weights("gpt-v2"), "gpt-v2")
    assert g.ok and g.strict


def test_check_lora_of_another_rank_uses_that_rank():
    r = check_against(expected_weights("sovits-G-v4-lora", rank=16, dtype="float32"), "sovits-G-v4-lora")
    assert r.ok


def test_auto_names_and_unknown():
    assert auto_check_name(FakeCk(weights("gpt-v1"), Layout.GPT_LIGHTNING, "v1")) == "gpt-v1"
    assert auto_check_name(FakeCk(weights("gpt-v2"), Layout.GPT_PRETRAINED, "v2ProPlus")) == "gpt-v2ProPlus"  # the identity names its own version
    assert auto_check_name(FakeCk(weights("sovits-D-v2Pro"), Layout.SOVITS_D_TRAIN, "v2ProPlus")) == "sovits-D-v2ProPlus"
    assert auto_check_name(FakeCk(weights("sovits-G-v4-lora-export"), Layout.SOVITS_WEIGHTS_LORA, "v4")) == \
        "sovits-G-v4-lora-export"
    assert auto_check_name(FakeCk(weights("vocoder-v4"), Layout.VOCODER, "v4")) == "vocoder-v4"
    with pytest.raises(UsageError):
        check_against({"foo.bar": TensorInfo("foo.bar", (1,), "float32")})
    with pytest.raises(UsageError):
        check_against(weights("gpt-v2"), "gpt-v9")
