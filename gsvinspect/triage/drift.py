"""Drift across a training run: every checkpoint's change from its base and from the previous one.

For each group of a scan (one experiment, one stage, one model, sorted by step) and each
checkpoint of it:

* ``from_base`` = ‖ck − base‖ / ‖base‖ and ``from_prev`` = ‖ck − prev‖ / ‖prev‖ (prev: the group's
  previous checkpoint, the base for the first), over the float tensors both sides hold with the
  same shape (``module.`` ignored); the same per top-level module (``enc_p``, ``dec``, ``model.h``…)
  and per language of the phoneme table (its rows labelled from symbols.json);
* health: NaN and Inf counts (left out of the norms, like the stats engine does), ``ovf16``: finite
  values with ``|x| >= 65520`` that an fp16 export would turn into Inf; ``nonfinite_new`` when NaN/Inf
  appear at this checkpoint and were not in the previous one;
* ``jump``: the change from the previous checkpoint *per step* (per epoch when steps are unknown)
  is at least ``JUMP_FACTOR`` times the median of the group's other checkpoints (3 or more points).

The results (``DriftPoint``, ``DriftGroup``), the grouping and the jump rule are ``triage.trajectory``.

Each byte is read once for the whole trajectory: tensors are visited target by target, the base's
block converted once and every checkpoint's block compared with it and with the previous
checkpoint's block (kept in memory), so the base is not re-read per pair. The conversions and
the fp64-accurate sums are the stats engine's kernels (``f16_bits_to_f32``, ``sumsq_flat``).

Small tensors (biases, norms, most of a SoVITS G's 700 keys) are visited in *packs*: consecutive
tensors of one top-level module, each file's bytes ``pread`` one after another into one buffer,
then summed as one block. Per tensor that costs a ``pread``; visited one by one, each cost a dozen
numpy calls per file and the pass was bound by the interpreter, not by memory.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ..meta import FLOAT_DTYPES
from .entry import ScanEntry, top_module
from .trajectory import DriftGroup, DriftPoint, _Sums, drift_groups, mark_jumps
from .relations import canonical

from ..stats.device import _cpu_workers
from ..stats.files import _Files, pread_exact
from ..stats.kernels import _kind, f16_bits_to_f32, sumsq_flat
from ..stats.pool import run_jobs
from ..stats.results import OVERFLOW16

# 1 MB of fp32 per buffer: a block is read, converted, subtracted twice and summed three times per
# checkpoint, and at this size those passes run in the core's L2 cache (the subtraction 2.7x as
# fast as over 16 MB blocks); single-process drift pass measured 15-25 % faster than with 4M elements
BLOCK = 1 << 18
POOL_FROM = 64 << 20        # a trajectory holding more bytes runs on forked workers (stats.pool)

PHONEME_TABLES = ("enc_p.text_embedding.weight", "model.ar_text_embedding.word_embeddings.weight")


class DriftCancelled(Exception):
    """The drift pass was cancelled (``cancel`` set); nothing partial is returned."""


def _as_f32(raw: np.ndarray, dtype: str, out: np.ndarray) -> np.ndarray:
    if dtype == "float32":
        np.copyto(out, raw)
    elif dtype == "float16":
        f16_bits_to_f32(raw, out)
    elif dtype == "bfloat16":
        np.left_shift(raw.astype(np.uint32), 16, out=out.view(np.uint32))
    else:
        np.copyto(out, raw, casting="unsafe")
    return out


def _sumsq(x: np.ndarray) -> float:
    return sumsq_flat(x.reshape(-1))


def _finite_sumsq(x: np.ndarray) -> float:
    """Sum of squares, NaN/Inf left out (fp64)."""
    s = _sumsq(x)
    if math.isfinite(s):
        return s
    y = x[np.isfinite(x)].astype(np.float64)
    return float(np.dot(y, y))


def _flat(ck, key: str) -> np.ndarray:
    return ck.array(key).reshape(-1)


class _Pass:
    """One group's trajectory: per point, module and language sums and health counts."""

    def __init__(self, base_ck, cks: list, chains: list[list[int]], progress, cancel):
        self.base_ck, self.cks, self.chains = base_ck, cks, chains   # chains: indices of each trajectory
        self.maps = [{canonical(k): k for k in ck.weights} for ck in cks]
        self.mods = [dict() for _ in cks]
        self.langs = [dict() for _ in cks]
        self.health = [[0, 0, 0, 0] for _ in cks]      # nan, inf, ovf16, tensors compared
        self.progress, self.cancel = progress, cancel
        n = max(1, min(BLOCK, sum(t.numel for t in base_ck.weights.values())))   # packs fill up to BLOCK
        self.buf = [np.empty(n, dtype=np.float32) for _ in range(4)]   # base, cur (x2), difference
        self.raw = [np.empty(4 * n, dtype=np.uint8) for _ in range(3)]  # pread: base, cur (x2)
        self.files = None     # _Files while running: fds to pread blocks from (stats engine's sources)

    def _targets(self) -> list[tuple]:
        """(key, info, sides, canonical) of every float tensor of the base."""
        out = []
        for key, info in self.base_ck.weights.items():
            if info.dtype not in FLOAT_DTYPES or not info.numel:
                continue
            c = canonical(key)
            sides = []
            for ck, m in zip(self.cks, self.maps):
                k = m.get(c)
                t = ck.weights.get(k) if k is not None else None
                sides.append(k if t is not None and t.shape == info.shape and t.dtype in FLOAT_DTYPES else None)
            out.append((key, info, sides, c))
        return out

    def _nbytes(self, target) -> int:
        key, info, sides, _ = target
        return info.nbytes + sum(self.cks[i].weights[k].nbytes for i, k in enumerate(sides) if k)

    def run(self) -> None:
        """Every tensor as a job of the stats pool (forked workers when the trajectory holds more
        than POOL_FROM bytes): the phoneme tables first (row sums per language), then big tensors
        alone and small ones in packs."""
        targets = self._targets()
        tables = [t for t in targets if t[3] in PHONEME_TABLES and len(t[1].shape) == 2]
        tables_keys = {t[0] for t in tables}
        jobs = [[t] for t in tables] + self._packs([t for t in targets if t[0] not in tables_keys])
        n_tables = len(tables)
        total = sum(self._job_nbytes(t) for t in jobs)
        procs = _cpu_workers() if total > POOL_FROM else 1

        def work(j: int):
            return self._table_rows(*jobs[j][0][:3]) if j < n_tables else self._job_rows(jobs[j])

        def done(j: int, rows) -> None:
            mod = top_module(jobs[j][0][3])
            names = _lang_names(jobs[j][0][1].shape[0]) if j < n_tables else None
            for i, v in rows:
                if i >= _LANG_ROW:      # a table's language sums: row id = _LANG_ROW + language, checkpoint
                    lang, ck = divmod(i - _LANG_ROW, len(self.cks))
                    self.langs[ck].setdefault(names[lang], _Sums()).add(*(float(x) for x in v[:4]))
                    continue
                self.mods[i].setdefault(mod, _Sums()).add(*(float(x) for x in v[:4]))
                h = self.health[i]
                for n in range(4):
                    h[n] += int(v[4 + n])
            self._tick(self._job_nbytes(jobs[j]))

        self.files = _Files(self.base_ck, *self.cks)
        try:
            run_jobs(len(jobs), work, done, processes=procs, width=8, cancel=self.cancel)
        finally:
            self.files.close()
            self.files = None
        self._check_cancel()

    def _job_nbytes(self, job: list) -> int:
        return sum(self._nbytes(t) for t in job)

    def _packs(self, targets: list) -> list[list]:
        """Jobs: a big tensor alone, or a pack of consecutive small ones (file order of the base) of
        one top-level module, with the same dtypes and the same checkpoints holding them."""
        def span(t):
            sp = self.base_ck.span(t[0])     # where it lies, to keep file order (not a read)
            return (0, 0) if sp is None else sp

        small = [t for t in targets if t[1].numel < BLOCK and _packable(self.base_ck, t[0])]
        small_keys = {t[0] for t in small}
        jobs: list[list] = [[t] for t in targets if t[0] not in small_keys]
        small.sort(key=lambda t: span(t)[0])
        pack: list = []
        sig, numel = None, 0
        for t in small:
            key, info, sides, c = t
            s = (top_module(c), info.dtype,
                 tuple(None if k is None else ck.weights[k].dtype for ck, k in zip(self.cks, sides)))
            ok = all(k is None or _packable(ck, k) for ck, k in zip(self.cks, sides))
            if not ok:
                jobs.append([t])
                continue
            if pack and (s != sig or numel + info.numel > BLOCK):
                jobs.append(pack)
                pack, numel = [], 0
            pack.append(t)
            sig, numel = s, numel + info.numel
        if pack:
            jobs.append(pack)
        return jobs

    def _job_rows(self, job: list) -> list[tuple[int, np.ndarray]]:
        if len(job) == 1:
            return self._tensor_rows(*job[0][:3])
        key, info, sides, _ = job[0]
        numel = sum(t[1].numel for t in job)
        ref = _PackSrc(self.files, self.base_ck, [t[0] for t in job])
        srcs = [None if k is None else _PackSrc(self.files, ck, [t[2][i] for t in job])
                for i, (ck, k) in enumerate(zip(self.cks, sides))]
        dtypes = [None if k is None else ck.weights[k].dtype for ck, k in zip(self.cks, sides)]
        return self._rows(ref, info.dtype, srcs, dtypes, numel, len(job))

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DriftCancelled

    def _tick(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)

    def _src(self, ck, key: str):
        """Where a tensor's blocks come from: ``pread`` into a reused buffer when the tensor is one
        span of its file, else the mapping. (Reading through the mapping in the forked workers
        was measured too: the same CPU time, 0.72 s against 0.71 s for this 2.2 GB pass, and a
        worker touching a file truncated under it would die of SIGBUS.)"""
        return self.files.src(ck, key, _flat(ck, key), _kind(ck.weights[key].dtype))

    def _tensor_rows(self, key: str, info, sides: list) -> list[tuple[int, np.ndarray]]:
        """Per checkpoint: [d_base², base², d_prev², prev², NaN, Inf, ovf16, 1] over this tensor."""
        ref = self._src(self.base_ck, key)
        srcs = [None if k is None else self._src(ck, k) for ck, k in zip(self.cks, sides)]
        dtypes = [None if k is None else ck.weights[k].dtype for ck, k in zip(self.cks, sides)]
        return self._rows(ref, info.dtype, srcs, dtypes, info.numel, 1)

    def _rows(self, ref, base_dtype: str, srcs: list, dtypes: list, numel: int,
              n_tensors: int) -> list[tuple[int, np.ndarray]]:
        """Per checkpoint: [d_base², base², d_prev², prev², NaN, Inf, ovf16, tensors] over `numel`
        elements read block by block from `ref` (the base) and `srcs` (None: not in that file)."""
        acc = {i: [0.0] * 7 for i, r in enumerate(srcs) if r is not None}
        for lo in range(0, numel, BLOCK):
            hi = min(numel, lo + BLOCK)
            m = hi - lo
            base = ref.block(lo, hi, self.raw[0])
            if base_dtype != "float32":
                base = _as_f32(base, base_dtype, self.buf[0][:m])
            sb = _finite_sumsq(base)
            diff = self.buf[3][:m]
            for chain in self.chains:
                prev, sp = base, sb
                used = 0
                for i in chain:
                    if srcs[i] is None:
                        continue
                    # the buffers prev is not in: raw[1 + used % 2], buf[1 + used % 2]
                    cur = srcs[i].block(lo, hi, self.raw[1 + used % 2])
                    if dtypes[i] != "float32":
                        cur = _as_f32(cur, dtypes[i], self.buf[1 + used % 2][:m])
                    used += 1
                    sc, nan, inf, ovf = _health(cur, dtypes[i])
                    np.subtract(cur, base, out=diff)
                    d_base = _finite_sumsq(diff)
                    if prev is base:         # a trajectory's first checkpoint: its previous is the base
                        d_prev = d_base
                    else:
                        np.subtract(cur, prev, out=diff)
                        d_prev = _finite_sumsq(diff)
                    a = acc[i]
                    a[0] += d_base
                    a[1] += sb
                    a[2] += d_prev
                    a[3] += sp
                    a[4] += nan
                    a[5] += inf
                    a[6] += ovf
                    prev, sp = cur, sc
        return [(i, np.array([*a, n_tensors], dtype=np.float64)) for i, a in acc.items()]

    def _table_rows(self, key: str, info, sides: list) -> list[tuple[int, np.ndarray]]:
        """The phoneme table (small): per row, fp32 differences and sums of squares (a row is a few
        hundred values), added up in fp64 per language and for the module. Rows: the module's as
        every job's, then ``(_LANG_ROW + language * n_checkpoints + checkpoint, 4 sums)``."""
        rows = info.shape[0]
        names = _lang_names(rows)
        lang_of_row = np.array([names.index(s.language or "other") for s in _labels(rows)], dtype=np.intp)

        def per_lang(row_sums: np.ndarray) -> np.ndarray:
            return np.bincount(lang_of_row, weights=row_sums, minlength=len(names))

        base = _as_f32(_flat(self.base_ck, key), info.dtype, np.empty(info.numel, np.float32)).reshape(rows, -1)
        base_rows = _row_sums(base)
        diff = np.empty_like(base)
        out = []
        for chain in self.chains:
            prev, prev_rows = base, base_rows
            for i in chain:
                k = sides[i]
                if k is None:
                    continue
                ck = self.cks[i]
                cur = _as_f32(_flat(ck, k), ck.weights[k].dtype, np.empty(info.numel, np.float32))
                _, nan, inf, ovf = _health(cur, ck.weights[k].dtype)
                cur = cur.reshape(rows, -1)
                cur_rows = _row_sums(cur)
                sums = [_row_sums(np.subtract(cur, base, out=diff)), base_rows,
                        _row_sums(np.subtract(cur, prev, out=diff)), prev_rows]
                out.append((i, np.array([*(float(s.sum()) for s in sums), nan, inf, ovf, 1], dtype=np.float64)))
                by_lang = np.stack([per_lang(s) for s in sums], axis=1)     # language x 4
                for n in range(len(names)):
                    out.append((_LANG_ROW + n * len(self.cks) + i,
                                np.concatenate([by_lang[n], np.zeros(4)])))
                prev, prev_rows = cur, cur_rows
        return out


_LANG_ROW = 1 << 40         # row ids from here on are a phoneme table's per-language sums


def _labels(rows: int):
    from ..load.symbols import label_rows

    return label_rows(rows)


def _lang_names(rows: int) -> list[str]:
    """The languages of a `rows`-row phoneme table, in table order ("other": no language)."""
    return list(dict.fromkeys(s.language or "other" for s in _labels(rows)))


_RAW_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def _packable(ck, key: str) -> bool:
    return ck.weights[key].dtype in _RAW_DTYPES


def _tensor_span(ck, key: str) -> tuple[int, int] | None:
    """(file offset, nbytes) of a tensor read by a pack (one read per file and tensor)."""
    return ck.span(key)


class _PackSrc:
    """One file's side of a pack: its tensors' bytes one after another, as one block."""

    def __init__(self, files: _Files, ck, keys: list[str]):
        self.fd = files.fds.get(id(ck))
        self.ck, self.keys = ck, keys
        self.dtype = _RAW_DTYPES[ck.weights[keys[0]].dtype]

    def block(self, lo: int, hi: int, raw: np.ndarray) -> np.ndarray:
        """All the pack's elements (a pack is one block: lo=0, hi=its size), in `raw`."""
        pos = 0
        for key in self.keys:
            sp = None if self.fd is None else _tensor_span(self.ck, key)
            if sp is None:
                arr = _flat(self.ck, key)
                raw[pos:pos + arr.nbytes].view(arr.dtype)[:] = arr
                pos += arr.nbytes
                continue
            off, want = sp
            pread_exact(self.fd, raw[pos:pos + want], off, self.ck.path)
            pos += want
        assert pos // np.dtype(self.dtype).itemsize == hi - lo
        return raw[:pos].view(self.dtype)


def _health(cur: np.ndarray, dtype: str) -> tuple[float, int, int, int]:
    """(sum of squares without NaN/Inf, NaN count, Inf count, fp16-overflow count) of a block."""
    s = _sumsq(cur)
    nan = inf = ovf = 0
    if not math.isfinite(s):
        nan = int(np.count_nonzero(np.isnan(cur)))
        inf = int(np.count_nonzero(np.isinf(cur)))
        s = _finite_sumsq(cur)
    if dtype != "float16" and s >= OVERFLOW16 * OVERFLOW16:
        with np.errstate(invalid="ignore"):
            ovf = int(np.count_nonzero(np.isfinite(cur) & (np.abs(cur) >= OVERFLOW16)))
    return s, nan, inf, ovf


def _row_sums(x: np.ndarray) -> np.ndarray:
    """fp64 sums of squares of the rows of a 2-D fp32 array (NaN/Inf left out)."""
    out = np.einsum("ij,ij->i", x, x).astype(np.float64)
    if np.isfinite(out).all():
        return out
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float64)
    return np.einsum("ij,ij->i", x, x)


def _points(p: _Pass, entries: list[ScanEntry], chains: list[list[int]]) -> list[DriftPoint]:
    out = [_point(p, i, e) for i, e in enumerate(entries)]
    for chain in chains:
        pts = [out[j] for j in chain]
        for prev, pt in zip([None, *pts[:-1]], pts):
            prev_bad = prev is not None and bool(prev.nan or prev.inf)
            pt.nonfinite_new = bool(pt.nan or pt.inf) and not prev_bad
        mark_jumps(pts)
    return out


def _point(p: _Pass, i: int, e: ScanEntry) -> DriftPoint:
    pt = DriftPoint(str(e.path), e.epoch, e.step)
    total = _Sums()
    for mod, sums in p.mods[i].items():
        pt.modules[mod] = sums.rel()
        total.add(sums.d_base, sums.base, sums.d_prev, sums.prev)
    pt.from_base, pt.from_prev = total.rel() if p.mods[i] else (None, None)
    pt.languages = {lang: s.rel() for lang, s in p.langs[i].items()}
    pt.nan, pt.inf, pt.ovf16, pt.compared = p.health[i]
    return pt


def compute_drift(result, *, progress=None, cancel: threading.Event | None = None) -> list[DriftGroup]:
    """Drift of every trajectory of a scan made with ``keep_open=True`` (see the module docstring).

    progress(done_bytes, total_bytes); cancel: a threading.Event (raises DriftCancelled).
    """
    cks = result.checkpoints
    groups: list[DriftGroup] = []
    by_str = {str(p): ck for p, ck in cks.items()}
    shared: dict[str, list[tuple[DriftGroup, list[ScanEntry]]]] = {}   # base -> its trajectories
    for exp, stage, model, base, es in drift_groups(result.entries):
        g = DriftGroup(exp, stage, model, base)
        groups.append(g)
        if model == "sovits-G-lora":
            g.note = "LoRA checkpoints hold adapters, not the base's weights: drift not computed"
        elif base is None or base not in by_str:
            g.note = "no base in the scan (add the pretrained file to the paths): drift not computed"
        else:
            shared.setdefault(base, []).append((g, es))
    # the bytes of the passes below: each base once, each checkpoint once
    total = sum(by_str[base].n_bytes + sum(cks[e.path].n_bytes for _, es in trs for e in es)
                for base, trs in shared.items())
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    for base, trajectories in shared.items():   # one pass per base: its bytes are read once
        flat = [e for _, es in trajectories for e in es]
        chains, i = [], 0
        for _, es in trajectories:
            chains.append(list(range(i, i + len(es))))
            i += len(es)
        p = _Pass(by_str[base], [cks[e.path] for e in flat], chains, tick, cancel)
        p.run()
        pts = _points(p, flat, chains)
        for (g, _), chain in zip(trajectories, chains):
            g.points = [pts[j] for j in chain]
    if progress is not None:
        progress(total, total)
    return groups
