"""Line up a pretrained and a fine-tuned state dict under a rule list.

The result says, for every key, which pretrained key it pairs with and how they differ (shape,
dtype), which keys exist on one side only, which rename produced each pairing, and where two keys
were renamed onto one name. It works on metadata only (`TensorInfo`), so it is instant and can be
re-run on every keystroke of the rules editor: dict lookups only, no pairwise comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

from ..meta import TensorInfo
from .rules import RuleSet, apply_rules


class Status(str, Enum):
    """How one target key compares across the two files."""

    MATCHED = "matched"
    DTYPE_DIFFERS = "dtype-differs"      # same shape, other dtype: informational only
    SHAPE_DIFFERS = "shape-differs"
    MISSING = "missing"                  # only in the pretrained file
    UNEXPECTED = "unexpected"            # only in the fine-tuned file
    CONFLICT = "conflict"                # several keys renamed onto one target

    @property
    def is_problem(self) -> bool:
        return self not in (Status.MATCHED, Status.DTYPE_DIFFERS)


@dataclass(slots=True)
class Row:
    """One target name and what each side has under it."""

    target: str
    pre_key: str | None
    ft_key: str | None            # the fine-tuned key as stored, before any rule
    pre: TensorInfo | None
    ft: TensorInfo | None
    status: Status
    rule: int | None = None       # index of the last rule that renamed the fine-tuned key
    rules: tuple[int, ...] = ()   # every rule that changed it, in order (ft side, then pre side)
    sources: tuple[str, ...] = ()  # CONFLICT: every original key that landed on `target`


@dataclass(slots=True)
class Alignment:
    rows: list[Row]
    counts: dict[Status, int]
    conflicts: list[tuple[str, list[str]]]
    rule_hits: list[int]                       # per rule, keys touched on both sides together
    rule_hits_ft: list[int] = field(default_factory=list)
    rule_hits_pre: list[int] = field(default_factory=list)
    dropped: list[tuple[str, str, int]] = field(default_factory=list)   # (side, original key, rule)
    rules: RuleSet | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Exit-0 criterion: nothing missing, unexpected, conflicting or of another shape."""
        return not any(self.counts.get(s, 0) for s in
                       (Status.MISSING, Status.UNEXPECTED, Status.CONFLICT, Status.SHAPE_DIFFERS))

    @property
    def n_paired(self) -> int:
        """Target names present on both sides (whatever their shape/dtype)."""
        c = self.counts
        return c.get(Status.MATCHED, 0) + c.get(Status.DTYPE_DIFFERS, 0) + c.get(Status.SHAPE_DIFFERS, 0)

    def dead_rules(self) -> list[int]:
        """Indices of rules that touched no key: usually a typo."""
        return [i for i, n in enumerate(self.rule_hits) if n == 0]

    def triples(self) -> list[tuple[str, str | None, str | None]]:
        """(target, pre_key, ft_key) for every row, for stats and export.

        Conflicting rows carry no fine-tuned key (which one would be meant is undecided).
        """
        return [(r.target, r.pre_key, None if r.status is Status.CONFLICT else r.ft_key) for r in self.rows]

    def row_for(self, target: str) -> Row | None:
        if not self._index:
            self._index = {r.target: i for i, r in enumerate(self.rows)}
        i = self._index.get(target)
        return None if i is None else self.rows[i]


def _index(targets: list[str | None], keys: list[str], touched: list[tuple[int, ...]], side: str,
           dropped: list[tuple[str, str, int]]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """target -> first index, and target -> every index for targets reached more than once."""
    if None not in targets:
        idx = dict(zip(targets, range(len(targets))))  # C-speed fast path: no drops
        if len(idx) == len(targets):
            return idx, {}
    else:
        kept = [i for i, t in enumerate(targets) if t is not None]
        idx = dict(zip([targets[i] for i in kept], kept))
        if len(idx) == len(kept):
            dropped.extend((side, keys[i], touched[i][-1]) for i, t in enumerate(targets) if t is None)
            return idx, {}
    idx = {}
    dups: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        if t is None:
            dropped.append((side, keys[i], touched[i][-1]))
            continue
        j = idx.setdefault(t, i)
        if j != i:
            dups.setdefault(t, [j]).append(i)
    return idx, dups


def align(pre: Mapping[str, TensorInfo], ft: Mapping[str, TensorInfo], rules: RuleSet | None = None) -> Alignment:
    """Pair `pre` and `ft` by target name after running `rules` over the keys.

    Rows come in pretrained order (a conflict on a pretrained name stays at that place), then the
    fine-tuned keys that found no partner and conflicts on new names, in fine-tuned order.

    Longer than most functions here on purpose: the pairing loop keeps its counters and lookups in
    plain locals, which is what keeps a rule edit at 20,000 keys under 50 ms (bench/bench_align.py).
    """
    pre_keys = list(pre)
    ft_keys = list(ft)
    ap_ft = apply_rules(rules, ft_keys, "ft")
    ap_pre = apply_rules(rules, pre_keys, "pre")
    rule_hits = [a + b for a, b in zip(ap_ft.hits, ap_pre.hits)]
    dropped: list[tuple[str, str, int]] = []
    ft_touched, pre_touched = ap_ft.touched, ap_pre.touched
    pre_idx, pre_dups = _index(ap_pre.targets, pre_keys, pre_touched, "pre", dropped)
    ft_idx, ft_dups = _index(ap_ft.targets, ft_keys, ft_touched, "ft", dropped)
    any_dups = bool(pre_dups or ft_dups)

    rows: list[Row] = []
    append = rows.append
    conflicts: list[tuple[str, list[str]]] = []
    # plain locals: Enum hashing and attribute lookups dominate a 20k-key loop otherwise
    MATCHED, DTYPE, SHAPE = Status.MATCHED, Status.DTYPE_DIFFERS, Status.SHAPE_DIFFERS
    MISSING, UNEXPECTED, CONFLICT = Status.MISSING, Status.UNEXPECTED, Status.CONFLICT
    n_matched = n_dtype = n_shape = n_missing = n_unexpected = 0
    ft_get = ft_idx.get

    def rule_info(fi: int | None, pi: int | None) -> tuple[int | None, tuple[int, ...]]:
        seq: tuple[int, ...] = ft_touched[fi] if fi is not None else ()
        if pi is not None and pre_touched[pi]:
            seq += tuple(r for r in pre_touched[pi] if r not in seq)
        if fi is not None and ft_touched[fi]:
            return ft_touched[fi][-1], seq
        return (seq[-1] if seq else None), seq

    def conflict_row(target: str, pi: int | None, fi: int | None) -> None:
        pis = pre_dups.get(target, [])
        fis = ft_dups.get(target, [fi] if fi is not None else [])
        sources = [pre_keys[i] for i in pis] + [ft_keys[i] for i in fis]
        # every rule that sent a key here (the unrenamed source has none)
        seq = tuple(sorted({r for i in fis for r in ft_touched[i]} | {r for i in pis for r in pre_touched[i]}))
        last = seq[-1] if seq else None
        pk = pre_keys[pi] if pi is not None else None
        fk = ft_keys[fi] if fi is not None else None
        append(Row(target, pk, fk, pre[pk] if pk is not None else None, ft[fk] if fk is not None else None,
                   CONFLICT, last, seq, tuple(sources)))
        conflicts.append((target, sources))

    for target, pi in pre_idx.items():
        fi = ft_get(target)
        if any_dups and (target in pre_dups or target in ft_dups):
            conflict_row(target, pi, fi)
            continue
        pk = pre_keys[pi]
        pinfo = pre[pk]
        if fi is None:
            last, seq = rule_info(None, pi) if pre_touched[pi] else (None, ())
            append(Row(target, pk, None, pinfo, None, MISSING, last, seq))
            n_missing += 1
            continue
        fk = ft_keys[fi]
        finfo = ft[fk]
        if pinfo is None or finfo is None:  # metadata unknown: the name match is all we know
            st = MATCHED
            n_matched += 1
        elif pinfo.shape != finfo.shape and tuple(pinfo.shape) != tuple(finfo.shape):
            st = SHAPE
            n_shape += 1
        elif pinfo.dtype != finfo.dtype:
            st = DTYPE
            n_dtype += 1
        else:
            st = MATCHED
            n_matched += 1
        last, seq = rule_info(fi, pi) if (ft_touched[fi] or pre_touched[pi]) else (None, ())
        append(Row(target, pk, fk, pinfo, finfo, st, last, seq))

    for target, fi in ft_idx.items():
        if target in pre_idx:
            continue
        if any_dups and target in ft_dups:
            conflict_row(target, None, fi)
            continue
        fk = ft_keys[fi]
        last, seq = rule_info(fi, None)
        append(Row(target, None, fk, None, ft[fk], UNEXPECTED, last, seq))
        n_unexpected += 1

    counts = {MATCHED: n_matched, DTYPE: n_dtype, SHAPE: n_shape, MISSING: n_missing,
              UNEXPECTED: n_unexpected, CONFLICT: len(conflicts)}
    return Alignment(rows=rows, counts=counts, conflicts=conflicts, rule_hits=rule_hits,
                     rule_hits_ft=ap_ft.hits, rule_hits_pre=ap_pre.hits,
                     dropped=dropped, rules=rules)
