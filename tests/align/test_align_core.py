"""Alignment of real GPT-SoVITS key sets (from the manifests) under rule lists."""

from __future__ import annotations

import pytest

from helpers_align import weights

from gsvinspect.align.alignment import Status, align
from gsvinspect.load.manifest import expected_weights
from gsvinspect.meta import TensorInfo
from gsvinspect.align.rules import parse_rules


def test_identical_files_are_fully_aligned_in_pretrained_order():
    pre = weights("sovits-G-v2")
    al = align(pre, weights("sovits-G-v2"))
    assert al.ok and al.counts[Status.MATCHED] == 776
    assert [r.target for r in al.rows] == list(pre)
    assert all(r.rule is None for r in al.rows)
    assert al.rule_hits == [] and al.conflicts == []


def test_dtype_alone_is_informational():
    al = align(weights("gpt-v2"), weights("gpt-v2", dtype="float32"))
    assert al.counts[Status.DTYPE_DIFFERS] == 295
    assert al.ok


def test_export_misses_enc_q_only():
    pre = weights("sovits-G-v2")
    ft = weights("sovits-G-v2-export")
    al = align(pre, ft)
    assert not al.ok
    missing = [r for r in al.rows if r.status is Status.MISSING]
    assert len(missing) == 103 and all(r.target.startswith("enc_q.") and r.ft is None for r in missing)
    # pretrained order is kept: enc_q rows sit where the pretrained file has them
    assert [r.target for r in al.rows] == list(pre)


def test_v1_vs_v2_shapes_differ():
    al = align(weights("sovits-G-v1"), weights("sovits-G-v2"))
    shape = {r.target for r in al.rows if r.status is Status.SHAPE_DIFFERS}
    assert shape == {"enc_p.text_embedding.weight", "ref_enc.spectral.0.fc.weight"}
    assert not al.ok


def test_ddp_prefix_rule_and_provenance():
    pre = weights("sovits-G-v2")
    ft = weights("sovits-G-v2", "module.", "float32")
    bare = align(pre, ft)
    assert bare.counts[Status.MISSING] == 776 and bare.counts[Status.UNEXPECTED] == 776
    # unexpected rows follow the pretrained ones, in fine-tuned order
    assert [r.ft_key for r in bare.rows[776:]] == list(ft)
    rules = parse_rules('[[rule]]\nstrip_prefix = "module."\n')
    al = align(pre, ft, rules)
    assert al.ok and al.rule_hits == [776]
    row = al.row_for("dec.conv_pre.weight")
    assert row.ft_key == "module.dec.conv_pre.weight" and row.pre_key == "dec.conv_pre.weight"
    assert row.rule == 0 and row.rules == (0,)
    assert al.triples()[0] == ("enc_p.ssl_proj.weight", "enc_p.ssl_proj.weight", "module.enc_p.ssl_proj.weight")


def test_lora_g_base_layer_maps_onto_plain_weight():
    pre = weights("sovits-G-v3")
    ft = weights("sovits-G-v3-lora", dtype="float32")
    rules = parse_rules("""
[[rule]]
rename = '^cfm\\.base_model\\.model\\.'
to = 'cfm.'
[[rule]]
rename = '\\.base_layer\\.'
to = '.'
""")
    al = align(pre, ft, rules)
    assert al.n_paired == 685 and al.counts[Status.MISSING] == 0
    unexpected = [r.target for r in al.rows if r.status is Status.UNEXPECTED]
    assert len(unexpected) == 176 and all(".lora_A." in k or ".lora_B." in k for k in unexpected)
    row = al.row_for("cfm.estimator.transformer_blocks.0.attn.to_q.weight")
    assert row.ft_key == "cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.base_layer.weight"
    assert row.rules == (0, 1) and row.rule == 1
    assert al.rule_hits == [543, 176]


def test_conflict_names_both_sources_and_is_an_error():
    pre = weights("gpt-v2")
    ft = dict(weights("gpt-v2"))
    extra = "model.h.layers.0.self_attn.in_proj_weight_copy"
    ft[extra] = ft["model.h.layers.0.self_attn.in_proj_weight"]
    rules = parse_rules("[[rule]]\nrename = '_copy$'\nto = ''\n")
    al = align(pre, ft, rules)
    assert al.conflicts == [("model.h.layers.0.self_attn.in_proj_weight",
                             ["model.h.layers.0.self_attn.in_proj_weight", extra])]
    assert al.counts[Status.CONFLICT] == 1 and not al.ok
    row = al.row_for("model.h.layers.0.self_attn.in_proj_weight")
    assert row.status is Status.CONFLICT and set(row.sources) == {extra, "model.h.layers.0.self_attn.in_proj_weight"}
    # a conflicting row gives stats no fine-tuned tensor to compare
    trip = dict((t, (p, f)) for t, p, f in al.triples())
    assert trip["model.h.layers.0.self_attn.in_proj_weight"][1] is None
    # and it stays at its pretrained position
    assert al.rows.index(row) == list(pre).index("model.h.layers.0.self_attn.in_proj_weight")


def test_conflict_on_a_new_name_goes_after_the_pretrained_rows():
    pre = {"a.w": TensorInfo("a.w", (2,), "float32")}
    ft = {"x.one": TensorInfo("x.one", (2,), "float32"), "y.one": TensorInfo("y.one", (2,), "float32"),
          "a.w": TensorInfo("a.w", (2,), "float32")}
    al = align(pre, ft, parse_rules("[[rule]]\nrename = '^[xy]\\.'\nto = 'z.'\n"))
    assert [r.status for r in al.rows] == [Status.MATCHED, Status.CONFLICT]
    assert al.rows[1].target == "z.one" and al.rows[1].sources == ("x.one", "y.one")


def test_dead_rule_is_visible():
    rules = parse_rules('[[rule]]\nstrip_prefix = "module."\n[[rule]]\nstrip_prefix = "_orig_mod."\n')
    al = align(weights("sovits-D-v1"), weights("sovits-D-v1", "module."), rules)
    assert al.rule_hits == [111, 0] and al.dead_rules() == [1]
    assert al.ok


def test_drop_keep_only_and_pre_side_rules():
    pre = weights("sovits-G-v2")
    ft = weights("sovits-G-v2-export")
    al = align(pre, ft, parse_rules("[[rule]]\ndrop = '^enc_q\\.'\nside = 'pre'\n"))
    assert al.ok and al.n_paired == 673
    assert al.rule_hits_pre == [103] and al.rule_hits_ft == [0]
    assert len(al.dropped) == 103 and al.dropped[0][0] == "pre"
    al = align(pre, ft, parse_rules("[[rule]]\nkeep_only = '^dec\\.'\nside = 'both'\n"))
    assert al.ok and all(r.target.startswith("dec.") for r in al.rows)


def test_pre_side_conflict_is_reported():
    pre = {"a.x": TensorInfo("a.x", (1,), "float32"), "b.x": TensorInfo("b.x", (1,), "float32")}
    ft = {"x": TensorInfo("x", (1,), "float32")}
    al = align(pre, ft, parse_rules("[[rule]]\nrename = '^[ab]\\.'\nto = ''\nside = 'pre'\n"))
    assert al.conflicts and set(al.conflicts[0][1]) >= {"a.x", "b.x"}
    assert not al.ok


def test_counts_add_up_and_row_for():
    al = align(weights("sovits-G-v2Pro"), weights("sovits-G-v2"))
    assert sum(al.counts.values()) == len(al.rows)
    assert al.counts[Status.MISSING] == 5            # sv_emb, ge_to512, prelu
    assert al.row_for("nope") is None


@pytest.mark.parametrize("name", ["gpt-v1", "sovits-G-v4", "sovits-G-v2ProPlus", "sovits-D-v2Pro", "vocoder-v4"])
def test_every_manifest_aligns_with_itself(name):
    al = align(weights(name), weights(name))
    assert al.ok and al.n_paired == len(expected_weights(name))
