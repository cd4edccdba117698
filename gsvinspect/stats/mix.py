"""Preview of a mix before it is written: the change of ``pre + alpha·(ft − pre)`` against pre.

The exporter's interpolation (``--alpha A`` or a rules file's ``[alpha]`` table) writes
``mixed = pre + a·Δ`` with ``Δ = ft − pre``, one ``a`` per tensor. Every number of the mixed
result against the pretrained side follows from the sums the engine already measured, so
nothing is read again:

* ``‖Δ_mixed‖ = a‖Δ‖`` and ``max|Δ_mixed| = a·max|Δ|`` exactly; the relative change scales by ``a``;
* ``pre·Δ = (‖ft‖² − ‖pre‖² − ‖Δ‖²) / 2`` (polarisation), so ``‖mixed‖² = ‖pre‖² + 2a·pre·Δ + a²‖Δ‖²``,
  and the cosine comes from those three sums like the engine's own (precise near 1);
* elements changed: the same ones for ``a > 0``, none for ``a = 0``.

A tensor holding NaN or Inf on either side carries them into the mix at any ``a`` (``0·NaN`` is
NaN); its ‖Δ_mixed‖, relative change and max|Δ| are still exact (NaN pairs are left out of Δ as
the engine does), but the mixed side's norm and the cosine are not derivable from the sums and
are NaN; its NaN/Inf counts are the fine-tuned side's. The fp16-overflow count of a mix with
``0 < a < 1`` is not known from sums and is left None.

Functions:
    alpha_lookup(rules, alpha) -> target -> alpha, as ``export`` mixes (None: no mixing asked for).
    mix_tensor(ts, a) -> TensorStats of one target, mixed.
    mix_stats(result, alpha_of) -> StatsResult of mixed vs pre (same targets, same order).
    mix_rows(row_changes, alpha) -> RowChanges of the phoneme table's rows, mixed.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from .results import StatsResult, TensorStats, one_minus_cosine_from_sums, rel_change
from .rollup import LanguageSummary, RowChange, RowChanges


def _mixed_sumsq(p: float, f: float, d: float, a: float) -> float:
    """‖pre + a·Δ‖² from ‖pre‖², ‖ft‖², ‖Δ‖² (never below 0, exact at a = 0 and a = 1)."""
    if a == 1.0:
        return f
    if a == 0.0:
        return p
    return max(0.0, p + a * (f - p - d) + a * a * d)


def alpha_lookup(rules, alpha: float | None) -> Callable[[str], float] | None:
    """``target -> alpha`` as the exporter mixes (export.mixing.alpha_for): the rules file's
    ``[alpha]`` table when it has one (longest prefix, ``re:`` entries, ``default``), else
    `alpha`, else 1.0 (kept as fine-tuned). None when neither asks for a mix."""
    has = rules is not None and getattr(rules, "has_alphas", False)
    if alpha is None and not has:
        return None

    from ..align.rules import mix_alpha

    def alpha_of(target: str) -> float:
        a = mix_alpha(rules, alpha, target)
        return 1.0 if a is None else a
    return alpha_of


def mix_tensor(ts: TensorStats, a: float) -> TensorStats:
    """One target's stats for ``pre + a·(ft − pre)`` against pre, ``a`` in [0, 1] (see the module docstring)."""
    if not ts.paired or a == 1.0:
        return ts
    p, d = ts.sumsq_pre, ts.sumsq_diff
    dm = a * a * d
    if any((ts.nan_pre, ts.nan_ft, ts.inf_pre, ts.inf_ft)):
        f = om = math.nan                 # the mix holds them too; its norm is not in the sums
    else:
        f = _mixed_sumsq(p, ts.sumsq_ft, d, a)
        om = one_minus_cosine_from_sums(p, f, dm)
    keep_ft = a > 0
    return replace(
        ts, norm_ft=math.sqrt(f), sumsq_ft=f, sumsq_diff=dm, norm_diff=a * ts.norm_diff,
        rel_change=rel_change(p, dm) if math.isfinite(p) else ts.rel_change, one_minus_cos=om, cosine=1.0 - om,
        max_abs_diff=a * ts.max_abs_diff if ts.max_abs_diff is not None else None,
        changed=ts.changed if keep_ft else 0,
        changed_frac=ts.changed_frac if keep_ft else (0.0 if ts.changed_frac is not None else None),
        overflow16_ft=None if keep_ft else ts.overflow16_pre,   # 0 < a < 1: not known from sums
        dtype_ft=ts.dtype_ft if keep_ft else ts.dtype_pre)


def mix_stats(result: StatsResult, alpha_of: Callable[[str], float]) -> StatsResult:
    """The stats of ``pre + alpha_of(target)·(ft − pre)`` against pre, for every target of `result`.

    Targets compared element-wise are mixed; the others are kept as measured (the exporter
    does not mix what it cannot pair).
    """
    per_key = {target: mix_tensor(ts, float(alpha_of(target))) for target, ts in result.per_key.items()}
    return replace(result, per_key=per_key, notes=list(result.notes))


def _scaled(x: float, a: float) -> float:
    """a·x, with 0·inf = 0 (a mix that keeps the pretrained side changed nothing)."""
    return 0.0 if a == 0.0 and not math.isnan(x) else a * x


def mix_rows(rc: RowChanges, a: float) -> RowChanges:
    """A phoneme table's per-row and per-language change, for the mix with weight `a`."""
    if a == 1.0:
        return rc
    rows = []
    for r in rc.rows:
        p, f, d = r.norm_pre ** 2, r.norm_ft ** 2, r.norm_diff ** 2
        fm, dm = _mixed_sumsq(p, f, d, a), a * a * d
        rows.append(RowChange(r.index, r.pre_index, r.symbol, r.language, r.norm_pre, math.sqrt(fm),
                              a * r.norm_diff, rel_change(p, dm), 1.0 - one_minus_cosine_from_sums(p, fm, dm)))
    by_lang = {}
    for lang, s in rc.by_language.items():
        group = [r for r in rows if r.language == lang]
        moved = [r for r in group if r.rel_change > rc.moved_threshold]
        by_lang[lang] = LanguageSummary(
            lang, s.rows, moved=len(moved), changed=s.changed if a > 0 else 0, rel_change=_scaled(s.rel_change, a),
            mean_rel=_scaled(s.mean_rel, a), max_rel=_scaled(s.max_rel, a),
            top=[r.symbol for r in sorted(moved, key=lambda r: -r.rel_change)[:5]])
    return replace(rc, rows=rows, by_language=by_lang)
