"""Planning a stats run from metadata alone: which targets, compared how, how many bytes.

:func:`_plan` turns ``Alignment.triples()`` into :class:`_Target` s (pair / each side alone /
skip, with the note the user sees), :func:`_pieces` says what to read for each, :func:`_finish`
turns a target's summed partials into its :class:`TensorStats`, and :class:`_Progress` rate-limits
progress calls. Nothing here reads tensor data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from ..meta import fmt_shape as _fmt_shape
from .kernels import _kind
from .results import (_CHG, _D, _F, _INFF, _INFP, _MAXD, _NANF, _NANP, _OVFF, _OVFP, _P, TensorStats,
                      _empty_part, one_minus_cosine_from_sums, rel_change)

DEFAULT_CHUNK_ELEMS = 1 << 22        # elements per job (CPU) / per packed chunk (torch)
_PROGRESS_INTERVAL = 0.05            # seconds between progress calls (<= 20 per second)


@dataclass(slots=True)
class _Target:
    idx: int
    target: str
    pre_key: str | None
    ft_key: str | None
    pre: object | None                   # TensorInfo
    ft: object | None
    mode: str                            # "pair" | "sides" (each side alone) | "skip"
    note: str = ""
    pending: int = 0
    part: np.ndarray = field(default_factory=lambda: _empty_part())
    nbytes: int = 0

    @property
    def kind_pre(self) -> str | None:
        return _kind(self.pre.dtype) if self.pre is not None else None

    @property
    def kind_ft(self) -> str | None:
        return _kind(self.ft.dtype) if self.ft is not None else None

    @property
    def numel(self) -> int:
        if self.mode == "pair":
            return self.pre.numel
        side = self.pre if self.pre is not None else self.ft
        return side.numel if side is not None else 0


def _plan(pre_ck, ft_ck, triples) -> list[_Target]:
    out: list[_Target] = []
    for i, (target, pk, fk) in enumerate(triples):
        pre = pre_ck.weights.get(pk) if pk is not None else None
        ft = ft_ck.weights.get(fk) if fk is not None else None
        if pk is not None and pre is None:
            raise UsageError(f"stats: pretrained checkpoint has no tensor {pk!r}")
        if fk is not None and ft is None:
            raise UsageError(f"stats: fine-tuned checkpoint has no tensor {fk!r}")
        t = _Target(i, target, pk, fk, pre, ft, "sides")
        kinds = [_kind(s.dtype) for s in (pre, ft) if s is not None]
        if not kinds or any(k is None for k in kinds):
            t.mode = "skip"
            bad = [s.dtype for s in (pre, ft) if s is not None and _kind(s.dtype) is None]
            t.note = f"dtype {', '.join(bad)} not compared" if bad else "no tensor on either side"
        elif pre is not None and ft is not None:
            if pre.shape == ft.shape:
                t.mode = "pair"
            elif pre.numel == ft.numel and _squeezed(pre.shape) == _squeezed(ft.shape):
                t.mode = "pair"
                t.note = f"shapes {_fmt_shape(pre.shape)} vs {_fmt_shape(ft.shape)} differ only in size-1 dims; compared flat"
            else:
                t.note = f"shape {_fmt_shape(pre.shape)} vs {_fmt_shape(ft.shape)}: no element-wise difference"
        if t.mode != "skip":
            t.nbytes = sum(s.nbytes for s in (pre, ft) if s is not None)
        out.append(t)
    return out


def _pieces(t: _Target):
    """What to read for `t`, from metadata only: ``(side, pre kind, ft kind, numel, bytes)``.

    side is ``"pair"`` or ``"pre"`` / ``"ft"`` (that side alone, the other kind None); skipped
    targets and empty tensors yield nothing. Nothing is read here: planning stays cheap, and the
    arrays are made by whoever reads them (:func:`_sources`).
    """
    if t.mode == "skip":
        return
    if t.mode == "pair":
        if t.pre.numel:
            yield "pair", t.kind_pre, t.kind_ft, t.pre.numel, t.pre.nbytes + t.ft.nbytes
        return
    if t.pre is not None and t.pre.numel:
        yield "pre", t.kind_pre, None, t.pre.numel, t.pre.nbytes
    if t.ft is not None and t.ft.numel:
        yield "ft", None, t.kind_ft, t.ft.numel, t.ft.nbytes


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _finish(t: _Target) -> TensorStats:
    pre, ft, p = t.pre, t.ft, t.part
    ts = TensorStats(t.target, t.pre_key, t.ft_key, t.numel, note=t.note,
                     shape_pre=None if pre is None else tuple(pre.shape),
                     shape_ft=None if ft is None else tuple(ft.shape),
                     dtype_pre=None if pre is None else pre.dtype,
                     dtype_ft=None if ft is None else ft.dtype)
    if t.mode == "skip":
        return ts
    if pre is not None:
        ts.sumsq_pre = float(p[_P])
        ts.norm_pre = math.sqrt(ts.sumsq_pre)
        ts.nan_pre, ts.inf_pre, ts.overflow16_pre = int(p[_NANP]), int(p[_INFP]), int(p[_OVFP])
    if ft is not None:
        ts.sumsq_ft = float(p[_F])
        ts.norm_ft = math.sqrt(ts.sumsq_ft)
        ts.nan_ft, ts.inf_ft, ts.overflow16_ft = int(p[_NANF]), int(p[_INFF]), int(p[_OVFF])
    if t.mode == "pair":
        ts.sumsq_diff = float(p[_D])
        ts.norm_diff = math.sqrt(ts.sumsq_diff)
        ts.max_abs_diff = float(p[_MAXD])
        ts.changed = int(p[_CHG])
        ts.changed_frac = ts.changed / ts.numel if ts.numel else 0.0
        ts.rel_change = rel_change(ts.sumsq_pre, ts.sumsq_diff)
        ts.one_minus_cos = one_minus_cosine_from_sums(ts.sumsq_pre, ts.sumsq_ft, ts.sumsq_diff)
        ts.cosine = 1.0 - ts.one_minus_cos
    return ts



class _Progress:
    """Rate-limited progress reporting (the TUI re-renders on each call)."""

    def __init__(self, cb, total: int):
        self.cb, self.total, self.done, self.last = cb, total, 0, 0.0

    def add(self, nbytes: int) -> None:
        self.done += nbytes
        if self.cb is None:
            return
        now = time.monotonic()
        if now - self.last >= _PROGRESS_INTERVAL:
            self.last = now
            self.cb(self.done, self.total)

    def final(self) -> None:
        if self.cb is not None:
            self.cb(self.done, self.total)
