"""The mixing preview (stats/mix.py) against the stats of a mix actually computed (issue 13, point 12)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gsvinspect.align.rules import parse_rules
from gsvinspect.export.mixing import alpha_for
from gsvinspect.stats.engine import compute_stats
from gsvinspect.stats.mix import alpha_lookup, mix_stats, mix_tensor
from helpers_stats import FakeCk


def _pair(rng):
    pre = {"enc.w": rng.standard_normal((64, 48)), "enc.b": rng.standard_normal(48) * 0.01,
           "zero.beta": np.zeros(16), "same.w": rng.standard_normal(32), "nan.w": rng.standard_normal(8),
           "big.w": rng.standard_normal(8)}
    ft = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in pre.items()}
    ft["zero.beta"] = 1e-4 * rng.standard_normal(16)
    ft["same.w"] = pre["same.w"].copy()
    ft["nan.w"][3] = np.nan
    ft["big.w"] = pre["big.w"].copy()
    ft["big.w"][0] = 7e4                     # an fp16 overflow on the fine-tuned side only
    return pre, ft


@pytest.mark.parametrize("a", [0.0, 0.3, 0.5, 1.0])
def test_mix_from_sums_equals_the_stats_of_the_mixed_tensors(a):
    rng = np.random.default_rng(3)
    pre, ft = _pair(rng)
    tr = [(k, k, k) for k in pre]
    pc = FakeCk({k: (v, "float64") for k, v in pre.items()})
    res = compute_stats(pc, FakeCk({k: (v, "float64") for k, v in ft.items()}), tr, device="cpu")
    mixed = {k: pre[k] + a * (ft[k] - pre[k]) for k in pre}
    ref = compute_stats(pc, FakeCk({k: (v, "float64") for k, v in mixed.items()}), tr, device="cpu")
    got = mix_stats(res, lambda t: a)
    assert list(got.per_key) == list(ref.per_key)
    for k, r in ref.per_key.items():
        g = got.per_key[k]
        for name in ("norm_diff", "max_abs_diff") + (() if k == "nan.w" else ("norm_ft",)):
            assert getattr(g, name) == pytest.approx(getattr(r, name), rel=1e-9, abs=1e-12), (k, name)
        if math.isinf(r.rel_change):
            assert math.isinf(g.rel_change)
        else:
            assert g.rel_change == pytest.approx(r.rel_change, rel=1e-9, abs=1e-12), k
        if k != "nan.w":                         # NaN pairs: counted as changed by the mix as well
            assert g.one_minus_cos == pytest.approx(r.one_minus_cos, rel=1e-6, abs=1e-12), k
            assert g.changed == r.changed, k
    ovf = {k: g.overflow16_ft for k, g in got.per_key.items()}
    if 0 < a < 1:                                  # not known from sums: None, not a guess
        assert set(ovf.values()) == {None}
    else:
        assert ovf == {k: r.overflow16_ft for k, r in ref.per_key.items()} and ovf["big.w"] == a
    bad = got.per_key["nan.w"]                     # 0·NaN is NaN: the mix holds it at any alpha
    assert bad.nan_ft == ref.per_key["nan.w"].nan_ft == 1
    if a < 1:                                      # its norm is not in the sums: NaN, not a wrong number
        assert math.isnan(bad.norm_ft) and math.isnan(bad.cosine)
    else:                                          # alpha 1 is the fine-tuned file itself
        assert bad is res.per_key["nan.w"]


def test_alpha_lookup_is_the_exporters_rule():
    rules = parse_rules('[alpha]\ndefault = 0.8\n"enc_p.text_embedding" = 0.3\n"re:\\\\.bias$" = 0.1\n"dec." = 0.6\n')
    keys = ["enc_p.text_embedding.weight", "dec.ups.0.weight", "dec.ups.0.bias", "flow.x.bias", "ref_enc.w"]
    for cli_alpha in (None, 0.5):
        look = alpha_lookup(rules, cli_alpha)
        assert [look(k) for k in keys] == [alpha_for(rules, cli_alpha, k) for k in keys]
    assert [alpha_lookup(rules, None)(k) for k in keys] == [0.3, 0.6, 0.6, 0.1, 0.8]
    plain = parse_rules("[[rule]]\nstrip_prefix = 'module.'\n")
    assert alpha_lookup(plain, None) is None and alpha_lookup(None, None) is None
    assert alpha_lookup(plain, 0.25)("x") == 0.25 == alpha_for(plain, 0.25, "x")


def test_mix_of_one_tensor_at_the_ends():
    rng = np.random.default_rng(4)
    pre, ft = _pair(rng)
    res = compute_stats(FakeCk({k: (v, "float32") for k, v in pre.items()}),
                        FakeCk({k: (v, "float32") for k, v in ft.items()}), [(k, k, k) for k in pre], device="cpu")
    ts = res.per_key["zero.beta"]
    assert mix_tensor(ts, 1.0) is ts
    none = mix_tensor(ts, 0.0)
    assert none.norm_diff == 0.0 and none.rel_change == 0.0 and none.changed == 0 and none.cosine == 1.0
