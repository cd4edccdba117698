"""The diff view's model: tree building, flattening, filter/sort, cursor identity (no Textual)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from gsvinspect.align.alignment import Status, align
from gsvinspect.meta import TensorInfo
from gsvinspect.align.rules import parse_rules
from gsvinspect_tui.model import ViewModel, find_line, single_rows


def _weights(keys, shape=(4, 4), dtype="float32"):
    return {k: TensorInfo(k, shape, dtype) for k in keys}


PRE = _weights([
    "enc_p.encoder.attn_layers.0.conv_q.weight",
    "enc_p.encoder.attn_layers.0.conv_q.bias",
    "enc_p.encoder.attn_layers.1.conv_q.weight",
    "enc_p.text_embedding.weight",
    "enc_q.pre.weight",
    "dec.conv_pre.weight",
])


def statuses(m) -> Counter:
    """How many leaves carry each status name."""
    return Counter(lf.status for lf in m.leaves.values())


def _model(ft_keys=None, rules_text=""):
    ft = _weights(ft_keys if ft_keys is not None else list(PRE))
    al = align(PRE, ft, parse_rules(rules_text) if rules_text else None)
    return ViewModel(al.rows), al


def test_tree_groups_and_compaction():
    m, _ = _model()
    top = [c.name for c in m.root.children]
    assert top == ["enc_p", "enc_q.pre", "dec.conv_pre"]  # single-child chains are one line
    enc_p = m.groups["enc_p"]
    assert [c.name for c in enc_p.children] == ["encoder.attn_layers", "text_embedding"]
    assert m.root.n_keys == 6 and enc_p.n_keys == 4


def test_flatten_respects_expanded_and_expand_all():
    m, _ = _model()
    lines = m.flatten()
    assert [ln.node.name for ln in lines] == ["enc_p", "enc_q.pre", "dec.conv_pre"]
    m.expand_all()
    lines = m.flatten()
    leaves = [ln for ln in lines if not ln.is_group]
    assert len(leaves) == 6
    assert lines[0].expanded and lines[1].depth == 1
    m.collapse_all()
    assert len(m.flatten()) == 3


def test_problem_counts_roll_up_and_only_problems():
    m, al = _model([k for k in PRE if not k.startswith("enc_q")] + ["extra.weight"])
    assert m.root.problems == {"MISSING": 1, "UNEXPECTED": 1}
    assert m.groups["enc_q.pre"].n_problems == 1
    m.only_problems = True
    lines = m.flatten()
    assert {ln.node.target for ln in lines if not ln.is_group} == {"enc_q.pre.weight", "extra.weight"}
    # filtered views show the groups that hold matches, open
    assert all(ln.expanded for ln in lines if ln.is_group)


def test_dtype_only_difference_is_not_a_problem():
    ft = {k: TensorInfo(k, v.shape, "float16") for k, v in PRE.items()}
    m = ViewModel(align(PRE, ft).rows)
    assert statuses(m) == {"DTYPE_DIFFERS": 6}
    assert m.root.n_problems == 0


def test_filter_text_and_regex():
    m, _ = _model()
    m.set_filter("conv_q")
    keys = {ln.node.target for ln in m.flatten() if not ln.is_group}
    assert keys == {"enc_p.encoder.attn_layers.0.conv_q.weight", "enc_p.encoder.attn_layers.0.conv_q.bias",
                    "enc_p.encoder.attn_layers.1.conv_q.weight"}
    m.set_filter(r"attn_layers\.1\.")
    keys = {ln.node.target for ln in m.flatten() if not ln.is_group}
    assert keys == {"enc_p.encoder.attn_layers.1.conv_q.weight"}
    m.set_filter("re:[unclosed")
    assert m.filter_error and not [ln for ln in m.flatten() if not ln.is_group]
    m.set_filter("")
    assert len(m.flatten()) == 3


def test_stats_sort_by_change_and_group_rollup():
    m, _ = _model()
    changes = {"enc_p.text_embedding.weight": 0.5, "dec.conv_pre.weight": 0.01,
               "enc_p.encoder.attn_layers.0.conv_q.weight": 0.1}
    m.set_stats((k, SimpleNamespace(rel_change=v, norm_pre=1.0, norm_diff=v)) for k, v in changes.items())
    m.rollup()
    enc_p = m.groups["enc_p"]
    assert enc_p.max_change == 0.5 and enc_p.n_stats == 2
    assert abs(enc_p.change - ((0.5 ** 2 + 0.1 ** 2) / 2) ** 0.5) < 1e-12  # ‖Δ‖/‖pre‖ over the group
    m.flat = True
    m.sort_by_change = True
    lines = m.flatten()
    assert [ln.node.target for ln in lines[:3]] == ["enc_p.text_embedding.weight",
                                                   "enc_p.encoder.attn_layers.0.conv_q.weight",
                                                   "dec.conv_pre.weight"]
    assert lines[0].label == "enc_p.text_embedding.weight"


def test_find_line_falls_back_to_visible_ancestor():
    m, _ = _model()
    m.expand_all()
    key = "enc_p.encoder.attn_layers.1.conv_q.weight"
    assert m.flatten()[find_line(m.flatten(), key, m)].node.target == key
    m.collapse_all()
    lines = m.flatten()
    assert lines[find_line(lines, key, m)].node.name == "enc_p"
    m.reveal(key)
    lines = m.flatten()
    assert lines[find_line(lines, key, m)].ident == key


def test_rule_renamed_rows_keep_target_and_original_key():
    ft_keys = ["module." + k for k in PRE]
    m, al = _model(ft_keys, "[[rule]]\nstrip_prefix = 'module.'\n")
    assert al.counts[Status.MATCHED] == 6 and statuses(m) == {"MATCHED": 6}
    leaf = m.leaves["dec.conv_pre.weight"]
    assert leaf.row.ft_key == "module.dec.conv_pre.weight" and leaf.row.rule == 0


def test_single_checkpoint_rows():
    m = ViewModel(single_rows(PRE), single=True)
    assert statuses(m) == {"SINGLE": 6}
    m.expand_all()
    assert len([ln for ln in m.flatten() if not ln.is_group]) == 6


def test_twenty_thousand_keys_build_and_flatten():
    keys = [f"stack{i // 4000}.groups.{i // 400}.layers.{i // 16}.sub{(i // 2) % 8}.{'weight' if i % 2 else 'bias'}"
            for i in range(20000)]
    w = _weights(keys)
    m = ViewModel(align(w, w).rows)
    m.expand_all()
    lines = m.flatten()
    assert len([ln for ln in lines if not ln.is_group]) == 20000
    m.set_filter("layers.77.")
    assert 0 < len([ln for ln in m.flatten() if not ln.is_group]) < 50
