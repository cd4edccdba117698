"""Norms and deltas of every aligned tensor pair, in one batched, chunked, cancellable pass.

Why a dedicated engine: the obvious loop (``torch.load`` both files, then per key ``.float()``,
subtract, ``norm``) imports torch (~1.1 s), copies every byte twice, allocates full-size fp32
temporaries, and a single fp32 ``vector_norm`` over 150M elements was seen 3.5 % low. Here every
byte of the files is read once, in blocks that stay in cache, with fp64 totals.

What is computed (:class:`TensorStats`), per target of ``Alignment.triples()``:

* both sides present: numel, L2 norm of each side, L2 norm of ``ft - pre``, relative change
  ``‖ft-pre‖/‖pre‖``, cosine similarity, ``max |Δ|``, share of elements that changed, and per side
  the NaN / Inf counts and the fp16 overflow count (finite values with ``|x| >= 65520``: exactly
  those a cast to float16 turns into Inf; fp16 sides have none by construction);
* one side only: that side's norm and health counts; the other side's fields and all
  difference fields are None.

Definitions and edge cases (documented behaviour, relied on by the tests):

* **Precision.** Pairs are compared in fp32 (fp16 / bf16 / fp32 sides, mixed dtypes included:
  fp16 pretrained vs fp32 fine-tune is the usual case), or fp64 when a side is fp64 or integer.
  Sums of squares are fp32 dot products over runs of 4096 elements, added up in fp64; any block
  (256K elements) whose sums are not finite or may have underflowed (NaN, Inf, huge or tiny
  values) is redone in fp64. Tensors under 64K elements are packed together and summed as exact
  fp64 squares. Results agree with an fp64 reference to ~1e-6 relative.
* **rel_change** is ``‖Δ‖/‖pre‖``; when ``‖pre‖ = 0`` it is 0.0 if ``Δ = 0`` and ``inf`` otherwise.
* **cosine** is computed as ``1 - (‖Δ‖² - (‖pre‖-‖ft‖)²) / (2‖pre‖‖ft‖)``, which is exact algebra
  and keeps full precision when the sides are nearly equal (``1-cos`` comes from ‖Δ‖, not from
  a rounded dot product); ``one_minus_cos`` keeps those digits after ``cosine`` has rounded to
  1.0. Both sides zero: 1.0; exactly one side zero: 0.0. Clamped to [-1, 1].
* **NaN.** Norms ignore NaN elements (NaN-excluded, like ``numpy.nansum``); the counts say how
  many there were. An element pair where either side is NaN is left out of ‖Δ‖ and ``max |Δ|``
  (so is ``inf - inf`` of equal-signed infinities); it counts as changed unless both sides are
  NaN. **Inf** is kept: a side holding Inf has an infinite norm and rel_change/cosine are NaN.
* **changed_frac** is the share of element pairs whose values differ (``pre != ft``).
* **Shapes.** Pairs whose shapes differ are not compared element-wise: each side gets its norm
  and health counts, the difference fields stay None, and ``note`` says why. Shapes that differ
  only by size-1 dimensions (``(n, 1)`` vs ``(n,)``) are compared flat, with a note.
* **Unsupported dtypes** (complex, float8) are skipped with a note. Integer and bool tensors are
  compared as float64 values.

Devices (``device=``): ``"cpu"`` is numpy and never imports torch. Big tensors are read block by
block with ``pread`` from a second fd of the same file into reused buffers (half the cost of
faulting the mapping in; the mapping is the fallback), converted to fp32 (fp16 by a 4-pass bit
conversion, numpy's own cast being scalar) and reduced, all sides of a block in each call. Inputs
over 64 MB are shared between the calling thread and forked worker processes, one per core up to
8 (threads do not scale here: see :mod:`gsvinspect.stats.pool`).

``"cuda"`` is torch on the GPU (raises UsageError when CUDA is not available): tensors are
packed per dtype pair into chunks of ``chunk_elems`` elements (each segment padded to 1024
elements), read into pinned host buffers (``pread`` straight in where the dtype matches) by a
reader thread that starts before torch is imported (so CUDA start-up overlaps the reading),
moved with async copies on a side stream and reduced in fp64 on the GPU; GPU memory stays below
about 80 bytes x ``chunk_elems``. ``"torch-cpu"`` runs that same torch code on the CPU (for tests
and comparison). ``"auto"`` (default) uses CUDA only when it should win *including* its
start-up, see :func:`choose_device` for the rule.

Progress and cancellation: ``progress(done_bytes, total_bytes)`` is called at most ~20 times a
second plus once at the end (bytes of both sides' tensors). ``on_result(target, TensorStats)`` is
called for each target as soon as all its chunks are done, from the thread that called
:func:`compute_stats`. When ``cancel`` (a ``threading.Event``) is set, the engine stops within one
block and **raises** :class:`Cancelled`, whose ``.partial`` is the :class:`StatsResult` of what was
finished (``cancelled=True``).
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import CheckpointError, UsageError
from .pool import run_jobs

OVERFLOW16 = 65520.0   # |x| >= this becomes Inf in a round-to-nearest cast to float16

DEFAULT_CHUNK_ELEMS = 1 << 22        # elements per job (CPU) / per packed chunk (torch)
_BLOCK = 1 << 18                     # elements per block of the CPU kernel (a few MB of scratch)
_SMALL = 1 << 16                     # tensors below this many elements are packed together (CPU)
_PACK = 1 << 18                      # elements per packed job of small tensors (CPU)
_ROW = 4096                          # fp32 sums of squares per 4096 elements, added in fp64
_SEG = 1024                          # torch path: segment alignment, one partial per 1024 elements
_TINY = 1e-30                        # fp32 sums below this may have underflowed: redo in fp64
_PROGRESS_INTERVAL = 0.05            # seconds between progress calls (<= 20 per second)
_FORK_MIN_BYTES = 64 << 20           # below this, worker processes cost more than they save

# auto-device model (see choose_device): CPU measured on a 2-core EPYC VM, rounded down; GPU estimated
_CPU_BYTES_PER_S_PER_CORE = 3.0e9
_GPU_BYTES_PER_S = 6.0e9             # pinned-buffer fill + PCIe, not the GPU, is the limit
_TORCH_IMPORT_S = 1.2
_CUDA_INIT_S = 1.3

# slots of a partial-result vector
_P, _F, _D, _MAXD, _CHG, _NANP, _INFP, _OVFP, _NANF, _INFF, _OVFF = range(11)
_NSLOTS = 11

_FAST_KINDS = frozenset({"f16", "bf16", "f32"})


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


# --------------------------------------------------------------------------------------------
# planning: which targets, which kernels, how many bytes
# --------------------------------------------------------------------------------------------

def _kind(dtype: str) -> str | None:
    if dtype == "float16":
        return "f16"
    if dtype == "bfloat16":
        return "bf16"
    if dtype == "float32":
        return "f32"
    if dtype == "float64":
        return "f64"
    if dtype in ("int64", "int32", "int16", "int8", "uint8", "bool", "uint16", "uint32", "uint64"):
        return "int"
    return None   # complex, float8: not compared


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


def _empty_part() -> np.ndarray:
    return np.zeros(_NSLOTS, dtype=np.float64)


def _merge(into: np.ndarray, part: np.ndarray) -> None:
    m = max(into[_MAXD], part[_MAXD])
    into += part
    into[_MAXD] = m


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


def _sources(pre_ck, ft_ck, t: _Target, side: str, files: "_Files") -> tuple:
    """``(pre _Src | None, ft _Src | None)`` of a piece of `t` (both paths)."""
    sa = sb = None
    if side in ("pair", "pre"):
        sa = files.src(pre_ck, t.pre_key, _flat(pre_ck, t.pre_key), t.kind_pre)
    if side in ("pair", "ft"):
        sb = files.src(ft_ck, t.ft_key, _flat(ft_ck, t.ft_key), t.kind_ft)
    return sa, sb


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


# --------------------------------------------------------------------------------------------
# result assembly (shared by both paths)
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# the CPU path: numpy over pread blocks (or the mapping), no torch
# --------------------------------------------------------------------------------------------

def _flat(ck, key: str) -> np.ndarray:
    arr = ck.array(key)
    return arr.reshape(-1)   # a view for contiguous tensors; strided ones get copied (rare)


_F16_SCALE = np.float32(2.0 ** 112)   # 2**(127 - 15): re-biases a half exponent moved into a float
_SIGN_AND_LOW28 = np.int32(-0x70000001)   # 0x8FFFFFFF: clears bits 28-30 that sign extension set
_F16_SPECIAL_SUMSQ = 65536.0 * 65536.0   # a block holding a half inf/NaN has a sum of squares >= this


def _f16_to_f32_finite(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float16 bits (any 16-bit view) -> float32 in `out`: exact for every finite half, 4 passes.

    Why not numpy's cast: it has no SIMD loop for halves here (1.2 ns per element); these four
    whole-array integer/float ufuncs run at ~0.18 ns. The half is sign-extended into an int32,
    shifted so its exponent and mantissa sit in float position (the sign lands on bit 31, the
    extension's ones on bits 28-30, which are cleared), and one exact multiply by 2**112 re-biases
    the exponent, which also turns half subnormals into the right normal floats. Half inf/NaN
    (exponent 31) come out as finite values with ``|x| >= 65536``: callers that may see them use
    :func:`f16_bits_to_f32` or check the block's sum of squares against ``_F16_SPECIAL_SUMSQ``.
    """
    bits = out.view(np.int32)
    np.copyto(bits, h.view(np.int16), casting="unsafe")   # sign-extends
    np.left_shift(bits, 13, out=bits)
    np.bitwise_and(bits, _SIGN_AND_LOW28, out=bits)
    np.multiply(out, _F16_SCALE, out=out)
    return out


def f16_bits_to_f32(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float16 bits -> float32 in `out`, bit-exact for all 65,536 patterns (inf and NaN payloads too)."""
    _f16_to_f32_finite(h, out)
    if out.size and (out.max() >= 65536.0 or out.min() <= -65536.0):   # only exponent 31 lands here
        u = h.view(np.uint16)
        special = (u & 0x7C00) == 0x7C00
        sp = u[special].astype(np.uint32)
        out.view(np.uint32)[special] = ((sp & 0x8000) << 16) | ((sp & 0x3FF) << 13) | 0x7F800000
    return out


def _to_f32_into(src: np.ndarray, kind: str, out: np.ndarray) -> np.ndarray:
    """`src` of `kind` as fp32 in `out` (same shape); an fp32 source already there is left alone.

    f16 specials (inf/NaN) are left as huge finite values: see :func:`_f16_to_f32_finite`.
    """
    if kind == "f32":
        if not np.may_share_memory(src, out):
            np.copyto(out, src)
        return out
    if kind == "f16":
        return _f16_to_f32_finite(src, out)
    # bf16: the bits are the top half of a float32
    np.left_shift(src, 16, out=out.view(np.uint32), dtype=np.uint32)
    return out


def read_f64(ck, key: str, what: str = "") -> np.ndarray:
    """The exact fp64 values of tensor `key`, flattened (the embedding rows and spectra read this).

    Raises:
        UsageError: a dtype that is not compared (complex, float8); `what` prefixes the message.
    """
    dtype = ck.weights[key].dtype
    kind = _kind(dtype)
    if kind is None:
        raise UsageError(f"{what}{key}: dtype {dtype} is not compared")
    return _to_f64(_flat(ck, key), kind)


def _to_f64(src: np.ndarray, kind: str) -> np.ndarray:
    """A float64 copy of a flat tensor of `kind` (exact for every kind)."""
    if kind == "f16":   # through the bit conversion (exact, specials too): numpy's f16 cast is 1.2 ns/element
        f32 = f16_bits_to_f32(src, np.empty(src.shape, np.float32))
        with np.errstate(invalid="ignore"):   # a signalling NaN payload warns in the f32 -> f64 cast
            return f32.astype(np.float64)
    if kind == "bf16":
        return (src.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return src.astype(np.float64)


def _exact(a: np.ndarray | None, b: np.ndarray | None, starts: np.ndarray,
           a16: bool, b16: bool) -> np.ndarray:
    """fp64 partials per segment (rows), NaN/Inf aware. a, b: float64 arrays (None = absent).

    First without any NaN/Inf handling (half the passes): when every sum comes out finite there
    was no NaN or Inf to handle, otherwise :func:`_exact_nan_aware` redoes it.
    """
    out = np.zeros((len(starts), _NSLOTS), dtype=np.float64)
    with np.errstate(all="ignore"):
        if a is not None:
            out[:, _P] = np.add.reduceat(a * a, starts)
        if b is not None:
            out[:, _F] = np.add.reduceat(b * b, starts)
        d = b - a if a is not None and b is not None else None
        if d is not None:
            out[:, _D] = np.add.reduceat(d * d, starts)
    if not np.isfinite(out[:, (_P, _F, _D)]).all():
        return _exact_nan_aware(a, b, starts, a16, b16)
    for x, is16, s_sq, s_ovf in ((a, a16, _P, _OVFP), (b, b16, _F, _OVFF)):
        if x is not None and not is16 and (out[:, s_sq] >= OVERFLOW16 * OVERFLOW16).any():
            out[:, s_ovf] = np.add.reduceat(np.abs(x) >= OVERFLOW16, starts, dtype=np.int64)
    if d is not None:
        out[:, _MAXD] = np.maximum.reduceat(np.abs(d), starts)
        out[:, _CHG] = np.add.reduceat(d != 0, starts, dtype=np.int64)
    return out


def _exact_nan_aware(a: np.ndarray | None, b: np.ndarray | None, starts: np.ndarray,
                     a16: bool, b16: bool) -> np.ndarray:
    """:func:`_exact` for data holding NaN or Inf: NaN-excluded norms, counts, Inf kept."""
    out = np.zeros((len(starts), _NSLOTS), dtype=np.float64)
    masks = []
    for x, is16, (s_sq, s_nan, s_inf, s_ovf) in ((a, a16, (_P, _NANP, _INFP, _OVFP)),
                                                  (b, b16, (_F, _NANF, _INFF, _OVFF))):
        if x is None:
            masks.append(None)
            continue
        nan = np.isnan(x)
        inf = np.isinf(x)
        x0 = np.where(nan, 0.0, x)
        out[:, s_sq] = np.add.reduceat(x0 * x0, starts)
        out[:, s_nan] = np.add.reduceat(nan, starts, dtype=np.int64)
        out[:, s_inf] = np.add.reduceat(inf, starts, dtype=np.int64)
        if not is16:
            out[:, s_ovf] = np.add.reduceat((np.abs(x0) >= OVERFLOW16) & ~inf, starts, dtype=np.int64)
        masks.append(nan)
    if a is not None and b is not None:
        with np.errstate(invalid="ignore"):
            d = b - a
        d = np.where(np.isnan(d), 0.0, d)
        out[:, _D] = np.add.reduceat(d * d, starts)
        out[:, _MAXD] = np.maximum.reduceat(np.abs(d), starts)
        same = (a == b) | (masks[0] & masks[1])
        out[:, _CHG] = np.add.reduceat(~same, starts, dtype=np.int64)
    return out


class _Scratch:
    """Per-process buffers of the CPU kernel, laid out so one call handles both sides at once.

    ``f`` holds a block's pre, ft and difference rows in fp32: fp32 sources are read straight
    into its first two rows, 16-bit ones into the rows of ``h`` and converted from there.
    """

    def __init__(self):
        self.f = np.empty((3, _BLOCK), np.float32)
        self.h = np.empty((2, _BLOCK), np.uint16)
        self.m = np.empty(_BLOCK, np.bool_)

    def target(self, row: int, kind: str) -> np.ndarray:
        """The bytes a block of `kind` for side `row` (0 pre, 1 ft) is read into."""
        return (self.f[row] if kind == "f32" else self.h[row]).view(np.uint8)


@dataclass(slots=True, frozen=True)
class _Src:
    """One side of a CPU job: the mapped flat array, and where to ``pread`` it from if possible.

    Reading a block with ``pread`` into a reused buffer costs about half of faulting the same
    pages of the mapping in, and leaves the block in cache for the kernel.
    """

    arr: np.ndarray                  # flat view of the mapping (dtype, length; the fallback)
    fd: int | None = None            # an fd of the same file, when it can be read that way
    offset: int = 0                  # file offset of element 0
    path: str = ""

    def block(self, i: int, j: int, raw: np.ndarray) -> np.ndarray:
        """Elements [i, j) as an array of the source's dtype (a view of `raw` when read)."""
        if self.fd is None:
            return self.arr[i:j]
        size = self.arr.itemsize
        view = raw[:(j - i) * size]
        got, want, off = 0, view.shape[0], self.offset + i * size
        while got < want:
            n = os.preadv(self.fd, [view[got:]], off + got)
            if n == 0:
                raise CheckpointError(self.path, "file shrank while being read (changed by another program?)")
            got += n
        return view.view(self.arr.dtype)


class _Files:
    """Read-only fds of the checkpoints' files for ``pread``, proven to be the files mapped.

    A path that now names another file (replaced since it was opened) is read through its
    mapping, which still holds the file that was opened. The same file changed in place reads
    the same either way, but ``pread`` turns a truncated file into a clean error where the
    mapping would die of SIGBUS.
    """

    def __init__(self, *cks):
        self.fds: dict[int, int | None] = {}
        for ck in cks:
            if id(ck) not in self.fds:
                self.fds[id(ck)] = self._open(ck)

    @staticmethod
    def _open(ck) -> int | None:
        ident = getattr(ck, "file_id", None)
        if ident is None or not hasattr(os, "preadv"):
            return None
        try:
            fd = os.open(ck.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != tuple(ident[:2]):
            os.close(fd)
            return None
        if st.st_size < ident[2]:     # touching the mapping past the new end would be a SIGBUS
            os.close(fd)
            raise CheckpointError(ck.path, "file shrank since it was opened (changed by another program?)")
        return fd

    def src(self, ck, key: str, arr: np.ndarray, kind: str) -> _Src:
        fd = self.fds.get(id(ck))
        span = ck.span(key) if fd is not None and kind in _FAST_KINDS else None
        if span is None or span[1] != arr.nbytes:
            return _Src(arr)
        return _Src(arr, fd, span[0], str(ck.path))

    def close(self) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)
        self.fds.clear()


_ZERO_START = np.zeros(1, dtype=np.intp)


_vecdot = getattr(np, "vecdot", None)


def _sumsq_rows(x: np.ndarray) -> list[float]:
    """fp64 sums of squares of each row of a 2-D fp32 array, accurate to ~1e-7 relative.

    fp32 dot products over runs of 4096 elements, added up in fp64 (a single fp32 dot product
    over a long vector drifts past 1e-6); one call for all rows.
    """
    k, n = x.shape
    m = n - n % _ROW
    out = np.zeros(k, dtype=np.float64)
    if m:
        out += _rowdot(x[:, :m].reshape(k, -1, _ROW)).sum(axis=1, dtype=np.float64)
    if m < n:
        out += _rowdot(x[:, m:])
    return out.tolist()


def _rowdot(x: np.ndarray) -> np.ndarray:
    if _vecdot is not None:
        return _vecdot(x, x)
    return np.einsum("...j,...j->...", x, x)


def _ovf_count(x: np.ndarray, sumsq: float) -> int:
    # sum of squares below 65520^2 proves every |x| < 65520: the common case costs nothing
    if sumsq < OVERFLOW16 * OVERFLOW16:
        return 0
    return int(np.count_nonzero(np.abs(x) >= OVERFLOW16))


def _side_tiny(x: np.ndarray, s: float) -> bool:
    """True when an fp32 sum of squares may have underflowed (non-zero values, ~0 sum)."""
    return s < _TINY and (float(x.max()) != 0.0 or float(x.min()) != 0.0)


def _cpu_pair(sa: _Src, sb: _Src, ka, kb, lo, hi, cancel, sc: _Scratch) -> np.ndarray:
    part = _empty_part()
    fast = ka in _FAST_KINDS and kb in _FAST_KINDS
    P = F = D = maxd = 0.0
    changed = ovf_a = ovf_b = 0
    with np.errstate(all="ignore"):   # inf - inf, overflowing squares: the exact path redoes those blocks
        for i in range(lo, hi, _BLOCK):
            if cancel is not None and cancel.is_set():
                break
            j = min(i + _BLOCK, hi)
            a_raw, b_raw = sa.block(i, j, sc.target(0, ka)), sb.block(i, j, sc.target(1, kb))
            r = _pair_block(a_raw, b_raw, ka, kb, j - i, sc) if fast else None
            if r is None:
                _merge(part, _exact(_to_f64(a_raw, ka), _to_f64(b_raw, kb), _ZERO_START, ka == "f16", kb == "f16")[0])
                continue
            P += r[0]
            F += r[1]
            D += r[2]
            maxd = max(maxd, r[3])
            changed += r[4]
            ovf_a += r[5]
            ovf_b += r[6]
    _merge(part, np.array([P, F, D, maxd, changed, 0, 0, ovf_a, 0, 0, ovf_b], dtype=np.float64))
    return part


def _pair_block(a_raw, b_raw, ka, kb, n, sc: _Scratch) -> tuple | None:
    """fp32 statistics of one block: ``(P, F, D, max|Δ|, changed, overflow pre, overflow ft)``.

    None when the block needs the fp64 path (non-finite or underflowing sums, fp16 inf/NaN).
    """
    f = sc.f[:, :n]
    if ka == kb and ka != "f32" and np.may_share_memory(a_raw, sc.h) and np.may_share_memory(b_raw, sc.h):
        _to_f32_into(sc.h[:, :n], ka, f[0:2])      # both sides in one set of calls
    else:
        _to_f32_into(a_raw, ka, f[0])
        _to_f32_into(b_raw, kb, f[1])
    a, b, d = f
    np.subtract(b, a, out=d)
    P, F, D = _sumsq_rows(f)
    a16, b16 = ka == "f16", kb == "f16"
    if not math.isfinite(P + F + D) or (a16 and P >= _F16_SPECIAL_SUMSQ) or (b16 and F >= _F16_SPECIAL_SUMSQ):
        return None
    if _side_tiny(a, P) or _side_tiny(b, F):
        return None
    dmax, dmin = float(d.max()), float(d.min())
    if D < _TINY and (dmax != 0.0 or dmin != 0.0):
        return None
    changed = int(np.count_nonzero(np.not_equal(d, 0, out=sc.m[:n])))
    return (P, F, D, max(dmax, -dmin), changed,
            0 if a16 else _ovf_count(a, P), 0 if b16 else _ovf_count(b, F))


def _cpu_side(sx: _Src, kind, side, lo, hi, cancel, sc: _Scratch) -> np.ndarray:
    part = _empty_part()
    is16 = kind == "f16"
    s_sq, s_ovf = (_P, _OVFP) if side == "pre" else (_F, _OVFF)
    with np.errstate(all="ignore"):
        for i in range(lo, hi, _BLOCK):
            if cancel is not None and cancel.is_set():
                return part
            j = min(i + _BLOCK, hi)
            raw = sx.block(i, j, sc.target(0, kind))
            if kind in _FAST_KINDS:
                x = _to_f32_into(raw, kind, sc.f[0, :j - i])
                s = _sumsq_rows(sc.f[0:1, :j - i])[0]
                if math.isfinite(s) and not _side_tiny(x, s) and not (is16 and s >= _F16_SPECIAL_SUMSQ):
                    part[s_sq] += s
                    if not is16:
                        part[s_ovf] += _ovf_count(x, s)
                    continue
            x64 = _to_f64(raw, kind)
            r = _exact(x64, None, _ZERO_START, is16, False)[0] if side == "pre" else \
                _exact(None, x64, _ZERO_START, False, is16)[0]
            _merge(part, r)
    return part


def _cpu_packed(items) -> list[tuple[int, np.ndarray]]:
    """Many small tensors of one mode at once (one numpy call per statistic for all of them).

    items: (target_idx, side, pre_arr | None, pre_kind, ft_arr | None, ft_kind); side is "pair",
    "pre" or "ft". Grouping is by side so each call sees the same set of arrays. fp16/bf16/fp32
    tensors go through fp32 with fp64 sums of exact fp64 squares; other dtypes, and groups
    holding NaN or Inf, through :func:`_exact` in fp64.
    """
    out = []
    for side in ("pair", "pre", "ft"):
        group = [it for it in items if it[1] == side]
        if not group:
            continue
        lens = [(it[2] if it[2] is not None else it[4]).shape[0] for it in group]
        starts = np.zeros(len(group), dtype=np.intp)
        np.cumsum(lens[:-1], out=starts[1:])
        a16 = np.array([it[3] == "f16" for it in group])
        b16 = np.array([it[5] == "f16" for it in group])
        need_a, need_b = side in ("pair", "pre"), side in ("pair", "ft")
        a = _packed_f32([(it[2], it[3]) for it in group], sum(lens)) if need_a else None
        b = _packed_f32([(it[4], it[5]) for it in group], sum(lens)) if need_b else None
        rows = None
        if (a is not None or not need_a) and (b is not None or not need_b):
            rows = _packed_rows(a, b, starts)
        if rows is None:
            a = np.concatenate([_to_f64(it[2], it[3]) for it in group]) if need_a else None
            b = np.concatenate([_to_f64(it[4], it[5]) for it in group]) if need_b else None
            rows = _exact(a, b, starts, False, False)
        # fp16 sides cannot overflow fp16; the packed call counted them generically (always 0)
        rows[a16, _OVFP] = 0
        rows[b16, _OVFF] = 0
        out.extend((it[0], rows[k]) for k, it in enumerate(group))
    return out


def _packed_f32(parts, n: int) -> np.ndarray | None:
    """The tensors one after another as fp32 (exact: inf/NaN kept); None if a dtype does not fit."""
    out = np.empty(n, np.float32)
    pos = 0
    for arr, kind in parts:
        m = arr.shape[0]
        dst = out[pos:pos + m]
        if kind == "f16":
            f16_bits_to_f32(arr, dst)
        elif kind in _FAST_KINDS:
            _to_f32_into(arr, kind, dst)
        else:
            return None
        pos += m
    return out


def _packed_rows(a: np.ndarray | None, b: np.ndarray | None, starts: np.ndarray) -> np.ndarray | None:
    """Per-segment partials of fp32 data without NaN/Inf (None when a sum says there is some).

    Squares are taken in fp64, where the square of an fp32 value is exact and cannot underflow,
    and summed in fp64; Δ is rounded to fp32 as in the block kernel.
    """
    out = np.zeros((len(starts), _NSLOTS), dtype=np.float64)
    d = None
    with np.errstate(all="ignore"):
        if a is not None:
            out[:, _P] = np.add.reduceat(np.square(a, dtype=np.float64), starts)
        if b is not None:
            out[:, _F] = np.add.reduceat(np.square(b, dtype=np.float64), starts)
        if a is not None and b is not None:
            d = b - a
            out[:, _D] = np.add.reduceat(np.square(d, dtype=np.float64), starts)
    if not np.isfinite(out[:, (_P, _F, _D)]).all():
        return None
    for x, s_sq, s_ovf in ((a, _P, _OVFP), (b, _F, _OVFF)):
        if x is not None and (out[:, s_sq] >= OVERFLOW16 * OVERFLOW16).any():
            out[:, s_ovf] = np.add.reduceat(np.abs(x) >= OVERFLOW16, starts, dtype=np.int64)
    if d is not None:
        out[:, _MAXD] = np.maximum.reduceat(np.abs(d), starts)
        out[:, _CHG] = np.add.reduceat(d != 0, starts, dtype=np.int64)
    return out


def _cpu_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


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


def _cpu_jobs(targets: list[_Target], chunk_elems: int) -> list[tuple]:
    """Cut the work into jobs: ``(kind, args, [(target_idx, bytes)])``, kind "pair" | "side" | "packed".

    Tensors of at least ``_SMALL`` elements become jobs of up to `chunk_elems` elements read
    block by block (args ``(target_idx, side, lo, hi)``); smaller ones are packed together into
    fp64 jobs of about ``_PACK`` elements (args ``[(target_idx, side)]``).
    """
    jobs: list[tuple] = []
    small: list[tuple] = []
    small_n = 0
    small_bytes: list[tuple[int, int]] = []

    def flush_small():
        nonlocal small, small_n, small_bytes
        if small:
            jobs.append(("packed", small, small_bytes))
        small, small_n, small_bytes = [], 0, []

    step = max(_BLOCK, (chunk_elems // _BLOCK) * _BLOCK)
    for t in targets:
        for side, _, _, n, nbytes in _pieces(t):
            if n < _SMALL:
                t.pending += 1
                small.append((t.idx, side))
                small_bytes.append((t.idx, nbytes))
                small_n += n
                if small_n >= _PACK:
                    flush_small()
                continue
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                t.pending += 1
                share = nbytes * hi // n - nbytes * lo // n
                jobs.append(("pair" if side == "pair" else "side", (t.idx, side, lo, hi), [(t.idx, share)]))
    flush_small()
    return jobs


class _CpuWorker:
    """Runs CPU jobs in whichever process took them: its own buffers, and the sources of the
    target at hand (a tensor's jobs come in a row, so one is kept)."""

    def __init__(self, pre_ck, ft_ck, targets, files: _Files, cancel):
        self.pre_ck, self.ft_ck, self.targets, self.files, self.cancel = pre_ck, ft_ck, targets, files, cancel
        self.pid = -1
        self.scratch: _Scratch | None = None
        self.current: tuple | None = None

    def __call__(self, job: tuple) -> list[tuple[int, np.ndarray]]:
        if self.pid != os.getpid():                 # first job here (a forked worker: its own buffers)
            self.pid, self.scratch, self.current = os.getpid(), _Scratch(), None
        kind, args, _ = job
        if kind == "packed":
            return _cpu_packed([self._arrays(idx, side) for idx, side in args])
        idx, side, lo, hi = args
        t = self.targets[idx]
        if self.current is None or self.current[0] != (idx, side):
            self.current = ((idx, side), _sources(self.pre_ck, self.ft_ck, t, side, self.files))
        sa, sb = self.current[1]
        if kind == "pair":
            return [(idx, _cpu_pair(sa, sb, t.kind_pre, t.kind_ft, lo, hi, self.cancel, self.scratch))]
        sx, k = (sa, t.kind_pre) if side == "pre" else (sb, t.kind_ft)
        return [(idx, _cpu_side(sx, k, side, lo, hi, self.cancel, self.scratch))]

    def _arrays(self, idx: int, side: str) -> tuple:
        t = self.targets[idx]
        a = _flat(self.pre_ck, t.pre_key) if side in ("pair", "pre") else None
        b = _flat(self.ft_ck, t.ft_key) if side in ("pair", "ft") else None
        return (idx, side, a, t.kind_pre if a is not None else None, b, t.kind_ft if b is not None else None)


def _run_cpu(pre_ck, ft_ck, targets: list[_Target], chunk_elems: int, prog: _Progress,
             cancel, emit) -> None:
    """Run the jobs on this thread and, for big inputs, on forked workers; merge results here."""
    jobs = _cpu_jobs(targets, chunk_elems)
    # targets with nothing to read (all sides empty) are done now
    for t in targets:
        if t.mode != "skip" and t.pending == 0:
            emit(t)
    files = _Files(pre_ck, ft_ck)
    try:
        worker = _CpuWorker(pre_ck, ft_ck, targets, files, cancel)
        nbytes = sum(b for job in jobs for _, b in job[2])
        run_jobs(len(jobs), lambda i: worker(jobs[i]), lambda i, rows: _absorb(jobs[i], rows, targets, prog, emit),
                 processes=_cpu_workers() if nbytes >= _FORK_MIN_BYTES else 1, width=_NSLOTS, cancel=cancel)
    finally:
        files.close()


def _absorb(job, results, targets, prog: _Progress, emit) -> None:
    for idx, part in results:
        t = targets[idx]
        _merge(t.part, part)
        t.pending -= 1
        if t.pending == 0:
            emit(t)
    prog.add(sum(b for _, b in job[2]))


# --------------------------------------------------------------------------------------------
# device choice
# --------------------------------------------------------------------------------------------

def _cuda_driver_present() -> bool:
    """Cheap hint (no torch import) that an NVIDIA driver is loaded."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def choose_device(device: str, total_bytes: int) -> str:
    """Resolve ``device`` to ``"cpu"``, ``"cuda"`` or ``"torch-cpu"``.

    The ``"auto"`` rule: the CPU path streams ~3 GB/s per core (up to 8 cores; measured 3.5-4.8 on
    a 2-core EPYC VM); the CUDA path streams ~6 GB/s (limited by filling pinned buffers and PCIe,
    an estimate: no GPU was lent to measure it) after a start-up of ~1.2 s to import torch (0 if
    already imported) and ~1.3 s to initialise CUDA (0 if already initialised). CUDA is chosen
    when a driver is present, torch reports CUDA available, and its estimated time including
    start-up is below 80 % of the CPU estimate. On one core that needs ~25 GB of tensors; with two
    or more the CPU path always wins: reading the bytes, not the arithmetic, is the limit, and the
    GPU is fed through the same reads plus PCIe.
    """
    if device in ("cpu", "torch-cpu"):
        return device
    if device == "cuda":
        ok, why = _cuda_available()
        if not ok:
            raise UsageError(f"device 'cuda' requested but CUDA is not available ({why}); use --device cpu")
        return "cuda"
    if device != "auto":
        raise UsageError(f"unknown device {device!r} (use auto, cpu or cuda)")
    torch = sys.modules.get("torch")
    if torch is None and not _cuda_driver_present():
        return "cpu"
    startup = 0.0
    if torch is None:
        startup += _TORCH_IMPORT_S + _CUDA_INIT_S
    elif not (hasattr(torch, "cuda") and torch.cuda.is_initialized()):
        startup += _CUDA_INIT_S
    cpu_s = total_bytes / (_CPU_BYTES_PER_S_PER_CORE * _cpu_workers())
    gpu_s = startup + total_bytes / _GPU_BYTES_PER_S
    if gpu_s >= 0.8 * cpu_s:
        return "cpu"
    ok, _ = _cuda_available()
    return "cuda" if ok else "cpu"


def _cuda_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:   # pragma: no cover - torch is a dependency
        return False, f"torch not importable: {exc}"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device"
    return True, ""


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

def compute_stats(pre_ck, ft_ck, triples, *, device: str = "auto", progress: Callable | None = None,
                  cancel: threading.Event | None = None, on_result: Callable | None = None,
                  chunk_elems: int | None = None) -> StatsResult:
    """Norms, deltas and health of every target in `triples`; see the module docstring.

    Args:
        pre_ck, ft_ck: Checkpoints (only ``.weights`` and ``.array(key)`` are used).
        triples: ``(target, pre_key | None, ft_key | None)`` as from ``Alignment.triples()``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"torch-cpu"``.
        progress: ``progress(done_bytes, total_bytes)``, at most ~20 calls/s plus a final one.
        cancel: set it to stop; the call then raises :class:`Cancelled` carrying partial results.
        on_result: ``on_result(target, TensorStats)`` as each target completes.
        chunk_elems: elements per job (CPU) or per packed device chunk (torch paths).

    Raises:
        UsageError: unknown device, ``cuda`` without CUDA, or a key missing from a checkpoint.
        Cancelled: `cancel` was set before the run finished.
    """
    t0 = time.perf_counter()
    targets = _plan(pre_ck, ft_ck, list(triples))
    total = sum(t.nbytes for t in targets)
    dev = choose_device(device, total)
    if chunk_elems is None:
        chunk_elems = DEFAULT_CHUNK_ELEMS if dev == "cpu" else (1 << 23)
    chunk_elems = max(_SEG, int(chunk_elems))
    prog = _Progress(progress, total)
    finished: dict[int, TensorStats] = {}

    def emit(t: _Target) -> None:
        ts = _finish(t)
        finished[t.idx] = ts
        if on_result is not None:
            on_result(t.target, ts)

    for t in targets:
        if t.mode == "skip":
            emit(t)
    if dev == "cpu":
        _run_cpu(pre_ck, ft_ck, targets, chunk_elems, prog, cancel, emit)
    else:
        _run_torch(pre_ck, ft_ck, targets, dev, chunk_elems, prog, cancel, emit)
    prog.final()
    cancelled = cancel is not None and cancel.is_set() and len(finished) < len(targets)
    per_key = {targets[i].target: finished[i] for i in sorted(finished)}
    result = StatsResult(per_key, dev, time.perf_counter() - t0, prog.done, cancelled, total)
    result.notes = [f"{ts.target}: {ts.note}" for ts in per_key.values() if ts.note]
    if cancelled:
        raise Cancelled(result)
    return result


# --------------------------------------------------------------------------------------------
# the torch path (CUDA; "torch-cpu" runs the same code on the CPU for tests)
# --------------------------------------------------------------------------------------------

_HOST_DTYPES = {"f16": np.float16, "bf16": np.uint16, "f32": np.float32, "f64": np.float64, "int": np.float64}


class _HostSet:
    """Two host staging buffers (pre, ft) of `nbytes` each; pinned when made after CUDA init."""

    def __init__(self, nbytes: int, torch=None, pinned: bool = False):
        self.pinned = pinned
        if torch is not None:
            self.ta = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
            self.tb = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
            self.a, self.b = self.ta.numpy(), self.tb.numpy()
        else:
            self.ta = self.tb = None
            self.a, self.b = np.empty(nbytes, np.uint8), np.empty(nbytes, np.uint8)


@dataclass(slots=True)
class _Chunk:
    hs: _HostSet
    mode: str                       # "pair" | "pre" | "ft"
    ka: str | None
    kb: str | None
    n: int                          # elements used, a multiple of _SEG
    segs: list                      # (target_idx, offset, length, bytes, is_last)


def _torch_groups(pre_ck, ft_ck, targets, files: _Files) -> dict[tuple, list]:
    """Pieces to read per (mode, pre kind, ft kind): ``(target_idx, pre _Src | None, ft _Src | None)``."""
    groups: dict[tuple, list] = {}
    for t in targets:
        for mode, ka, kb, _, _ in _pieces(t):
            t.pending += 1
            groups.setdefault((mode, ka, kb), []).append((t.idx, *_sources(pre_ck, ft_ck, t, mode, files)))
    return groups


def _produce(groups, chunk: int, free_q: queue.Queue, ready_q: queue.Queue, stop: threading.Event,
             cancel) -> None:
    """Reader thread: read tensors into staging buffers, each byte once, packed per dtype pair.

    Same-dtype sources with an fd are ``pread`` straight into the (pinned) staging buffer: no
    page faults and no second copy; the others are copied (and cast) from the mapping.
    """

    def get_free() -> _HostSet | None:
        while not stop.is_set() and not (cancel is not None and cancel.is_set()):
            try:
                return free_q.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def put(msg) -> bool:
        while not stop.is_set():
            try:
                ready_q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for (mode, ka, kb), items in groups.items():
            da = np.dtype(_HOST_DTYPES[ka]) if ka else None
            db = np.dtype(_HOST_DTYPES[kb]) if kb else None
            cur: _Chunk | None = None
            for tidx, sa, sb in items:
                n = (sa if sa is not None else sb).arr.shape[0]
                nbytes = sum(x.arr.nbytes for x in (sa, sb) if x is not None)
                pos = 0
                while pos < n:
                    if cur is None:
                        hs = get_free()
                        if hs is None:
                            return
                        cur = _Chunk(hs, mode, ka, kb, 0, [])
                    take = min(n - pos, chunk - cur.n)
                    pad = (-take) % _SEG
                    for src, buf, dt in ((sa, cur.hs.a, da), (sb, cur.hs.b, db)):
                        if src is None:
                            continue
                        view = buf[: chunk * dt.itemsize].view(dt)
                        dst = view[cur.n:cur.n + take]
                        if src.fd is not None and src.arr.dtype == dt:
                            src.block(pos, pos + take, dst.view(np.uint8))
                        else:
                            np.copyto(dst, src.arr[pos:pos + take], casting="unsafe")
                        if pad:
                            view[cur.n + take:cur.n + take + pad] = 0
                    share = nbytes * (pos + take) // n - nbytes * pos // n
                    cur.segs.append((tidx, cur.n, take, share, pos + take == n))
                    cur.n += take + pad
                    pos += take
                    if cur.n >= chunk:
                        if not put(cur):
                            return
                        cur = None
            if cur is not None:
                if not put(cur):
                    return
        put(None)
    except BaseException as exc:   # surfaced by the consumer
        put(exc)


def _dev64(torch, raw, kind):
    if kind == "bf16":
        return raw.view(torch.int16).view(torch.bfloat16).double()
    return raw.double()


def _torch_partials(torch, a, b, ka, kb):
    """(nblocks, 11) partials and per-block max|Δ| for (nblocks, _SEG) fp64 blocks a, b (None = absent)."""
    f64 = torch.float64
    like = a if a is not None else b
    cols = [torch.zeros(like.shape[0], dtype=f64, device=like.device)] * _NSLOTS
    nanm = []
    for x, k, (s_sq, s_nan, s_inf, s_ovf) in ((a, ka, (_P, _NANP, _INFP, _OVFP)), (b, kb, (_F, _NANF, _INFF, _OVFF))):
        if x is None:
            nanm.append(None)
            continue
        nan = torch.isnan(x)
        inf = torch.isinf(x)
        cols[s_nan] = nan.sum(1, dtype=f64)
        cols[s_inf] = inf.sum(1, dtype=f64)
        x0 = torch.where(nan, 0.0, x)
        cols[s_sq] = (x0 * x0).sum(1)
        if k != "f16":
            cols[s_ovf] = ((x0.abs() >= OVERFLOW16) & ~inf).sum(1, dtype=f64)
        nanm.append(nan)
    maxd = None
    if a is not None and b is not None:
        d = b - a
        d = torch.where(torch.isnan(d), 0.0, d)
        cols[_D] = (d * d).sum(1)
        maxd = d.abs().amax(1)
        same = (a == b) | (nanm[0] & nanm[1])
        cols[_CHG] = (~same).sum(1, dtype=f64)
    return torch.stack(cols, dim=1), maxd


def _run_torch(pre_ck, ft_ck, targets, dev: str, chunk_elems: int, prog: _Progress, cancel, emit) -> None:
    chunk = max(_SEG, (chunk_elems // _SEG) * _SEG)
    files = _Files(pre_ck, ft_ck)
    try:
        groups = _torch_groups(pre_ck, ft_ck, targets, files)
        for t in targets:
            if t.mode != "skip" and t.pending == 0:
                emit(t)
        if groups:
            _stream_torch(groups, targets, dev, chunk, prog, cancel, emit)
    finally:
        files.close()


def _stream_torch(groups, targets, dev: str, chunk: int, prog: _Progress, cancel, emit) -> None:
    """A reader thread fills staging buffers while this thread moves and reduces them with torch."""
    itemsize = max(np.dtype(_HOST_DTYPES[k]).itemsize for g in groups for k in g[1:] if k)
    free_q: queue.Queue = queue.Queue()
    ready_q: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()
    # Two plain buffers let the reader start before torch is even imported: CUDA start-up
    # (import ~1.1 s, context ~1 s) overlaps with reading the first chunks from the files.
    for _ in range(2):
        free_q.put(_HostSet(chunk * itemsize))
    reader = threading.Thread(target=_produce, name="gsv-stats-reader",
                              args=(groups, chunk, free_q, ready_q, stop, cancel), daemon=True)
    reader.start()
    try:
        _consume(targets, dev, chunk, itemsize, free_q, ready_q, prog, cancel, emit)
    finally:
        stop.set()
        reader.join()


def _consume(targets, dev, chunk, itemsize, free_q, ready_q, prog, cancel, emit) -> None:
    import torch

    cuda = dev == "cuda"
    if cuda:
        torch.cuda.init()
        device = torch.device("cuda")
        copy_stream = torch.cuda.Stream()
        for _ in range(2):
            free_q.put(_HostSet(chunk * itemsize, torch, pinned=True))
    else:
        device = torch.device("cpu")
        copy_stream = None
    n_t = len(targets)
    acc = torch.zeros((n_t, _NSLOTS), dtype=torch.float64, device=device)
    accmax = torch.zeros(n_t, dtype=torch.float64, device=device)
    tdt = {"f16": torch.float16, "bf16": torch.int16, "f32": torch.float32, "f64": torch.float64,
           "int": torch.float64}
    lagging = None   # (event, targets completed, bytes) of the previous chunk: read after the next is queued

    def settle(pending) -> None:
        ev, done_idx, nbytes = pending
        if ev is not None:
            ev.synchronize()
        if done_idx:
            idx = torch.tensor(done_idx, dtype=torch.long, device=device)
            rows = acc.index_select(0, idx).cpu().numpy()
            mx = accmax.index_select(0, idx).cpu().numpy()
            for k, ti in enumerate(done_idx):
                t = targets[ti]
                t.part = rows[k].copy()
                t.part[_MAXD] = mx[k]
                emit(t)
        prog.add(nbytes)

    while True:
        if cancel is not None and cancel.is_set():
            return
        try:
            msg = ready_q.get(timeout=0.05)
        except queue.Empty:
            continue
        if msg is None:
            break
        if isinstance(msg, BaseException):
            raise msg
        n = msg.n
        raws = []
        for kind, host_np, host_t in ((msg.ka, msg.hs.a, msg.hs.ta), (msg.kb, msg.hs.b, msg.hs.tb)):
            if kind is None:
                raws.append(None)
                continue
            nb = n * np.dtype(_HOST_DTYPES[kind]).itemsize
            src = host_t[:nb] if host_t is not None else torch.from_numpy(host_np[:nb])
            if cuda:
                with torch.cuda.stream(copy_stream):
                    d = src.to(device, non_blocking=msg.hs.pinned)
                d.record_stream(torch.cuda.current_stream())
            else:
                d = src
            raws.append(d.view(tdt[kind]))
        if cuda:
            copied = torch.cuda.Event()
            copied.record(copy_stream)
            torch.cuda.current_stream().wait_event(copied)
        # block -> target index, for the per-segment reductions
        blk = []
        for tidx, off, length, _, _ in msg.segs:
            blk.extend([tidx] * (-(-length // _SEG)))
        blk_t = torch.tensor(blk, dtype=torch.long).to(device, non_blocking=False)
        a = _dev64(torch, raws[0], msg.ka).view(-1, _SEG) if raws[0] is not None else None
        b = _dev64(torch, raws[1], msg.kb).view(-1, _SEG) if raws[1] is not None else None
        part, maxd = _torch_partials(torch, a, b, msg.ka, msg.kb)
        acc.index_add_(0, blk_t, part)
        if maxd is not None:
            accmax.scatter_reduce_(0, blk_t, maxd, reduce="amax", include_self=True)
        done_idx = []
        for tidx, _, _, _, last in msg.segs:
            if last:
                t = targets[tidx]
                t.pending -= 1
                if t.pending == 0:
                    done_idx.append(tidx)
        nbytes = sum(s[3] for s in msg.segs)
        if cuda:
            copied.synchronize()          # the staging buffer is free once its copy landed
            if msg.hs.pinned:
                free_q.put(msg.hs)
            ev = torch.cuda.Event()
            ev.record()
        else:
            free_q.put(msg.hs)
            ev = None
        del a, b, raws, part, maxd
        if lagging is not None:
            settle(lagging)
        lagging = (ev, done_idx, nbytes)
    if lagging is not None:
        settle(lagging)
