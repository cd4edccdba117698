"""The numpy kernels of the CPU path: dtype conversion and fp64-accurate partial sums.

Reusable on their own (the triage views compute drift across epochs with them):

* :func:`read_f64` ``(ck, key)``: the exact fp64 values of a tensor, flattened;
* :func:`f16_bits_to_f32` ``(h, out)``: float16 bits to float32, bit-exact, ~0.2 ns/element;
* :func:`_to_f64` ``(flat, kind)`` / :func:`_to_f32_into` ``(flat, kind, out)``: casts by kind
  (:func:`_kind` maps a torch dtype name to ``"f16" | "bf16" | "f32" | "f64" | "int"``);
* :func:`_sumsq_rows` ``(x2d)`` / :func:`sumsq_flat` ``(x1d)``: fp64 sums of squares of fp32 rows
  (or of one flat array), ~1e-7 relative;
* :func:`_exact` ``(a, b, starts, a16, b16)``: per-segment partial vectors (slots of
  :mod:`gsvinspect.stats.results`) in fp64, NaN/Inf aware; :func:`_packed_rows` the same for
  fp32 data known to be finite.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .results import (_CHG, _D, _F, _INFF, _INFP, _MAXD, _NANF, _NANP, _NSLOTS, _OVFF, _OVFP, _P,
                      OVERFLOW16)

_ROW = 4096                          # fp32 sums of squares per 4096 elements, added in fp64
_TINY = 1e-30                        # fp32 sums below this may have underflowed: redo in fp64
_FAST_KINDS = frozenset({"f16", "bf16", "f32"})


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


_ZERO_START = np.zeros(1, dtype=np.intp)


_vecdot = getattr(np, "vecdot", None)


def _sumsq_last(x: np.ndarray) -> np.ndarray:
    """fp64 sums of squares of fp32 `x` along its last axis, accurate to ~1e-7 relative.

    fp32 dot products over runs of 4096 elements, added up in fp64 (a single fp32 dot product
    over a long vector drifts past 1e-6); one set of numpy calls for all rows.
    """
    n = x.shape[-1]
    m = n - n % _ROW
    if not m:   # shorter than one run
        return _rowdot(x).astype(np.float64)
    s = _rowdot(x[..., :m].reshape(*x.shape[:-1], -1, _ROW)).sum(axis=-1, dtype=np.float64)
    if m < n:
        s = s + _rowdot(x[..., m:])
    return s


def _sumsq_rows(x: np.ndarray) -> list[float]:
    """:func:`_sumsq_last` of each row of a 2-D fp32 array."""
    return _sumsq_last(x).tolist()


def sumsq_flat(x: np.ndarray) -> float:
    """:func:`_sumsq_last` of one flat fp32 array (the drift pass calls it three times per 1 MB
    block and checkpoint; the CPU kernel once per block of a one-sided target)."""
    return float(_sumsq_last(x))


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
