"""``scan``: every checkpoint under some paths, one metadata-only row each, grouped and related.

Loading path, chosen for speed: each file is opened with the restricted loader (zip directory and
pickle only; tensor data is never touched except for the few sampled tensors of a copy check), so
a 50-file tree costs 50 small reads plus Python start-up, and torch is never imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .entry import STAGES, ScanEntry, read_entry
from .relations import find_copies, tie_bases
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


def _order(e: ScanEntry) -> tuple:
    big = float("inf")
    return (e.model or "", e.step if e.step is not None else big, e.epoch if e.epoch is not None else big,
            str(e.path))


def scan(paths, *, trust: bool = False, keep_open: bool = False, relations: bool = True,
         progress=None) -> ScanResult:
    """Walk `paths`, read every checkpoint's metadata, tie bases and copies.

    keep_open: leave the Checkpoints open in ``result.checkpoints`` (for a drift pass);
    progress(done, total) is called after each file.
    """
    walked = walk(paths)
    entries: list[ScanEntry] = []
    cks: dict = {}
    try:
        for i, p in enumerate(walked.files):
            e, ck = read_entry(p, trust=trust, keep_open=True)
            entries.append(e)
            if ck is not None:
                cks[p] = ck
            if progress is not None:
                progress(i + 1, len(walked.files))
        if relations:
            tie_bases(entries, cks)
            find_copies(entries, cks)
    except BaseException:
        for ck in cks.values():
            ck.close()
        raise
    entries.sort(key=_order)
    result = ScanResult(entries, walked.skipped, walked.missing, cks)
    if not keep_open:
        result.close()
    return result
