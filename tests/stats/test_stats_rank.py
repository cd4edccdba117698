"""Rankings point at the tensors that carry the fine-tune (issue 13, point 7).

Real files: a v2 SoVITS pair written in upstream's containers whose zero-initialised tensors
(``norm_layers*.beta``, ``flow.flows.*.post``) are zero on the pretrained side, as in the
official s2G2333k.pth, and whose tiny ``dec.ups.*.bias`` moved 30 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gsvinspect.align.alignment import align
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.report import stats as stats_report
from gsvinspect.report.numbers import fmt_cos, fmt_rel
from gsvinspect.stats.engine import compute_stats
from gsvinspect.stats.rank import parts, share, top_modules, top_tensors, total_sumsq_diff
from gsvinspect.stats.rollup import rollup
from helpers_stats import FakeCk, zero_init_sovits_pair


@pytest.fixture(scope="module")
def zero_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero-init")
    pre_p, ft_p, zero = zero_init_sovits_pair(root)
    with open_checkpoint(pre_p) as pc, open_checkpoint(ft_p) as fc:
        al = align(pc.weights, fc.weights)
        res = compute_stats(pc, fc, al.triples(), device="cpu")
    return res, zero, (pre_p, ft_p)


def test_zero_initialised_and_tiny_tensors_do_not_lead_the_ranking(zero_pair):
    res, zero, (pre_p, ft_p) = zero_pair
    assert zero and all(res.per_key[k].rel_change == math.inf for k in zero)   # the trap is really there
    top = top_tensors(res, 20)
    total = total_sumsq_diff(res)
    assert not {ts.target for ts in top} & set(zero)
    assert not [ts.target for ts in top if ts.target.startswith("dec.ups.") and ts.target.endswith(".bias")]
    # ranked by ‖Δ‖², i.e. by share: each tensor listed moved at least as much as any tensor left out
    shown = {ts.target for ts in top}
    floor = min(ts.norm_diff for ts in top)
    assert all(ts.norm_diff <= floor for ts in res.per_key.values() if ts.paired and ts.target not in shown)
    shares = [share(ts.sumsq_diff, total) for ts in top_tensors(res, None)]
    assert sum(shares) == pytest.approx(1.0, rel=1e-12) and shares == sorted(shares, reverse=True)
    # checked against torch.load of the same files, by plain torch
    a = torch.load(pre_p, map_location="cpu", weights_only=False)["weight"]
    b = torch.load(ft_p, map_location="cpu", weights_only=False)["model"]
    d2 = {k: float(((b[k].double() - a[k].double()) ** 2).sum()) for k in a}
    ref = sorted(d2, key=lambda k: -d2[k])[:5]
    assert [ts.target for ts in top[:5]] == ref


def test_layers_rank_by_share_and_parts_add_up(zero_pair):
    res, zero, _ = zero_pair
    mods = rollup(res)
    top = top_modules(mods, 20)
    assert not [m.prefix for m in top if m.prefix.startswith("flow.flows.") and m.prefix.endswith(".post")]
    assert all(m.direct for m in top) and "" not in [m.prefix for m in top]
    assert all(top[i].sumsq_diff >= top[i + 1].sumsq_diff for i in range(len(top) - 1))
    total = mods[""].sumsq_diff_finite
    ps = parts(mods)
    assert {m.prefix for m in ps} >= {"enc_p", "dec", "flow"}
    assert sum(share(m.sumsq_diff, total) for m in ps) == pytest.approx(1.0, rel=1e-9)


def test_zero_pretrained_side_is_shown_as_from_zero_never_inf(zero_pair):
    res, zero, _ = zero_pair
    con_text = _printed(res, top=len(res.per_key))     # every tensor in the table
    assert "from 0" in con_text and "inf" not in con_text
    md = stats_report.to_markdown(res, top=len(res.per_key))
    assert "from 0" in md and "inf" not in md
    doc = stats_report.report_dict(res, top=3)
    row = next(d for d in doc["per_tensor"] if d["target"] == zero[0])
    assert row["rel_change"] == "inf" and 0 < row["share"] < 1e-3 and row["norm_diff"] > 0   # JSON keeps the number


def _printed(res, top):
    from rich.console import Console

    con = Console(record=True, width=250)
    stats_report.print_report(con, res, top=top)
    return con.export_text()


def test_nan_and_inf_tensors_rank_last_without_breaking_shares():
    pre = {"big.w": np.ones(1000, np.float32), "nan.w": np.array([1, np.nan, 3], np.float32),
           "inf.w": np.array([1, 2, 3], np.float32), "zero.b": np.zeros(4, np.float32),
           "tiny.b": np.array([1e-3, 1e-3], np.float32)}
    ft = {"big.w": np.full(1000, 1.01, np.float32), "nan.w": np.array([1, 5, 3.5], np.float32),
          "inf.w": np.array([1, np.inf, 3], np.float32), "zero.b": np.full(4, 1e-4, np.float32),
          "tiny.b": np.array([2e-3, 2e-3], np.float32)}
    res = compute_stats(FakeCk({k: (v, "float32") for k, v in pre.items()}),
                        FakeCk({k: (v, "float32") for k, v in ft.items()}), [(k, k, k) for k in pre], device="cpu")
    order = [ts.target for ts in top_tensors(res, None)]
    assert order[0] == "nan.w" and order[1] == "big.w" and order[-1] == "inf.w"   # NaN pairs left out of ‖Δ‖
    total = total_sumsq_diff(res)
    assert total == pytest.approx(0.25 + 1000 * 0.01 ** 2 + 4e-8 + 2e-6, rel=1e-5)
    assert math.isnan(share(res.per_key["inf.w"].sumsq_diff, total))
    assert res.per_key["tiny.b"].rel_change == pytest.approx(1.0) and order.index("tiny.b") > order.index("big.w")
    assert [t.target for t in top_tensors(res, 2, by="rel_change")] == ["zero.b", "tiny.b"]   # the old ranking
    assert fmt_rel(res.per_key["zero.b"].rel_change) == "from 0"
    mods = rollup(res)
    assert [m.prefix for m in top_modules(mods, None)][-1] == "inf"
    assert share(0.0, 0.0) == 0.0 and share(None, 1.0) is None


def test_one_percentage_format():
    cases = [(0.123, "12.3%"), (0.0615, "6.15%"), (0.001234, "0.123%"), (1.2345e-5, "0.00123%"), (4e-7, "4.0e-5%"),
             (0.0, "0%"), (math.inf, "from 0"), (math.nan, "nan"), (None, "-"), (1.0, "100%")]
    assert [fmt_rel(x) for x, _ in cases] == [want for _, want in cases]
    compact = [fmt_rel(x, compact=True) for x in (0.123, 0.0615, 0.001234, 0.00012345, 1.2345e-5, 4e-7, 12.3)]
    assert compact == ["12.3%", "6.2%", "0.12%", "0.012%", "1e-3%", "4e-5%", "1230%"]
    assert all(len(c) <= 6 for c in compact) and all(c.endswith("%") for c in compact)


def test_cosine_near_one_is_shown_as_one_minus():
    """README: **cos** reads ``1-5.4e-05`` when it rounds to 1, from the engine's full-precision 1 - cos."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(10_000).astype(np.float32)
    b = a + np.float32(0.01) * rng.standard_normal(10_000).astype(np.float32)
    res = compute_stats(FakeCk({"w": (a, "float32"), "same": (a, "float32")}),
                        FakeCk({"w": (b, "float32"), "same": (a, "float32")}),
                        [("w", "w", "w"), ("same", "same", "same")], device="cpu")
    w = res.per_key["w"]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = 1 - a64 @ b64 / math.sqrt((a64 @ a64) * (b64 @ b64))
    assert 1e-5 < ref < 1e-4 and fmt_cos(w.cosine, w.one_minus_cos) == f"1-{ref:.1e}"
    assert fmt_cos(res.per_key["same"].cosine, res.per_key["same"].one_minus_cos) == "1"
    assert fmt_cos(0.5) == "0.5000" and fmt_cos(None) == "-"
