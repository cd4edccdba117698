"""The CPU path: numpy over ``pread`` blocks (or the mapping), no torch.

Big tensors are cut into jobs of up to ``chunk_elems`` elements read block by block (``_BLOCK``
elements into reused :class:`_Scratch` buffers, both sides per kernel call); tensors under
``_SMALL`` elements are packed into fp64 jobs. Inputs over ``_FORK_MIN_BYTES`` are shared with
forked workers (:func:`gsvinspect.stats.pool.run_jobs`); every result is merged on the calling
thread by :func:`_absorb`.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .device import _cpu_workers
from .files import _Files, _Src, _sources
from .kernels import (_F16_SPECIAL_SUMSQ, _FAST_KINDS, _TINY, _ZERO_START, _exact, _flat, _ovf_count, _packed_f32,
                      _packed_rows, _side_tiny, _sumsq_rows, _to_f32_into, _to_f64, sumsq_flat)
from .plan import _pieces, _Progress, _Target
from .pool import run_jobs
from .results import _F, _NSLOTS, _OVFF, _OVFP, _P, _empty_part, _merge

_BLOCK = 1 << 18                     # elements per block of the CPU kernel (a few MB of scratch)
_SMALL = 1 << 16                     # tensors below this many elements are packed together (CPU)
_PACK = 1 << 18                      # elements per packed job of small tensors (CPU)
_FORK_MIN_BYTES = 64 << 20           # below this, worker processes cost more than they save


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
                s = sumsq_flat(x)
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
