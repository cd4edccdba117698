"""ModuleChart: one bar per module, showing where the fine-tune moved the model most.

Bars are linear in the module's share of the model's Σ‖Δ‖² (the ranking of every most-changed
list, gsvinspect.stats.rank), scaled to the largest, so the module carrying most of the change
fills the width; the number beside each bar is that share.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from gsvinspect.errors import safe_text

from .diff_view import change_colour, format_change
from .model import Group, ViewModel


def module_items(model: ViewModel | None, depth: int = 2) -> list[tuple[str, float, int]]:
    """(module prefix, share of Σ‖Δ‖², keys) for groups up to `depth` levels, biggest share first."""
    if model is None:
        return []
    out: list[tuple[str, float, int]] = []

    def walk(group: Group, level: int) -> None:
        for child in group.children:
            if isinstance(child, Group):
                if child.share is not None:
                    out.append((child.prefix, child.share, child.n_keys))
                if level < depth:
                    walk(child, level + 1)

    start = model.root
    # a single wrapper module holding everything (GPT's `model.`) says nothing: start below it
    while True:
        groups = [c for c in start.children if isinstance(c, Group)]
        if len(groups) == 1 and groups[0].n_keys == start.n_keys:
            start = groups[0]
        else:
            break
    walk(start, 1)
    out.sort(key=lambda it: -it[1])
    return out


def short_labels(names: list[str], width: int) -> list[str]:
    """Labels of at most `width` cells, distinct whenever the names are: the end of a dotted path
    says most, so the middle goes first (`model.ar_te…word_embeddings`, `model.ar_au…word_embeddings`
    rather than `…ing.word_embeddings` twice)."""
    def cut(name: str, head: int) -> str:
        if len(name) <= width:
            return name
        tail = width - 1 - head
        return name[:head] + "…" + name[-tail:] if tail > 0 else name[:width - 1] + "…"

    labels = [cut(n, 0) for n in names]
    for head in range(1, width):
        if len(set(labels)) == len(set(names)):
            break
        seen: dict[str, int] = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        labels = [cut(n, head) if seen[lab] > 1 else lab for n, lab in zip(names, labels)]
    return labels


def chart_text(items: list[tuple[str, float, int]], width: int, limit: int = 40) -> Text:
    if not items:
        return Text("Statistics not available yet.", style="dim")
    items = items[:limit]
    name_w = min(max(len(n) for n, _, _ in items), max(10, width // 2 - 4))
    bar_w = max(4, width - name_w - 9)
    top = max(c for _, c, _ in items) or 1.0
    text = Text()
    labels = short_labels([safe_text(n) for n, _, _ in items], name_w)
    for (name, change, _n), label in zip(items, labels):
        cells = change / top * bar_w
        full = int(cells)
        bar = "█" * full + ("▌" if cells - full >= 0.5 else "")
        text.append(f"{label:<{name_w}} ", style="bold")
        text.append(f"{bar:<{bar_w}}", style=change_colour(change))
        text.append(f"{format_change(change)}\n", style=change_colour(change))
    text.rstrip()
    return text


class ModuleChart(VerticalScroll):
    """Per-module bars; call :meth:`update_chart` when statistics change."""

    DEFAULT_CSS = """
    ModuleChart { height: 1fr; padding: 0 1; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._items: list[tuple[str, float, int]] = []

    def compose(self):
        yield Static("", classes="chart-body")

    def update_chart(self, items: list[tuple[str, float, int]]) -> None:
        self._items = items
        self._paint()

    def on_resize(self) -> None:
        self._paint()

    def _paint(self) -> None:
        width = max(20, self.scrollable_content_region.width or 40)
        self.query_one(".chart-body", Static).update(chart_text(self._items, width))
