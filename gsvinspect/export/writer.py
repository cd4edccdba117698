"""`run_export`: write a plan atomically (temp file, fsync, verify, rename) with progress and a
sha256 of the bytes as they go out; `export`: open, plan and write in one call (the library form
of the CLI).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from ..errors import ExportError
from . import build, mixing, verify as verify_mod
from .plan import plan_export
from .plan_data import ExportPlan, ExportReport, Progress

_MIB = 1024 * 1024


class _ProgressFile:
    """File wrapper: sha256 of the bytes as they go out (torch's zip writer never seeks back),
    progress reports, and a place for a progress callback to abort by raising."""

    def __init__(self, f, progress: Progress | None, total: int):
        self._f = f
        self.error: OSError | None = None  # torch's writer turns our OSError into a RuntimeError
        self.sha = hashlib.sha256()
        self._progress = progress
        self._total = total
        self.written = 0
        self._last = 0

    def write(self, data) -> int:
        try:
            n = self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.sha.update(data)
        self.written += memoryview(data).nbytes
        if self._progress is not None and self.written - self._last >= 8 * _MIB:
            self._last = self.written
            self._progress("write", self.written, self._total)
        return n

    def flush(self) -> None:
        self._f.flush()



def _write_error(out_path: Path, exc: BaseException) -> ExportError:
    why = getattr(exc, "strerror", None) or str(exc)
    return ExportError(out_path, f"writing failed: {why}; nothing was written (the temp file was removed)")


def save_verified(w, out_path: Path, obj, header: bytes, check: Callable[[Path], None],
                  progress: Progress | None = None, estimated_size: int = 0) -> tuple[int, str]:
    """Write `obj` with torch_writer into the AtomicOutput `w`, then commit it once `check(temp)`
    passes and the file on disk holds every byte written; a failed write (disk full, fsync, rename)
    is one ExportError. Returns the size and the sha256 of the bytes written."""
    from . import torch_writer

    pf = _ProgressFile(w.file, progress, estimated_size)
    try:
        size = torch_writer.save(obj, pf, header=header)
    except Exception as exc:
        if pf.error is not None or isinstance(exc, OSError):
            raise _write_error(out_path, pf.error or exc) from None
        raise
    if progress is not None:
        progress("write", size, size)

    def verify(temp: Path) -> None:
        check(temp)
        disk_size = os.path.getsize(temp)
        if disk_size != pf.written:
            raise ExportError(out_path, f"verification failed: {disk_size} bytes on disk, {pf.written} written")

    try:
        w.commit(verify)
    except OSError as exc:  # flush/fsync/rename: e.g. the disk filled up at the last buffer
        raise _write_error(out_path, exc) from None
    return pf.written, pf.sha.hexdigest()


def run_export(plan: ExportPlan, out_path, *, force: bool = False, progress: Progress | None = None) -> ExportReport:
    """Write `plan` to `out_path` atomically and verified; see the module docstring.

    `progress(phase, done, total)` is called from this thread with phases "compute", "size",
    "write", "verify"; raising from it aborts the export (OUT stays untouched).
    """
    from .atomic import AtomicOutput

    if not plan.ok:
        raise ExportError(plan.ft_path, "export refused: " + "; ".join(plan.problems))
    t0 = time.perf_counter()
    out_path = Path(out_path)
    inputs = [plan.pre_path, plan.ft_path]
    with AtomicOutput(out_path, inputs=inputs, force=force) as w:
        weights: dict = OrderedDict() if plan.weights_ordered else {}
        total = len(plan.tensors)
        for i, ts in enumerate(plan.tensors):
            weights[ts.key] = mixing.compute_tensor(plan, ts)
            if progress is not None and (i % 32 == 0 or i == total - 1):
                progress("compute", i + 1, total)
        info, padded = plan.info, 0
        if plan.size_rule is not None and plan.full_size:
            if progress is not None:
                progress("size", 0, 1)
            info, padded = build.fit_size(plan, weights, info)
        obj = build.build_object(plan, weights, info)
        result: dict = {}

        def check(temp: Path) -> None:
            if progress is not None:
                progress("verify", 0, total)
            verdict, mcheck = verify_mod.verify_written(plan, temp, weights, obj)
            if not verdict.ok:
                raise ExportError(out_path, "GPT-SoVITS would misread the written file: " + "; ".join(verdict.notes))
            result.update(verdict=verdict, mcheck=mcheck)

        size, sha = save_verified(w, out_path, obj, plan.header, check, progress, plan.estimated_size)
    report = ExportReport(plan=plan, out_path=out_path, size=size, sha256=sha,
                          verdict=result["verdict"], manifest_check=result["mcheck"], padded=padded,
                          seconds=time.perf_counter() - t0, verified_tensors=len(weights))
    return report


def export(pre_path, ft_path, out_path, *, rules=None, layout: str | None = None, dtype: str = "keep",
           alpha: float | None = None, missing: str = "pretrained", config: str = "plain",
           force: bool = False, trust: bool = False, suggest: bool = False, allow_swapped: bool = False,
           progress: Progress | None = None) -> ExportReport:
    """One call: open both files, plan, refuse on problems, write. The library form of the CLI."""
    from ..load.checkpoint import open_with_entry
    from ..align.rules import load_rules

    if isinstance(rules, (str, os.PathLike)):
        rules = load_rules(rules)
    entry = rules.weights_entry if rules is not None else None
    with open_with_entry(pre_path, trust=trust, weights_entry=entry) as pre, \
            open_with_entry(ft_path, trust=trust, weights_entry=entry) as ft:
        plan = plan_export(pre, ft, rules=rules, layout=layout, dtype=dtype, alpha=alpha, missing=missing,
                           config=config, suggest=suggest, allow_swapped=allow_swapped)
        return run_export(plan, out_path, force=force, progress=progress)