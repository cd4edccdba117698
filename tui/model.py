"""The diff view's model: a key tree built from an alignment, flattened to the visible lines.

Pure Python and no Textual, so it can be unit-tested and built in a worker thread. Why a model of
our own instead of a stock Tree/DataTable: at 20,000+ keys every expand, filter or re-sort of those
widgets re-measures every line on the main thread (0.3-1.7 s, TEXTUAL.md §c); flattening this tree
takes a few milliseconds and the widget only renders the ~40 visible lines.

Rows are the library's alignment rows (duck-typed: ``target, pre_key, ft_key, pre, ft, status,
rule``); statistics are the library's ``TensorStats`` (``rel_change`` and friends). Nothing here
computes alignment or statistics; group roll-ups are sums of the per-key numbers for display.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from gsvinspect.align.alignment import Status

# Leaves carry the Status enum's member names. A dtype-only difference is informational (GPT-SoVITS
# casts on load): the library's Status.is_problem decides.
PROBLEM_STATUSES = frozenset(s.name for s in Status if s.is_problem)
STATUS_LABELS = {
    "MATCHED": "matched",
    "DTYPE_DIFFERS": "dtype differs",
    "SHAPE_DIFFERS": "shape differs",
    "MISSING": "missing in fine-tuned",
    "UNEXPECTED": "unexpected (only in fine-tuned)",
    "CONFLICT": "conflict (two keys map here)",
    "SINGLE": "",
}


_STATUS_NAMES: dict[Any, str] = {}


def status_name(status: Any) -> str:
    """The enum member's name (works for enums, plain strings and None)."""
    try:
        return _STATUS_NAMES[status]
    except KeyError:
        pass
    except TypeError:  # unhashable: not a status we know
        return str(status).upper()
    if status is None:
        name = "SINGLE"
    else:
        name = str(getattr(status, "name", None) or status).upper()
    _STATUS_NAMES[status] = name
    return name


@dataclass(frozen=True, slots=True)
class SingleRow:
    """A row for browsing one checkpoint: the same fields as an alignment row, right side empty."""

    target: str
    pre_key: str | None
    ft_key: str | None
    pre: Any
    ft: Any
    status: Any = None
    rule: int | None = None


def single_rows(weights: dict) -> list[SingleRow]:
    """Rows for one checkpoint's weights (no comparison)."""
    return [SingleRow(key, key, None, info, None) for key, info in weights.items()]


@dataclass(slots=True, eq=False)
class Leaf:
    """One key: the alignment row plus the statistics that arrive later."""

    row: Any
    name: str  # last path component(s) shown in the tree
    parent: "Group"
    status: str
    is_problem: bool = False
    stats: Any = None
    share: float | None = None  # share of the model's Σ‖Δ‖² (set by ViewModel.rollup; what the tree shows)
    alpha: float | None = None  # mixing preview: stats are pre + alpha·(ft − pre) vs pre (rules' [alpha])

    @property
    def target(self) -> str:
        return self.row.target

    @property
    def ident(self) -> str:
        return self.row.target

    @property
    def change(self) -> float | None:
        rc = getattr(self.stats, "rel_change", None) if self.stats is not None else None
        if rc is None or (isinstance(rc, float) and math.isnan(rc)):
            return None
        return float(rc)


@dataclass(slots=True, eq=False)
class Group:
    """A module path (``enc_p.encoder``) with its children in file order and display roll-ups."""

    prefix: str  # full dotted path; "" for the root
    name: str  # label shown (a compacted chain such as ``encoder.attn_layers``)
    parent: "Group | None"
    groups: dict[str, "Group"] = field(default_factory=dict)
    children: list = field(default_factory=list)  # Group | Leaf, in first-seen order
    # roll-ups (recomputed by ViewModel.rollup())
    n_keys: int = 0
    n_pre: int = 0  # keys present in the pretrained file (0: the group exists only on the right)
    n_ft: int = 0  # keys present in the fine-tuned file
    problems: dict[str, int] = field(default_factory=dict)
    n_problems: int = 0
    sq_pre: float = 0.0
    sq_diff: float = 0.0
    n_stats: int = 0
    max_change: float | None = None
    share: float | None = None  # share of the model's Σ‖Δ‖² (what the tree and the Modules tab show)

    @property
    def ident(self) -> str:
        return self.prefix + "/"

    @property
    def change(self) -> float | None:
        """Norm-weighted relative change of the group: ‖Δ‖ / ‖pre‖ over its keys."""
        if self.n_stats == 0:
            return None
        if self.sq_pre > 0:
            return math.sqrt(self.sq_diff) / math.sqrt(self.sq_pre)
        return self.max_change


class Line:
    """One visible line of the diff view (a plain slots class: 60k of them are made per flatten)."""

    __slots__ = ("node", "depth", "is_group", "expanded", "label")

    def __init__(self, node: Any, depth: int, is_group: bool, expanded: bool = False,
                 label: str | None = None) -> None:
        self.node = node  # Group | Leaf
        self.depth = depth
        self.is_group = is_group
        self.expanded = expanded
        self.label = label  # overrides node.name (flat mode shows the full key)

    @property
    def ident(self) -> str:
        return self.node.ident

    def __repr__(self) -> str:
        return f"Line({self.ident!r}, depth={self.depth})"


def _compile_filter(text: str) -> tuple[Callable[[str], bool] | None, str | None]:
    """Plain text matches as a case-insensitive substring; ``re:...`` or text with regex
    metacharacters is tried as a regex, and falls back to substring if it does not compile."""
    text = text.strip()
    if not text:
        return None, None
    pattern = text[3:] if text.startswith("re:") else text
    if text.startswith("re:") or any(c in pattern for c in "^$*+?[](){}|\\"):
        try:
            rx = re.compile(pattern, re.IGNORECASE)
            return rx.search, None
        except re.error as exc:
            if text.startswith("re:"):
                return (lambda s: False), f"bad regex: {exc}"
    low = pattern.lower()
    return (lambda s: low in s.lower()), None


class ViewModel:
    """The key tree for one alignment, and the view state (expanded groups, filter, sort)."""

    def __init__(self, rows: Iterable[Any], *, compact: bool = True, single: bool = False,
                 stats: Iterable[tuple[str, Any]] = (), mix: Callable[[str], float] | None = None) -> None:
        self.single = single
        self.mix = mix  # target -> alpha when the rules ask for a mix (gsvinspect.stats.mix.alpha_lookup)
        self.root = Group("", "", None)
        self.leaves: dict[str, Leaf] = {}
        self.groups: dict[str, Group] = {"": self.root}
        for row in rows:
            self._add(row)
        self.set_stats(stats)
        if compact:
            self._compact(self.root)
        self._order: list[Group] = []  # every group, parents before children
        stack = [self.root]
        while stack:
            g = stack.pop()
            self._order.append(g)
            stack.extend(c for c in g.children if type(c) is Group)
        self.expanded: set[str] = set()
        self.filter_text = ""
        self.filter_error: str | None = None
        self._match: Callable[[str], bool] | None = None
        self.only_problems = False
        self.sort_by_change = False
        self.flat = False
        self.rollup()
        # open the top level (and a lone top group, e.g. GPT's `model.`) so keys show at once
        self.expanded.add("")
        top = [c for c in self.root.children if isinstance(c, Group)]
        if len(top) == 1:
            self.expanded.add(top[0].prefix)

    # -- building ---------------------------------------------------------------------------
    def _add(self, row: Any) -> None:
        target = row.target
        parent_prefix, _, name = target.rpartition(".")
        node = self.groups.get(parent_prefix)  # most keys share their parent with the previous one
        if node is None:  # a new module path ("" is the root, always known): make its groups
            node = self.root
            prefix = ""
            for part in parent_prefix.split("."):
                prefix = f"{prefix}.{part}" if prefix else part
                child = node.groups.get(part)
                if child is None:
                    child = Group(prefix, part, node)
                    node.groups[part] = child
                    node.children.append(child)
                    self.groups[prefix] = child
                node = child
        status = status_name(row.status)
        leaf = Leaf(row, name, node, status, status in PROBLEM_STATUSES)
        node.children.append(leaf)
        self.leaves[target] = leaf

    def _compact(self, group: Group) -> None:
        """Merge chains of single-child groups into one line (``encoder.attn_layers``)."""
        for i, child in enumerate(group.children):
            if not isinstance(child, Group):
                continue
            while len(child.children) == 1 and isinstance(child.children[0], Group):
                only = child.children[0]
                self.groups.pop(child.prefix, None)
                only.name = f"{child.name}.{only.name}"
                only.parent = group
                child = only
            group.children[i] = child
            self._compact(child)
        group.groups = {c.name: c for c in group.children if isinstance(c, Group)}

    # -- statistics ---------------------------------------------------------------------------
    def set_stats(self, items: Iterable[tuple[str, Any]]) -> None:
        """Attach statistics that arrived (target -> TensorStats); with a mix, the mixed result's."""
        mix = self.mix
        if mix is not None:
            from gsvinspect.stats.mix import mix_tensor
        for target, stats in items:
            leaf = self.leaves.get(target)
            if leaf is not None:
                if mix is not None:
                    leaf.alpha = mix(target)
                    stats = mix_tensor(stats, leaf.alpha)
                leaf.stats = stats

    def rollup(self) -> None:
        """Recompute group counts and change roll-ups: each key into its own group, then groups
        into their parents, deepest first (a few ms at 20k keys)."""
        groups = self._order
        for g in groups:
            g.n_keys = g.n_pre = g.n_ft = 0
            g.problems = {}
            g.n_problems = 0
            g.sq_pre = g.sq_diff = 0.0
            g.n_stats = 0
            g.max_change = None
        isfinite = math.isfinite
        for leaf in self.leaves.values():
            g = leaf.parent
            g.n_keys += 1
            row = leaf.row
            if row.pre is not None:
                g.n_pre += 1
            if row.ft is not None:
                g.n_ft += 1
            if leaf.is_problem:
                g.problems[leaf.status] = g.problems.get(leaf.status, 0) + 1
                g.n_problems += 1
            st = leaf.stats
            if st is None:
                continue
            change = leaf.change
            if change is None:
                continue
            g.n_stats += 1
            npre = getattr(st, "norm_pre", None)
            ndiff = getattr(st, "norm_diff", None)
            if npre is not None and ndiff is not None and isfinite(npre) and isfinite(ndiff):
                g.sq_pre += npre * npre
                g.sq_diff += ndiff * ndiff
            if g.max_change is None or change > g.max_change:
                g.max_change = change
        for g in reversed(groups):  # children were appended after their parents
            p = g.parent
            if p is None:
                continue
            p.n_keys += g.n_keys
            p.n_pre += g.n_pre
            p.n_ft += g.n_ft
            if g.n_problems:
                p.n_problems += g.n_problems
                for k, v in g.problems.items():
                    p.problems[k] = p.problems.get(k, 0) + v
            if g.n_stats:
                p.n_stats += g.n_stats
                p.sq_pre += g.sq_pre
                p.sq_diff += g.sq_diff
                if p.max_change is None or g.max_change > p.max_change:
                    p.max_change = g.max_change
        self._shares()

    def _shares(self) -> None:
        """Each key's and group's share of the model's Σ‖Δ‖² (gsvinspect.stats.rank: the ranking
        every most-changed list uses; `s` sorts by it and the tree shows it)."""
        from gsvinspect.stats.rank import share

        total = self.root.sq_diff
        inv = 1.0 / total if total > 0 else 0.0   # stats.rank.share, inlined for the 20k-key loop
        isfinite = math.isfinite
        for leaf in self.leaves.values():
            st = leaf.stats
            nd = getattr(st, "norm_diff", None) if st is not None and leaf.change is not None else None
            leaf.share = nd * nd * inv if nd is not None and isfinite(nd) else None
        for g in self._order:
            g.share = share(g.sq_diff, total) if g.n_stats else None

    @property
    def n_with_stats(self) -> int:
        return self.root.n_stats

    # -- view state ---------------------------------------------------------------------------
    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._match, self.filter_error = _compile_filter(text)

    def expand_all(self) -> None:
        self.expanded = set(self.groups)

    def collapse_all(self) -> None:
        self.expanded = {""}

    def toggle(self, group: Group) -> None:
        if group.prefix in self.expanded:
            self.expanded.discard(group.prefix)
        else:
            self.expanded.add(group.prefix)

    def reveal(self, ident: str) -> None:
        """Expand every group above a key so its line becomes visible."""
        node = self.leaves.get(ident) or self.groups.get(ident.rstrip("/"))
        g = node.parent if node is not None else None
        while g is not None:
            self.expanded.add(g.prefix)
            g = g.parent

    def _leaf_visible(self, leaf: Leaf) -> bool:
        if self.only_problems and not leaf.is_problem:
            return False
        if self._match is not None and not self._match(leaf.target):
            return False
        return True

    def _sort_key(self, node: Any) -> float:
        s = node.share             # the number the tree shows, for keys and groups alike
        return -(s if s is not None else -1.0)

    def flatten(self) -> list[Line]:
        """The visible lines for the current view state."""
        if self.flat:
            leaves = [lf for lf in self.leaves.values() if self._leaf_visible(lf)]
            if self.sort_by_change:
                leaves.sort(key=self._sort_key)
            return [Line(lf, 0, False, label=lf.target) for lf in leaves]
        filtering = self._match is not None or self.only_problems
        keep: set[int] | None = None
        if filtering:
            # groups holding at least one visible key; they are shown expanded
            keep = set()
            for leaf in self.leaves.values():
                if self._leaf_visible(leaf):
                    g = leaf.parent
                    while g is not None and id(g) not in keep:
                        keep.add(id(g))
                        g = g.parent
        out: list[Line] = []
        self._walk(self.root, 0, out, keep)
        return out

    def _walk(self, group: Group, depth: int, out: list[Line], keep: set[int] | None) -> None:
        children = group.children
        if self.sort_by_change:
            children = sorted(children, key=self._sort_key)
        expanded = self.expanded
        for child in children:
            if type(child) is Group:
                if keep is not None and id(child) not in keep:
                    continue
                is_open = keep is not None or child.prefix in expanded
                out.append(Line(child, depth, True, is_open))
                if is_open:
                    self._walk(child, depth + 1, out, keep)
            elif keep is None or self._leaf_visible(child):
                out.append(Line(child, depth, False))

    def subtree_lines(self, group: Group, depth: int) -> list[Line]:
        """The lines under one open group (for splicing a toggle in without a full flatten)."""
        out: list[Line] = []
        self._walk(group, depth, out, None)
        return out

    def dispose(self) -> None:
        """Break the parent/child cycles so a replaced model is freed at once by reference
        counting, without waiting for (and paying for) a full garbage collection."""
        for g in self._order:
            g.children = []
            g.groups = {}
            g.parent = None
        for leaf in self.leaves.values():
            leaf.parent = None  # type: ignore[assignment]
        self.leaves = {}
        self.groups = {}
        self._order = []

    # -- queries ------------------------------------------------------------------------------
    def node(self, ident: str) -> Any:
        if ident.endswith("/"):
            return self.groups.get(ident[:-1])
        return self.leaves.get(ident)


def find_line(lines: list[Line], ident: str | None, model: ViewModel | None = None) -> int | None:
    """Index of the line for `ident`, or of its nearest visible ancestor group."""
    if ident is None:
        return None
    for i, ln in enumerate(lines):
        if ln.node.ident == ident:
            return i
    if model is not None:
        node = model.node(ident)
        wanted = {}
        g = node.parent if node is not None else None
        rank = 0
        while g is not None:
            wanted[id(g)] = rank
            rank += 1
            g = g.parent
        best = None
        for i, ln in enumerate(lines):
            r = wanted.get(id(ln.node))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
                if r == 0:
                    break
        if best is not None:
            return best[1]
    return None
