"""The engine's result types and the algebra on sums of squares (no I/O, no numpy kernels).

:class:`TensorStats` (one target), :class:`StatsResult` (a run), :class:`Cancelled`, and the
helpers that turn fp64 sums of squares into a relative change or a cosine
(:func:`rel_change`, :func:`cosine_from_sums`, :func:`one_minus_cosine_from_sums`): roll-ups,
mixing previews and the triage views reuse them so every number is derived the same way. The
slot layout of a partial-result vector (``_P`` ... ``_OVFF``) is shared by every kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

OVERFLOW16 = 65520.0   # |x| >= this becomes Inf in a round-to-nearest cast to float16


# slots of a partial-result vector
_P, _F, _D, _MAXD, _CHG, _NANP, _INFP, _OVFP, _NANF, _INFF, _OVFF = range(11)
_NSLOTS = 11


class Cancelled(Exception):
    """The run was cancelled; ``partial`` holds the targets finished before it stopped."""

    def __init__(self, partial: "StatsResult"):
        self.partial = partial
        super().__init__(f"stats cancelled after {len(partial.per_key)} tensors")


@dataclass(slots=True)
class TensorStats:
    """Norms, deltas and health of one target (None where a side is absent or not compared)."""

    target: str
    pre_key: str | None
    ft_key: str | None
    numel: int                           # elements compared (pair) or of the one side present
    norm_pre: float | None = None
    norm_ft: float | None = None
    norm_diff: float | None = None
    rel_change: float | None = None
    cosine: float | None = None
    max_abs_diff: float | None = None
    nan_pre: int | None = None
    nan_ft: int | None = None
    inf_pre: int | None = None
    inf_ft: int | None = None
    changed_frac: float | None = None
    overflow16_pre: int | None = None
    overflow16_ft: int | None = None
    # extras
    shape_pre: tuple[int, ...] | None = None
    shape_ft: tuple[int, ...] | None = None
    dtype_pre: str | None = None
    dtype_ft: str | None = None
    sumsq_pre: float | None = None       # fp64 totals, kept so roll-ups can add them up exactly
    sumsq_ft: float | None = None
    sumsq_diff: float | None = None
    changed: int | None = None
    one_minus_cos: float | None = None   # 1 - cosine with full precision (cosine rounds to 1.0 early)
    note: str = ""

    @property
    def paired(self) -> bool:
        """True when a difference was computed (both sides present and comparable)."""
        return self.norm_diff is not None

    @property
    def healthy(self) -> bool:
        """No NaN, no Inf, nothing that a cast to fp16 would turn into Inf, on either side."""
        return not any((self.nan_pre, self.nan_ft, self.inf_pre, self.inf_ft,
                        self.overflow16_pre, self.overflow16_ft))


@dataclass(slots=True)
class StatsResult:
    """All targets' stats, in triple order, and how the run went."""

    per_key: dict[str, TensorStats]
    device_used: str
    seconds: float
    bytes_read: int
    cancelled: bool = False
    bytes_total: int = 0
    notes: list[str] = field(default_factory=list)


def _empty_part() -> np.ndarray:
    return np.zeros(_NSLOTS, dtype=np.float64)


def _merge(into: np.ndarray, part: np.ndarray) -> None:
    m = max(into[_MAXD], part[_MAXD])
    into += part
    into[_MAXD] = m



def rel_change(sumsq_pre: float, sumsq_diff: float) -> float:
    """‖Δ‖/‖pre‖ from sums of squares; 0 for 0/0, inf for x/0, NaN when a sum is not finite."""
    if not (math.isfinite(sumsq_pre) and math.isfinite(sumsq_diff)):
        return math.nan
    if sumsq_pre == 0.0:
        return 0.0 if sumsq_diff == 0.0 else math.inf
    return math.sqrt(sumsq_diff) / math.sqrt(sumsq_pre)


def one_minus_cosine_from_sums(p: float, f: float, d: float) -> float:
    """``1 - cos`` from ‖pre‖², ‖ft‖², ‖Δ‖², in [0, 2]: keeps its digits when cos rounds to 1.0."""
    if not (math.isfinite(p) and math.isfinite(f) and math.isfinite(d)):
        return math.nan
    if p == 0.0 or f == 0.0:
        return 0.0 if p == f else 1.0
    a, b = math.sqrt(p), math.sqrt(f)
    return min(2.0, max(0.0, (d - (a - b) ** 2) / (2.0 * a * b)))


def cosine_from_sums(p: float, f: float, d: float) -> float:
    """Cosine similarity from ‖pre‖², ‖ft‖², ‖Δ‖²; precise when the sides are nearly equal."""
    return 1.0 - one_minus_cosine_from_sums(p, f, d)
