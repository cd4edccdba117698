"""``scan``: every checkpoint under some paths, one metadata-only row each, grouped and related.

Loading path, chosen for speed: each file is opened with the restricted loader (zip directory and
pickle only; of the tensor data only a few small tensors are read, for the copy check), so a
50-file tree costs 50 small reads plus Python start-up, and neither torch nor numpy is imported
(the copy fingerprints cast with ``struct``: ``relations.fingerprint``). The restricted
unpickle is the cost (10-30 ms for a G_*.pth), so from 12 files on they are read by one forked
process per core, each sending back its rows and the keys, shapes and fingerprints relations
need (a few kB per file); the relations are then worked out here without opening anything again.
"""

from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .entry import STAGES, ScanEntry, read_entry
from .relations import file_meta, find_copies, tie_bases
from .walk import walk


@dataclass
class ScanResult:
    entries: list[ScanEntry]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    checkpoints: dict = field(default_factory=dict)     # path -> open Checkpoint (keep_open only)

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


def _describe(path: Path, trust: bool):
    """(ScanEntry, FileMeta or None) of one file, its Checkpoint closed."""
    e, ck = read_entry(path, trust=trust, keep_open=True)
    if ck is None:
        return e, None
    try:
        return e, file_meta(ck)
    except Exception as exc:     # a fingerprint that cannot be read: the file is still listed
        e.error = f"cannot read tensor data: {type(exc).__name__}: {exc}"
        return e, None
    finally:
        ck.close()


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
                data = pickle.dumps([_describe(p, trust) for p in chunk], protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(w, "wb") as fh:
                    fh.write(data)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        kids.append((pid, r, chunk))
    out = {id(p): d for p, d in zip(chunks[0], [_describe(p, trust) for p in chunks[0]])}
    for pid, r, chunk in kids:
        with os.fdopen(r, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
        try:
            got = pickle.loads(data) if status == 0 else None   # our own child's bytes, not a file's
        except Exception:
            got = None
        if got is None or len(got) != len(chunk):
            got = [_describe(p, trust) for p in chunk]
        out.update({id(p): d for p, d in zip(chunk, got)})
    return [out[id(p)] for p in paths]


def _workers(n_files: int) -> int:
    if n_files < FORK_FROM or not (sys.platform.startswith("linux") and hasattr(os, "fork")):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 8, n_files // 4))


def scan(paths, *, trust: bool = False, keep_open: bool = False, relations: bool = True,
         progress=None) -> ScanResult:
    """Walk `paths`, read every checkpoint's metadata, tie bases and copies.

    keep_open: leave the Checkpoints open in ``result.checkpoints`` (for a drift pass; files are then
    read in this process, with progress(done, total) after each); otherwise files are read by
    one process per core (forked, 8 at most) when there are enough of them.
    """
    walked = walk(paths)
    entries: list[ScanEntry] = []
    metas: dict = {}
    cks: dict = {}
    try:
        if keep_open or _workers(len(walked.files)) == 1:
            for i, p in enumerate(walked.files):
                e, ck = read_entry(p, trust=trust, keep_open=True)
                entries.append(e)
                if ck is not None:
                    if keep_open:
                        cks[p] = ck
                    try:
                        metas[p] = file_meta(ck)
                    except Exception as exc:
                        e.error = f"cannot read tensor data: {type(exc).__name__}: {exc}"
                    if not keep_open:
                        ck.close()
                if progress is not None:
                    progress(i + 1, len(walked.files))
        else:
            for p, (e, meta) in zip(walked.files, _forked(walked.files, trust, _workers(len(walked.files)))):
                entries.append(e)
                if meta is not None:
                    metas[p] = meta
        if relations:
            tie_bases(entries, metas)
            find_copies(entries, metas)
    except BaseException:
        for ck in cks.values():
            ck.close()
        raise
    entries.sort(key=_order)
    return ScanResult(entries, walked.skipped, walked.missing, cks)
