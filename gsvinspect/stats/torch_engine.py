"""The torch path: CUDA (``"torch-cpu"`` runs the same code on the CPU for tests).

Tensors are packed per dtype pair into chunks (segments padded to ``_SEG`` elements), read into
(pinned) host buffers by a reader thread (:func:`_produce`) that starts before torch is imported,
moved with async copies on a side stream and reduced in fp64 on the device (:func:`_consume`).
torch is imported only inside :func:`_consume`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

from .files import _Files, _sources
from .plan import _pieces, _Progress
from .results import (_CHG, _D, _F, _INFF, _INFP, _MAXD, _NANF, _NANP, _NSLOTS, _OVFF, _OVFP, _P,
                      OVERFLOW16)

_SEG = 1024                          # torch path: segment alignment, one partial per 1024 elements
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
    """Take staged chunks off `ready_q`, reduce them on `dev`, hand buffers back to `free_q`.

    A chunk's finished targets are read back (one sync) only after the next chunk is queued.
    """
    red = _Reducer(targets, dev, chunk, itemsize, free_q, prog, emit)
    lagging = None   # (event, targets completed, bytes) of the previous chunk: read after the next is queued
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
        pending = red.reduce(msg)
        if lagging is not None:
            red.settle(lagging)
        lagging = pending
    if lagging is not None:
        red.settle(lagging)


class _Reducer:
    """Per-target fp64 accumulators on the device, fed one staged chunk at a time."""

    def __init__(self, targets, dev, chunk, itemsize, free_q, prog, emit):
        import torch

        self.torch, self.targets, self.free_q, self.prog, self.emit = torch, targets, free_q, prog, emit
        self.cuda = dev == "cuda"
        if self.cuda:
            torch.cuda.init()
            self.device = torch.device("cuda")
            self.copy_stream = torch.cuda.Stream()
            for _ in range(2):
                free_q.put(_HostSet(chunk * itemsize, torch, pinned=True))
        else:
            self.device = torch.device("cpu")
            self.copy_stream = None
        n_t = len(targets)
        self.acc = torch.zeros((n_t, _NSLOTS), dtype=torch.float64, device=self.device)
        self.accmax = torch.zeros(n_t, dtype=torch.float64, device=self.device)
        self.tdt = {"f16": torch.float16, "bf16": torch.int16, "f32": torch.float32, "f64": torch.float64,
                    "int": torch.float64}

    def _upload(self, msg) -> tuple[list, object]:
        """The chunk's sides on the device (None where absent) and the copy's event (CUDA)."""
        torch = self.torch
        raws = []
        for kind, host_np, host_t in ((msg.ka, msg.hs.a, msg.hs.ta), (msg.kb, msg.hs.b, msg.hs.tb)):
            if kind is None:
                raws.append(None)
                continue
            nb = msg.n * np.dtype(_HOST_DTYPES[kind]).itemsize
            src = host_t[:nb] if host_t is not None else torch.from_numpy(host_np[:nb])
            if self.cuda:
                with torch.cuda.stream(self.copy_stream):
                    d = src.to(self.device, non_blocking=msg.hs.pinned)
                d.record_stream(torch.cuda.current_stream())
            else:
                d = src
            raws.append(d.view(self.tdt[kind]))
        copied = None
        if self.cuda:
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
            torch.cuda.current_stream().wait_event(copied)
        return raws, copied

    def reduce(self, msg) -> tuple:
        """Queue the chunk's reductions; returns what :meth:`settle` needs once they ran."""
        torch = self.torch
        raws, copied = self._upload(msg)
        # block -> target index, for the per-segment reductions
        blk = []
        for tidx, off, length, _, _ in msg.segs:
            blk.extend([tidx] * (-(-length // _SEG)))
        blk_t = torch.tensor(blk, dtype=torch.long).to(self.device, non_blocking=False)
        a = _dev64(torch, raws[0], msg.ka).view(-1, _SEG) if raws[0] is not None else None
        b = _dev64(torch, raws[1], msg.kb).view(-1, _SEG) if raws[1] is not None else None
        part, maxd = _torch_partials(torch, a, b, msg.ka, msg.kb)
        self.acc.index_add_(0, blk_t, part)
        if maxd is not None:
            self.accmax.scatter_reduce_(0, blk_t, maxd, reduce="amax", include_self=True)
        done_idx = []
        for tidx, _, _, _, last in msg.segs:
            if last:
                t = self.targets[tidx]
                t.pending -= 1
                if t.pending == 0:
                    done_idx.append(tidx)
        nbytes = sum(s[3] for s in msg.segs)
        if self.cuda:
            copied.synchronize()          # the staging buffer is free once its copy landed
            if msg.hs.pinned:
                self.free_q.put(msg.hs)
            ev = torch.cuda.Event()
            ev.record()
        else:
            self.free_q.put(msg.hs)
            ev = None
        return ev, done_idx, nbytes

    def settle(self, pending) -> None:
        """Wait for a chunk's reductions, emit the targets it finished, count its bytes."""
        ev, done_idx, nbytes = pending
        if ev is not None:
            ev.synchronize()
        if done_idx:
            idx = self.torch.tensor(done_idx, dtype=self.torch.long, device=self.device)
            rows = self.acc.index_select(0, idx).cpu().numpy()
            mx = self.accmax.index_select(0, idx).cpu().numpy()
            for k, ti in enumerate(done_idx):
                t = self.targets[ti]
                t.part = rows[k].copy()
                t.part[_MAXD] = mx[k]
                self.emit(t)
        self.prog.add(nbytes)
