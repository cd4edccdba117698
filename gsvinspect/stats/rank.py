"""Rankings: which tensors and modules carry the fine-tune.

Every "most-changed" list (``diff``'s tables, its JSON, the app's ``s`` sort and Modules tab)
ranks by **share of the model's total change**: a tensor's (or module's) ``‖Δ‖²`` divided by the
sum of ``‖Δ‖²`` over every compared tensor. Why this and not the relative change ``‖Δ‖/‖pre‖``:

* shares add up (the tensors of a module sum to the module's share, the layers to 100 %), so
  the top of the list is where the fine-tune's weight change actually went;
* a tensor whose pretrained side is all zeros (LayerNorm betas, zero-initialised ``post``
  convolutions of the flow) has an infinite relative change from a change of 3e-4; by share it
  sits where its 3e-4 puts it;
* a 16-element bias that moved 5 % moved less than a 1M-element weight that moved 2 %: by
  relative change the biases drown the list, by share they don't.

The relative change stays beside it as a column: it says how far a tensor moved *for its
size*. Tensors and modules whose ``‖Δ‖²`` is not finite (Inf values) have no share (NaN), rank
last and are left out of the total; the health table lists them.

Modules ranked by default are the **layers**: modules that directly hold a compared tensor
(``dec.ups.0``, ``enc_p.text_embedding``), so a list is not padded with each layer's parents
(``dec``, ``dec.ups``: those are :func:`parts`); a module holding tensors *and* a sub-layer (GPT's
``self_attn`` and ``self_attn.out_proj``) is listed with its whole subtree. ``depth=N`` ranks the
modules of one level instead.

Functions:
    total_sumsq_diff(per_key) -> float        Σ ‖Δ‖² over compared tensors (finite ones).
    share(sumsq_diff, total) -> float | None  one share in [0, 1] (NaN when not finite).
    top_tensors(result, n, by="share") / top_modules(rollups, n, by="share", depth=None).
"""

from __future__ import annotations

import math
from typing import Mapping

from .results import StatsResult, TensorStats

RANKINGS = ("share", "rel_change", "norm_diff", "max_abs_diff")


def total_sumsq_diff(per_key: Mapping[str, TensorStats] | StatsResult) -> float:
    """Σ ‖Δ‖² over the compared tensors whose ‖Δ‖² is finite (the denominator of every share)."""
    per_key = per_key.per_key if isinstance(per_key, StatsResult) else per_key
    return math.fsum(ts.sumsq_diff for ts in per_key.values()
                     if ts.paired and ts.sumsq_diff is not None and math.isfinite(ts.sumsq_diff))


def share(sumsq_diff: float | None, total: float) -> float | None:
    """``sumsq_diff / total``: None when not compared, NaN when not finite, 0 when nothing changed."""
    if sumsq_diff is None:
        return None
    if not math.isfinite(sumsq_diff):
        return math.nan
    return sumsq_diff / total if total > 0 else 0.0


def _value(obj, by: str) -> float | None:
    if by == "share":           # monotonic in ‖Δ‖²: no total needed to sort
        return obj.sumsq_diff
    if by not in RANKINGS:
        raise ValueError(f"unknown ranking {by!r} (use one of {', '.join(RANKINGS)})")
    return getattr(obj, by)


def _rank_key(value: float | None) -> tuple:
    """Sort key: biggest first; inf before finite; NaN and None last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (1, 0.0)
    return (0, -value)


def _share_key(value: float | None) -> tuple:
    """Sort key for ‖Δ‖²: biggest finite first; inf, NaN and None (no share) last."""
    if value is None or not math.isfinite(value):
        return (1, 0.0)
    return (0, -value)


def top_tensors(result: StatsResult | Mapping[str, TensorStats], n: int | None = 20, *,
                by: str = "share") -> list[TensorStats]:
    """The `n` compared tensors that changed most, by share of ‖Δ‖² (or ``rel_change``,
    ``norm_diff``, ``max_abs_diff``); ties keep file order. ``n=None``: all of them."""
    per_key = result.per_key if isinstance(result, StatsResult) else result
    rows = [ts for ts in per_key.values() if ts.paired]
    key = _share_key if by == "share" else _rank_key
    rows.sort(key=lambda ts: key(_value(ts, by)))
    return rows[:n] if n is not None else rows


def top_modules(rollups: Mapping, n: int | None = 20, *, by: str = "share", depth: int | None = None,
                include_root: bool = False) -> list:
    """The `n` modules that changed most: the layers (modules holding a compared tensor
    directly), or every module of one `depth`; ranked like :func:`top_tensors`."""
    rows = [m for m in rollups.values() if m.paired and (include_root or m.prefix)
            and (m.direct if depth is None else m.depth == depth)]
    key = _share_key if by == "share" else _rank_key
    rows.sort(key=lambda m: key(_value(m, by)))
    return rows[:n] if n is not None else rows


def parts(rollups: Mapping) -> list:
    """The model's top-level parts (below a single wrapper such as GPT's ``model``), by share."""
    root = rollups.get("")
    level = [m for m in rollups.values() if m.depth == 1 and m.paired]
    while len(level) == 1 and root is not None and level[0].paired == root.paired:
        prefix = level[0].prefix + "."
        level = [m for m in rollups.values()
                 if m.prefix.startswith(prefix) and m.depth == level[0].depth + 1 and m.paired]
    level.sort(key=lambda m: _share_key(m.sumsq_diff))
    return level
