"""DetailController: the detail pane of the line under the cursor.

It shows the key's (or module's) detail at once, the phoneme-row table of an embedding when a
thread has read the rows, and whatever `v` computed there (asked of the spectrum controller).
"""

from __future__ import annotations

from typing import Any

from rich.console import Group as RGroup

from ..detail import embedding_table, line_detail
from ..model import Line
from .base import Controller


def is_embedding(line: Line) -> bool:
    row = line.node.row
    return (row.pre is not None and row.ft is not None and len(row.pre.shape) == 2
            and row.pre.shape == row.ft.shape and "embedding" in row.target)


class DetailController(Controller):
    group = "embedding"

    def __init__(self, app) -> None:
        super().__init__(app)
        self.embedding: Any = None  # the phoneme-row table of the shown key, when it has one
        self.to_spectrum = False  # `v` was pressed here: keep its section in view

    def show(self, line: Line | None = None) -> None:
        """Show `line` (default: the one under the cursor), then fetch its phoneme rows if any."""
        line = line if line is not None else self.app.diff.current
        if line is None or line.ident != self.app.spectra.computing:
            self.to_spectrum = False
        self.embedding = None
        self.paint(line)
        if line is not None and not line.is_group and is_embedding(line):
            self.run(self._rows, self.app.session, line, description="embedding rows")

    def paint(self, line: Line | None) -> None:
        """The key's detail, its phoneme rows when they arrived, and what `v` computed for it."""
        session = self.app.session
        parts = [line_detail(line, session.rules, session.single)]
        if self.embedding is not None:
            parts.append(self.embedding)
        spectrum = self.app.spectra.section(line)
        above = None
        if spectrum is not None:
            above = RGroup(*parts) if self.to_spectrum else None
            parts.append(spectrum)
        panel = self.app.main.detail
        panel.show(RGroup(*parts) if len(parts) > 1 else parts[0])
        if above is not None:
            panel.scroll_past(above)  # what `v` asked for is brought into view

    def _rows(self, session: Any, line: Line) -> None:  # worker thread
        row = line.node.row
        try:
            from gsvinspect.stats.rollup import embedding_keys, embedding_rows

            if not embedding_keys([row.target]):
                return
            rows = embedding_rows(session.pre, session.ft, row.pre_key, row.ft_key)
            if line.node.alpha is not None:           # the rules mix: rows of the mixed result
                from gsvinspect.stats.mix import mix_rows

                rows = mix_rows(rows, line.node.alpha)
        except Exception:  # the panel simply shows no row table
            return
        if rows:
            self.deliver(self._show_rows, line, rows)

    def _show_rows(self, line: Line, rows: Any) -> None:
        if self.app.diff.current_ident != line.ident:
            return
        self.embedding = embedding_table(rows)
        self.paint(line)
