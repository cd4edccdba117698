"""``scan``: every checkpoint under some paths, one metadata-only row each, grouped and related.

Loading path, chosen for speed: each file is opened with the restricted loader (zip directory and
pickle only; of the tensor data only a few small tensors are read, for the copy check), so a
50-file tree costs 50 small reads plus Python start-up, and neither torch nor numpy is imported
(the copy fingerprints cast with ``struct``: ``relations.fingerprint``). The restricted
unpickle is the cost (10-30 ms for a G_*.pth), so from 12 files on they are read by one forked
process per core, each sending back its rows and the keys, shapes and fingerprints relations
need (a few kB per file); the relations are then worked out here without opening anything again.
Files unchanged since an earlier scan are not opened at all (``cache``), and those that are read
are announced to the kernel first (``readahead``), so a cold disk serves them in parallel.
"""

from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .entry import STAGES, ScanEntry, read_entry
from . import readahead
from .relations import file_meta, find_copies, sample, tie_bases
from .walk import walk


@dataclass
class ScanResult:
    entries: list[ScanEntry]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    checkpoints: dict = field(default_factory=dict)     # path -> open Checkpoint (keep_open only)
    cached: int = 0                                     # entries that came from the scan cache

    def groups(self) -> list[tuple[str, str, list[ScanEntry]]]:
        """(experiment, stage, entries sorted by step) in display order: pretrained first."""
        by: dict[tuple[str, str], list[ScanEntry]] = {}
        for e in self.entries:
            by.setdefault((e.experiment, e.stage), []).append(e)
        order = sorted(by, key=lambda es: (es[0] != "pretrained", es[0], STAGES.index(es[1])))
        return [(exp, stage, by[(exp, stage)]) for exp, stage in order]

    @property
    def problems(self) -> list[ScanEntry]:
        return [e for e in self.entries if not e.ok]

    def close(self) -> None:
        for ck in self.checkpoints.values():
            ck.close()
        self.checkpoints.clear()


FORK_FROM = 12          # fewer files than this: one process (a fork costs more than it saves)


def _order(e: ScanEntry) -> tuple:
    big = float("inf")
    return (e.model or "", e.step if e.step is not None else big, e.epoch if e.epoch is not None else big,
            str(e.path))


def _meta(e: ScanEntry, ck, picks: list | None = None, close: bool = True):
    """The FileMeta of an open Checkpoint (None, with the entry's error set, if its tensor data
    cannot be read); closes it unless `close` is false."""
    try:
        return file_meta(ck, picks)
    except Exception as exc:     # a fingerprint that cannot be read: the file is still listed
        e.error = f"cannot read tensor data: {type(exc).__name__}: {exc}"
        return None
    finally:
        if close:
            ck.close()


WINDOW = 16     # files open at once while their samples are fetched (bounds the memory held)


def _advise_samples(ck) -> list | None:
    """The sample ``fingerprint`` will read (None if it cannot be picked), its records advised."""
    try:
        picks = sample(ck)
        readahead.samples(ck, [k for _, k in picks])
        return picks
    except Exception:       # advice only: reading the samples will say what is wrong
        return None


def _describe(paths: list[Path], trust: bool) -> list:
    """(ScanEntry, FileMeta or None) of each file, its Checkpoint closed. The pickles of WINDOW
    files are read first, advising each one's sampled tensor records as it goes, and their
    samples after: on a cold disk the kernel fetches them while the next pickles are parsed."""
    out = []
    for i in range(0, len(paths), WINDOW):
        opened = []
        try:
            for p in paths[i:i + WINDOW]:
                e, ck = read_entry(p, trust=trust, keep_open=True)
                opened.append([e, ck, None if ck is None else _advise_samples(ck)])
            for item in opened:
                e, ck, picks = item
                item[1] = None
                out.append((e, None if ck is None else _meta(e, ck, picks)))
        finally:
            for _, ck, _ in opened:
                if ck is not None:
                    ck.close()
    return out


def _forked(paths: list[Path], trust: bool, n: int) -> list:
    """_describe over `paths` on `n` processes (this one and n-1 forked children, round robin).
    A child that fails is redone here, so nothing is lost."""
    chunks = [paths[i::n] for i in range(n)]
    kids = []
    for chunk in chunks[1:]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:   # child: describe, send, leave without running the parent's atexit/buffers
            code = 1
            try:
                os.close(r)
                data = pickle.dumps(_describe(chunk, trust), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(w, "wb") as fh:
                    fh.write(data)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        kids.append((pid, r, chunk))
    out = {id(p): d for p, d in zip(chunks[0], _describe(chunks[0], trust))}
    for pid, r, chunk in kids:
        with os.fdopen(r, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
        try:
            got = pickle.loads(data) if status == 0 else None   # our own child's bytes, not a file's
        except Exception:
            got = None
        if got is None or len(got) != len(chunk):
            got = _describe(chunk, trust)
        out.update({id(p): d for p, d in zip(chunk, got)})
    return [out[id(p)] for p in paths]


def _workers(n_files: int) -> int:
    if n_files < FORK_FROM or not (sys.platform.startswith("linux") and hasattr(os, "fork")):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 8, n_files // 4))


def _read(files: list[Path], trust: bool, keep_open: bool, progress, entries: list, metas: dict,
          cks: dict) -> None:
    """Read `files`, appending to `entries` and filling `metas`. keep_open: in this process, one
    file after another, each left open in `cks`; otherwise by ``_describe`` (forked when many)."""
    if keep_open:
        for i, p in enumerate(files):
            e, ck = read_entry(p, trust=trust, keep_open=True)
            entries.append(e)
            if ck is not None:
                cks[p] = ck
                meta = _meta(e, ck, close=False)
                if meta is not None:
                    metas[p] = meta
            if progress is not None:
                progress(i + 1, len(files))
    else:
        n = _workers(len(files))
        for p, (e, meta) in zip(files, _describe(files, trust) if n == 1 else _forked(files, trust, n)):
            entries.append(e)
            if meta is not None:
                metas[p] = meta


def _stats(files: list[Path]) -> list:
    out = []
    for p in files:
        try:
            out.append((p, os.stat(p)))
        except OSError:
            pass
    return out


def _read_cached(files: list[Path], entries: list, metas: dict) -> int:
    """_read (restricted loader, files closed) through the scan cache: files unchanged since a scan
    kept them are not opened, the others are prefetched, read and kept. Returns how many came
    from the cache."""
    from .cache import ScanCache

    sc = ScanCache.open()
    got: dict[int, tuple] = {}
    todo: list[Path] = []
    before: dict[int, tuple] = {}
    for p in files:
        try:
            st = os.stat(p)
        except OSError:
            todo.append(p)
            continue
        key = os.path.abspath(p)
        hit = sc.get(key, st) if sc is not None else None
        if hit is not None:
            hit[0].path = p
            got[id(p)] = hit
        else:
            todo.append(p)
            before[id(p)] = (key, st)
    readahead.heads_and_tails([(p, before[id(p)][1]) for p in todo if id(p) in before])
    read: list[ScanEntry] = []
    read_metas: dict = {}
    _read(todo, False, False, None, read, read_metas, {})
    for p, e in zip(todo, read):
        got[id(p)] = (e, read_metas.get(p))
        if sc is not None and id(p) in before:
            try:
                after = os.stat(p)
            except OSError:
                after = None
            key, st = before[id(p)]
            sc.put(key, st, after, e, read_metas.get(p))
    if sc is not None:
        sc.save()
    for p in files:
        e, meta = got[id(p)]
        entries.append(e)
        if meta is not None:
            metas[p] = meta
    return len(files) - len(todo)


def scan(paths, *, trust: bool = False, keep_open: bool = False, relations: bool = True,
         progress=None, cache: bool = True) -> ScanResult:
    """Walk `paths`, read every checkpoint's metadata, tie bases and copies.

    keep_open: leave the Checkpoints open in ``result.checkpoints`` (for a drift pass; files are then
    read in this process, with progress(done, total) after each); otherwise files are read by
    one process per core (forked, 8 at most) when there are enough of them.
    cache: on the metadata-only path (not keep_open, not trust), files unchanged since an earlier
    scan are not read again (``cache``; also off with ``GSVINSPECT_NO_CACHE=1``).
    """
    walked = walk(paths)
    entries: list[ScanEntry] = []
    metas: dict = {}
    cks: dict = {}
    cached = 0
    try:
        if cache and not keep_open and not trust:
            cached = _read_cached(walked.files, entries, metas)
        else:
            if not keep_open:
                readahead.heads_and_tails(_stats(walked.files))
            _read(walked.files, trust, keep_open, progress, entries, metas, cks)
        if relations:
            tie_bases(entries, metas)
            find_copies(entries, metas)
    except BaseException:
        for ck in cks.values():
            ck.close()
        raise
    entries.sort(key=_order)
    return ScanResult(entries, walked.skipped, walked.missing, cks, cached)
