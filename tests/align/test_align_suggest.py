"""Rule suggestion on every real pairing of GPT-SoVITS key sets: it must reach every pairing the
keys allow, with the fewest rules."""

from __future__ import annotations

import pytest
from helpers_align import weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsvinspect.align.alignment import Status, align
from gsvinspect.load.manifest import expected_weights
from gsvinspect.align.rules import parse_rules
from gsvinspect.align.suggest import suggest_rules


def canon(key: str) -> str:
    """The wrapper-free name of a key: an oracle for what a perfect rule list can pair."""
    changed = True
    while changed:
        changed = False
        for p in ("module.", "_orig_mod.", "net_g.", "model."):
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key.replace(".base_model.model.", ".").replace(".base_layer.", ".")


def best_possible(pre, ft) -> int:
    by = {canon(k): v.shape for k, v in ft.items()}
    return sum(1 for k, v in pre.items() if by.get(canon(k)) == v.shape)


CASES = {
    # name: (pre, ft, expected rule kinds)
    "lightning GPT vs pretrained": (weights("gpt-v2"), weights("gpt-v2", dtype="float32"), []),
    "GPT_weights v1 export vs pretrained": (weights("gpt-v1"), weights("gpt-v1"), []),
    "GPT without model.": (weights("gpt-v2"), {k[6:]: v for k, v in weights("gpt-v2").items()}, ["add_prefix"]),
    "G_*.pth vs s2G v2": (weights("sovits-G-v2"), weights("sovits-G-v2", dtype="float32"), []),
    "SoVITS_weights export vs s2G": (weights("sovits-G-v2"), weights("sovits-G-v2-export"), []),
    "DDP G v1": (weights("sovits-G-v1"), weights("sovits-G-v1", "module."), ["strip_prefix"]),
    "compiled G v2Pro": (weights("sovits-G-v2Pro"), weights("sovits-G-v2Pro", "_orig_mod."), ["strip_prefix"]),
    "DDP+compile G v2ProPlus": (weights("sovits-G-v2ProPlus"), weights("sovits-G-v2ProPlus", "module._orig_mod."),
                                ["strip_prefix"]),
    "net_g G v2": (weights("sovits-G-v2"), weights("sovits-G-v2", "net_g."), ["strip_prefix"]),
    "DDP D v2Pro": (weights("sovits-D-v2Pro"), weights("sovits-D-v2Pro", "module."), ["strip_prefix"]),
    "DDP GPT": (weights("gpt-v1"), weights("gpt-v1", "module."), ["strip_prefix"]),
    "LoRA G v3 vs s2Gv3": (weights("sovits-G-v3"), weights("sovits-G-v3-lora"), ["rename", "rename"]),
    "LoRA G v4 vs s2Gv4": (weights("sovits-G-v4"), weights("sovits-G-v4-lora"), ["rename", "rename"]),
    "LoRA export v4 vs s2Gv4": (weights("sovits-G-v4"), weights("sovits-G-v4-lora-export"), ["rename"]),
    "DDP LoRA G v3": (weights("sovits-G-v3"), weights("sovits-G-v3-lora", "module."),
                      ["strip_prefix", "rename", "rename"]),
    "DDP pretrained side": (weights("sovits-G-v2", "module."), weights("sovits-G-v2"), ["add_prefix"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_suggestion_reaches_every_possible_pairing(case):
    pre, ft, kinds = CASES[case]
    rules = suggest_rules(pre, ft)
    assert [r.kind for r in rules.rules] == kinds
    al = align(pre, ft, rules)
    assert al.counts[Status.MATCHED] + al.counts[Status.DTYPE_DIFFERS] == best_possible(pre, ft)
    assert al.counts[Status.SHAPE_DIFFERS] == 0 and not al.conflicts
    assert all(n > 0 for n in al.rule_hits), "a suggested rule must do something"
    # the suggestion survives a trip through the TOML a user would save
    again = align(pre, ft, parse_rules(rules.to_toml()))
    assert again.counts == al.counts


def test_lora_adapters_are_never_renamed_onto_base_weights():
    pre, ft = weights("sovits-G-v4"), weights("sovits-G-v4-lora-export")
    rules = suggest_rules(pre, ft)
    al = align(pre, ft, rules)
    lora_rows = [r for r in al.rows if r.ft_key and (".lora_A." in r.ft_key or ".lora_B." in r.ft_key)]
    assert len(lora_rows) == 176 and all(r.status is Status.UNEXPECTED for r in lora_rows)
    # with keys only (no shapes) the adapter names are still left alone
    rules_k = suggest_rules(list(pre), list(ft))
    assert not any("lora" in r.pattern for r in rules_k.rules)


def test_aligned_sets_need_no_rule_and_unrelated_sets_get_none():
    assert suggest_rules(weights("gpt-v2"), weights("gpt-v2")).rules == []
    assert suggest_rules(weights("gpt-v2"), weights("sovits-D-v1")).rules == []
    assert suggest_rules([], []).rules == []


def test_keys_only_input_works():
    pre = list(expected_weights("sovits-G-v2"))
    ft = ["module." + k for k in pre]
    rules = suggest_rules(pre, ft)
    assert [(r.kind, r.pattern) for r in rules.rules] == [("strip_prefix", "module.")]


WRAPPERS = ["", "module.", "_orig_mod.", "module._orig_mod.", "net_g."]
NAMES = ["gpt-v1", "gpt-v2", "sovits-G-v2", "sovits-G-v3", "sovits-D-v1", "sovits-G-v4-lora", "vocoder-v4"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), ft_wrap=st.sampled_from(WRAPPERS), pre_wrap=st.sampled_from(["", "module."]),
       drop_every=st.integers(min_value=0, max_value=7))
def test_suggestion_is_optimal_for_wrapped_and_thinned_sets(name, ft_wrap, pre_wrap, drop_every):
    base = name.replace("-lora", "") if "lora" in name else name
    pre = weights(base, pre_wrap)
    ft_all = weights(name, ft_wrap)
    ft = {k: v for i, (k, v) in enumerate(ft_all.items()) if not drop_every or i % (drop_every + 2)}
    rules = suggest_rules(pre, ft)
    al = align(pre, ft, rules)
    assert al.counts[Status.MATCHED] == best_possible(pre, ft)
    assert not al.conflicts
    assert len(rules.rules) <= 4
