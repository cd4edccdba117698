"""DiffView: both checkpoints side by side, one aligned line per key, in a collapsible tree.

A Line-API ``ScrollView`` (the toolong ``LogLines`` design): it holds the flattened lines of a
:class:`~.model.ViewModel` and renders only the visible ones, each cached as a ``Strip``. That keeps
every structural change (expand, filter, sort, new statistics) to a re-flatten of a few ms at
20,000+ keys, where stock Tree/DataTable re-measure every line (TEXTUAL.md §c, §d).

Slightly over 500 lines: the cell formatters (marks, change text and bars, fitting) sit with the only
widget that lays them out in fixed columns; splitting them off would scatter one row's layout.
"""

from __future__ import annotations

import math
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gsvinspect.errors import safe_text
from gsvinspect.meta import DTYPE_SHORT, fmt_shape
from gsvinspect.report.numbers import fmt_rel

from .model import Leaf, Line, ViewModel, find_line

# status -> (mark, colour); glyphs carry the meaning so 16-colour and monochrome terminals keep it
MARKS = {
    "MATCHED": ("=", "green"),
    "DTYPE_DIFFERS": ("~", "yellow"),
    "SHAPE_DIFFERS": ("≠", "red"),
    "MISSING": ("-", "red"),
    "UNEXPECTED": ("+", "magenta"),
    "CONFLICT": ("!", "bright_red"),
    "SINGLE": (" ", "default"),
}
SHORT_LABELS = {"SHAPE_DIFFERS": "shape≠", "MISSING": "missing", "UNEXPECTED": "unexpected",
                "CONFLICT": "conflict", "DTYPE_DIFFERS": "dtype"}
MIXED_MARK = ("*", "red")  # a group holding problem keys of more than one kind


def group_mark(problems: dict[str, int]) -> tuple[str, str]:
    """A module line's mark: its problem keys' mark when they are of one kind (so `-` means
    "missing" on keys and groups alike), `*` when several kinds, blank when none."""
    if not problems:
        return " ", "default"
    if len(problems) == 1:
        return MARKS.get(next(iter(problems)), MIXED_MARK)
    return MIXED_MARK


BAR_CHARS = " ▏▎▍▌▋▊▉█"
BAR_WIDTH = 4
MID_WIDTH = 2 + 7 + BAR_WIDTH + 1  # " m" + "+12.3% " + bar + " "


def change_colour(change: float | None) -> str:
    """Colour scale for a relative change (named colours degrade to 256/16-colour terminals)."""
    if not change:  # None (pending) or exactly 0
        return "grey50"
    if change < 1e-3:
        return "blue"
    if change < 1e-2:
        return "cyan"
    if change < 0.1:
        return "green"
    if change < 0.3:
        return "yellow"
    return "red"


def format_change(change: float | None) -> str:
    """Six cells in the library's one percentage format (``fmt_rel``, compact): ``12.3%``, ``0.05%``,
    ``4e-5%``, ``from 0``; ``·`` while statistics are pending."""
    if change is None:
        return "     ·"
    return fmt_rel(change, compact=True).rjust(6)


def change_bar(share: float | None, width: int = BAR_WIDTH) -> str:
    """A small bar for a share of the model's Σ‖Δ‖²: its length is √share = ‖Δ_row‖ / ‖Δ_model‖, so
    48 % draws three times 5 %'s length (a log scale drew them nearly alike) and tiny shares still show."""
    if share is None or share <= 0 or not math.isfinite(share):
        return " " * width
    frac = min(math.sqrt(share), 1.0)
    eighths = max(1, round(frac * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (BAR_CHARS[part] if part else "")).ljust(width)[:width]


def format_shape(shape: tuple[int, ...] | None) -> str:
    """The library's one shape format (``48×192×1``)."""
    return "" if shape is None else fmt_shape(shape)


def fit(text: str, width: int) -> str:
    """Truncate with an ellipsis, or pad, to exactly `width` cells (control characters from a file
    escaped first: a key can hold terminal escape sequences)."""
    if width <= 0:
        return ""
    text = safe_text(text)
    n = cell_len(text)
    if n <= width:
        return text + " " * (width - n)
    if width == 1:
        return "…"
    out = text
    while cell_len(out) > width - 1:
        out = out[:-1]
    return out + "…" + " " * (width - 1 - cell_len(out))


def fit_left(text: str, width: int) -> str:
    """Like :func:`fit` but keeps the end (for dotted keys, the end is the informative part)."""
    text = safe_text(text)
    n = cell_len(text)
    if n <= width:
        return text + " " * (width - n)
    if width <= 1:
        return "…"[:width]
    return "…" + text[-(width - 1):]


class DiffView(ScrollView, can_focus=True):
    """The side-by-side key tree."""

    COMPONENT_CLASSES = {
        "diffview--cursor",
        "diffview--group",
        "diffview--dim",
        "diffview--absent",
        "diffview--header",
    }

    DEFAULT_CSS = """
    DiffView {
        background: $surface;
        scrollbar-gutter: stable;
        & > .diffview--cursor { background: $accent 40%; color: $text; }
        &:focus > .diffview--cursor { background: $accent 70%; color: $text; text-style: bold; }
        & > .diffview--group { text-style: bold; }
        & > .diffview--dim { color: $text-muted; }
        & > .diffview--absent { color: $text-disabled; }
    }
    """

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False, id="diff.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="diff.down"),
        Binding("pageup", "page_up", "Page up", show=False, id="diff.page-up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="diff.page-down"),
        Binding("home", "first", "First", show=False, id="diff.first"),
        Binding("end", "last", "Last", show=False, id="diff.last"),
        Binding("enter,space", "toggle", "Toggle group", show=False, id="diff.toggle"),
        Binding("left,h", "collapse_or_parent", "Collapse", show=False, id="diff.collapse"),
        Binding("right,l", "expand", "Expand", show=False, id="diff.expand"),
    ]

    cursor: reactive[int] = reactive(0, repaint=False, init=False)
    """Index of the highlighted line."""

    class Highlighted(Message):
        """The cursor moved to another line (or the line under it changed)."""

        def __init__(self, view: "DiffView", line: Line | None) -> None:
            super().__init__()
            self.view = view
            self.line = line

        @property
        def control(self) -> "DiffView":
            return self.view

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model: ViewModel | None = None  # set_model() brings one
        self.lines: list[Line] = []
        self._cache: LRUCache[tuple, Strip] = LRUCache(1024)
        self._generation = 0
        self._last_ident: str | None = None

    # -- data -------------------------------------------------------------------------------
    @property
    def current(self) -> Line | None:
        if 0 <= self.cursor < len(self.lines):
            return self.lines[self.cursor]
        return None

    @property
    def current_ident(self) -> str | None:
        line = self.current
        return line.ident if line is not None else None

    def set_model(self, model: ViewModel | None, *, keep: str | None = None) -> None:
        """Show another model (after a rule edit), keeping the cursor on the same key if it exists."""
        keep = keep if keep is not None else self.current_ident
        if model is not None and self.model is not None:
            # carry over the view state so a re-alignment does not reset what the user opened
            model.expanded |= {p for p in self.model.expanded if p in model.groups}
            model.only_problems = self.model.only_problems
            model.sort_by_change = self.model.sort_by_change
            model.flat = self.model.flat
            model.set_filter(self.model.filter_text)
        self.model = model
        self.rebuild(keep=keep)

    def rebuild(self, *, keep: str | None = None) -> None:
        """Re-flatten after a view-state change; the cursor keeps its key (or its nearest group)."""
        keep = keep if keep is not None else self.current_ident
        old_cursor = self.cursor
        self.lines = self.model.flatten() if self.model is not None else []
        self._generation += 1
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(self.lines))
        index = find_line(self.lines, keep, self.model)
        if index is None:
            index = min(old_cursor, max(0, len(self.lines) - 1))
        self.set_reactive(DiffView.cursor, index)
        self._scroll_cursor_visible(center=True)
        self.refresh()
        self._post_highlight(force=True)

    def refresh_content(self) -> None:
        """Repaint (statistics arrived) without changing the lines."""
        self._generation += 1
        self._cache.clear()
        self.refresh()

    # -- cursor -----------------------------------------------------------------------------
    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.lines) - 1)) if self.lines else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_cursor_visible()
        self.refresh_line(old)
        self.refresh_line(new)
        self._post_highlight()

    def _scroll_cursor_visible(self, center: bool = False) -> None:
        if not self.lines:
            return
        self.scroll_to_region(
            Region(0, self.cursor, 1, 1), animate=False, force=True, center=center, immediate=True
        )

    def _post_highlight(self, force: bool = False) -> None:
        ident = self.current_ident
        if force or ident != self._last_ident:
            self._last_ident = ident
            self.post_message(self.Highlighted(self, self.current))

    def move_to(self, ident: str) -> bool:
        """Put the cursor on a key (revealing it); False if it is not in the model."""
        if self.model is None or self.model.node(ident) is None:
            return False
        index = find_line(self.lines, ident)
        if index is None:
            self.model.reveal(ident)
            self.rebuild(keep=ident)
        else:
            self.cursor = index
        return True

    # -- actions ----------------------------------------------------------------------------
    def action_cursor_up(self) -> None:
        self.cursor -= 1

    def action_cursor_down(self) -> None:
        self.cursor += 1

    def action_page_up(self) -> None:
        self.cursor -= max(1, self.size.height - 1)

    def action_page_down(self) -> None:
        self.cursor += max(1, self.size.height - 1)

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.cursor = len(self.lines) - 1

    def action_toggle(self) -> None:
        line = self.current
        if line is None or not line.is_group or self.model is None:
            return
        if self.model.filter_text or self.model.only_problems:
            return  # filtered views show every matching group open
        self.model.toggle(line.node)
        # splice the group's lines in or out: O(subtree), not a full flatten (TEXTUAL.md §d)
        i = self.cursor
        if line.expanded:
            j = i + 1
            while j < len(self.lines) and self.lines[j].depth > line.depth:
                j += 1
            del self.lines[i + 1:j]
        else:
            self.lines[i + 1:i + 1] = self.model.subtree_lines(line.node, line.depth + 1)
        self.lines[i] = Line(line.node, line.depth, True, not line.expanded)
        self._generation += 1
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(self.lines))
        self.refresh()

    def action_expand(self) -> None:
        line = self.current
        if line is not None and line.is_group and not line.expanded:
            self.action_toggle()
        elif line is not None and line.is_group:
            self.cursor += 1

    def action_collapse_or_parent(self) -> None:
        line = self.current
        if line is None or self.model is None:
            return
        if line.is_group and line.expanded and not (self.model.filter_text or self.model.only_problems):
            self.action_toggle()
            return
        parent = line.node.parent
        if parent is not None and parent.prefix:
            index = find_line(self.lines, parent.ident)
            if index is not None:
                self.cursor = index

    def next_problem(self, step: int = 1) -> bool:
        """Move to the next (step=1) or previous (-1) problem key, expanding groups as needed."""
        if self.model is None:
            return False
        order = [lf for lf in self.model.leaves.values() if lf.is_problem and self.model._leaf_visible(lf)]
        if not order:
            return False
        if self.model.flat and self.model.sort_by_change:
            pos = {ln.ident: i for i, ln in enumerate(self.lines)}
            order.sort(key=lambda lf: pos.get(lf.ident, 0))
        current = self.current
        targets = [lf.ident for lf in order]
        if current is not None and not current.is_group and current.ident in targets:
            i = (targets.index(current.ident) + step) % len(targets)
        else:
            # the first problem after (or before) the cursor in file order
            all_keys = list(self.model.leaves)
            here = current.node.target if current is not None and not current.is_group else None
            if here is None and current is not None:
                # a group: its first key
                first = next((k for k in all_keys if k.startswith(current.node.prefix + ".")), None)
                here = first
            rank = {k: i for i, k in enumerate(all_keys)}
            r = rank.get(here, -1) if here else -1
            if step > 0:
                i = next((j for j, t in enumerate(targets) if rank[t] >= r), 0)
            else:
                i = next((j for j in range(len(targets) - 1, -1, -1) if rank[targets[j]] < r), len(targets) - 1)
        return self.move_to(targets[i])

    # -- mouse ------------------------------------------------------------------------------
    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < len(self.lines):
            was = self.cursor
            self.cursor = index
            if was == index or event.chain > 1:
                self.action_toggle()

    # -- rendering --------------------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.lines))
        self._cache.clear()

    def on_focus(self) -> None:
        self.refresh_line(self.cursor)

    def on_blur(self) -> None:
        self.refresh_line(self.cursor)

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        width = self.scrollable_content_region.width
        if index >= len(self.lines) or width <= 0:
            return Strip.blank(width, self.rich_style)
        is_cursor = index == self.cursor
        key = (index, is_cursor, width, self._generation, is_cursor and self.has_focus)
        strip = self._cache.get(key)
        if strip is None:
            segments = self._render_segments(self.lines[index], width, is_cursor)
            if is_cursor:
                segments = self._on_cursor(segments)
            strip = Strip(segments, width)
            strip = strip.adjust_cell_length(width, self.rich_style)
            self._cache[key] = strip
        return strip

    def _on_cursor(self, segments: list[Segment]) -> list[Segment]:
        """The cursor row in the cursor's own colours: red, magenta or dim text on the highlight
        is hard to read (issue 13 point 4); the marks (=, -, +, ≠, !) still say what each key is."""
        cursor = self.get_component_rich_style("diffview--cursor")
        over = Style(color=cursor.color, bgcolor=cursor.bgcolor, bold=cursor.bold)
        return [Segment(seg.text, (seg.style or Style()) + over) for seg in segments]

    def _render_segments(self, line: Line, width: int, is_cursor: bool) -> list[Segment]:
        base = self.rich_style
        if is_cursor:
            base = base + self.get_component_rich_style("diffview--cursor")
        dim = self.get_component_rich_style("diffview--dim", partial=True)
        absent = self.get_component_rich_style("diffview--absent", partial=True)
        single = self.model is not None and self.model.single
        mid = MID_WIDTH
        if single:
            left_w = width - mid
            right_w = 0
        else:
            left_w = (width - mid) // 2
            right_w = width - mid - left_w
        indent = "  " * line.depth
        segs: list[Segment] = []
        node = line.node
        if line.is_group:
            return self._group_segments(line, left_w, right_w, base, dim, absent)

        leaf: Leaf = node
        row = leaf.row
        name = line.label if line.label is not None else leaf.name
        prefix = indent + "  "
        segs.extend(self._side(prefix, name, row.pre, left_w, base, dim, absent, line.label is not None))
        mark, colour = MARKS.get(leaf.status, ("?", "default"))
        segs.append(Segment(" " + mark, base + Style(color=colour, bold=True)))
        change = leaf.share
        cstyle = base + Style(color=change_colour(change))
        if single:
            info = row.pre
            segs.append(Segment(fit(f"{info.numel:>7,}"[-7:], 7) + " " * (BAR_WIDTH + 1), base + dim))
            return segs
        paired = row.pre is not None and row.ft is not None
        segs.append(Segment((format_change(change) if paired else "      ") + " ", cstyle))
        segs.append(Segment(change_bar(change), cstyle))
        segs.append(Segment(" ", base))
        renamed = row.ft_key is not None and row.ft_key != row.target
        segs.extend(self._side(prefix, name, row.ft, right_w, base, dim, absent, line.label is not None,
                               renamed=renamed))
        return segs

    def _group_segments(self, line: Line, left_w: int, right_w: int, base: Style, dim: Style,
                        absent: Style) -> list[Segment]:
        """A module line: each side shows the group only where that file has keys in it (∅ where
        it has none); the mark says what kind of problem keys it holds (group_mark)."""
        node = line.node
        gstyle = base + self.get_component_rich_style("diffview--group", partial=True)
        indent = "  " * line.depth
        arrow = "▼ " if line.expanded else "▶ "
        single = self.model is not None and self.model.single
        segs: list[Segment] = []
        if node.n_pre or single:
            summary = f" {node.n_keys}"
            segs.append(Segment(fit(indent + arrow + node.name, max(0, left_w - cell_len(summary))), gstyle))
            segs.append(Segment(fit(summary, min(left_w, cell_len(summary))), base + dim))
        else:  # only in the fine-tuned file (e.g. DDP's `module.` before a rule strips it)
            segs.append(Segment(fit(indent + "  ∅", left_w), base + absent))
        mark, colour = group_mark(node.problems)
        segs.append(Segment(" " + mark, base + Style(color=colour, bold=True)))
        change = node.share
        ctext = format_change(change) if node.n_problems < node.n_keys else "      "  # nothing paired
        segs.append(Segment(ctext + " ", base + Style(color=change_colour(change))))
        segs.append(Segment(change_bar(change), base + Style(color=change_colour(change))))
        segs.append(Segment(" ", base))
        if right_w:
            parts = [f"{n} {SHORT_LABELS.get(s, s.lower())}" for s, n in sorted(node.problems.items())]
            if not node.n_ft:
                segs.append(Segment(fit(indent + "  ∅  " + ", ".join(parts), right_w), base + absent))
            elif parts:
                text = indent + arrow + node.name + "  " + ", ".join(parts)
                segs.append(Segment(fit(text, right_w), gstyle + Style(color="red")))
            else:
                segs.append(Segment(fit(indent + arrow + node.name, right_w), gstyle))
        return segs

    def _side(self, prefix: str, name: str, info: Any, width: int, base: Style, dim: Style, absent: Style,
              full_key: bool, renamed: bool = False) -> list[Segment]:
        if width <= 0:
            return []
        if info is None:
            return [Segment(fit(prefix + "∅", width), base + absent)]
        dtype = DTYPE_SHORT.get(info.dtype, info.dtype)
        shape = format_shape(info.shape)
        tail = f" {shape} {dtype}"
        name_w = width - cell_len(tail)
        if name_w < 8 + len(prefix):
            tail = f" {dtype}"
            name_w = width - cell_len(tail)
        if renamed:
            name = name + "↻"
        text = fit_left(name, name_w - len(prefix)) if full_key else fit(name, name_w - len(prefix))
        return [Segment(prefix + text, base), Segment(fit(tail, width - name_w), base + dim)]

    def dump(self, start: int = 0, count: int | None = None, width: int = 120) -> str:
        """Plain-text rendering of lines (for tests and the text summary)."""
        count = len(self.lines) if count is None else count
        out = []
        for line in self.lines[start:start + count]:
            out.append("".join(s.text for s in self._render_segments(line, width, False)).rstrip())
        return "\n".join(out)
