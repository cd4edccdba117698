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

Where each part lives (this module is the entry point and re-exports the public names):
:mod:`~gsvinspect.stats.results` (result types, algebra on sums), :mod:`~gsvinspect.stats.plan`
(targets, pieces, progress), :mod:`~gsvinspect.stats.kernels` (numpy kernels, fp16 bit
conversion, ``read_f64``), :mod:`~gsvinspect.stats.files` (``pread`` sources),
:mod:`~gsvinspect.stats.cpu` (CPU path and its jobs), :mod:`~gsvinspect.stats.torch_engine`
(torch/CUDA path), :mod:`~gsvinspect.stats.device` (auto-device cost model).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .cpu import _run_cpu
from .device import choose_device
from .kernels import f16_bits_to_f32, read_f64
from .plan import DEFAULT_CHUNK_ELEMS, _finish, _plan, _Progress, _Target
from .results import (OVERFLOW16, Cancelled, StatsResult, TensorStats, cosine_from_sums,
                      one_minus_cosine_from_sums, rel_change)
from .torch_engine import _SEG, _run_torch

__all__ = ["compute_stats", "choose_device", "Cancelled", "StatsResult", "TensorStats", "OVERFLOW16",
           "rel_change", "cosine_from_sums", "one_minus_cosine_from_sums", "read_f64", "f16_bits_to_f32"]


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
