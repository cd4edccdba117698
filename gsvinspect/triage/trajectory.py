"""What a drift pass finds, as data: per checkpoint (``DriftPoint``) and per trajectory
(``DriftGroup``), the trajectories of a scan (``drift_groups``) and the jump rule (``mark_jumps``).

The pass that fills them is ``triage.drift``; the renderers (``report.scan``) and the run view read
them. Definitions (README, "Triage a run"): ``from_base`` = ‖ck − base‖/‖base‖ and ``from_prev`` =
‖ck − prev‖/‖prev‖ over the float tensors both sides hold; ``jump``: the change from the previous
checkpoint per step is at least ``JUMP_FACTOR`` times the median of the group's other checkpoints.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .entry import ScanEntry

JUMP_FACTOR = 4.0
DRIFT_STAGES = ("s1 GPT", "s2 G", "s2 D", "exports")


@dataclass
class _Sums:
    d_base: float = 0.0
    base: float = 0.0
    d_prev: float = 0.0
    prev: float = 0.0

    def add(self, d_base, base, d_prev, prev) -> None:
        self.d_base += d_base
        self.base += base
        self.d_prev += d_prev
        self.prev += prev

    def rel(self) -> tuple[float | None, float | None]:
        def r(d, n):
            if n > 0:
                return math.sqrt(d / n)
            return 0.0 if d == 0 else math.inf
        return r(self.d_base, self.base), r(self.d_prev, self.prev)


@dataclass
class DriftPoint:
    path: str
    epoch: int | None
    step: int | None
    from_base: float | None = None
    from_prev: float | None = None
    modules: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    languages: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    nan: int = 0
    inf: int = 0
    ovf16: int = 0
    nonfinite_new: bool = False
    jump: bool = False
    jump_ratio: float | None = None
    compared: int = 0                 # tensors compared

    @property
    def healthy(self) -> bool:
        return not (self.nan or self.inf or self.ovf16 or self.jump)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["modules"] = {m: {"from_base": a, "from_prev": b} for m, (a, b) in self.modules.items()}
        d["languages"] = {m: {"from_base": a, "from_prev": b} for m, (a, b) in self.languages.items()}
        return d


@dataclass
class DriftGroup:
    experiment: str
    stage: str
    model: str
    base: str | None
    points: list[DriftPoint] = field(default_factory=list)
    note: str | None = None

    @property
    def healthy(self) -> bool:
        return all(p.healthy for p in self.points)

    def as_dict(self) -> dict:
        return {"experiment": self.experiment, "stage": self.stage, "model": self.model, "base": self.base,
                "note": self.note, "points": [p.as_dict() for p in self.points]}


def drift_groups(entries: list[ScanEntry]) -> list[tuple[str, str, str, str | None, list[ScanEntry]]]:
    """(experiment, stage, model, base path, entries by step) for every trajectory in a scan."""
    by: dict[tuple[str, str, str], list[ScanEntry]] = {}
    for e in entries:
        if e.ok and e.stage in DRIFT_STAGES and e.model:
            by.setdefault((e.experiment, e.stage, e.model), []).append(e)
    out = []
    for (exp, stage, model), es in sorted(by.items(), key=lambda kv: (kv[0][0], DRIFT_STAGES.index(kv[0][1]),
                                                                         kv[0][2])):
        bases = [e.base for e in es if e.base]
        base = max(set(bases), key=bases.count) if bases else None
        out.append((exp, stage, model, base, es))
    return out


def mark_jumps(points: list[DriftPoint]) -> None:
    """Change from the previous checkpoint per step (per epoch, else per checkpoint) against the
    median of the other checkpoints of the group."""
    if len(points) < 3:
        return
    rates = []
    for i, pt in enumerate(points):
        if pt.from_prev is None or not math.isfinite(pt.from_prev):
            rates.append(None)
            continue
        gap = None
        if i > 0:
            for attr in ("step", "epoch"):
                a, b = getattr(points[i - 1], attr), getattr(pt, attr)
                if a is not None and b is not None and b > a:
                    gap = b - a
                    break
        rates.append(pt.from_prev / gap if gap else (None if i == 0 else pt.from_prev))
    for i, pt in enumerate(points):
        others = [r for j, r in enumerate(rates) if j != i and r is not None]
        if rates[i] is None or len(others) < 2:
            continue
        med = statistics.median(others)
        if med > 0:
            pt.jump_ratio = rates[i] / med
            pt.jump = pt.jump_ratio >= JUMP_FACTOR
