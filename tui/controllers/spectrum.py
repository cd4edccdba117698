"""SpectrumController: `v`, the change spectrum of the key or module under the cursor.

Each SVD runs in a thread worker; results are cached per (pre_key, ft_key) in the session. Moving
off a line whose spectra are still being computed cancels the worker and forgets the ask (pressing
`v` there again starts over; finished spectra stay cached).
"""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from textual.worker import get_current_worker

from gsvinspect.errors import GsvError

from ..detail import SpectrumAsk, spectrum_section
from ..model import Line
from .base import Controller

MODULE_SPECTRA = 4  # `v` on a module decomposes this many of its most-changed weights (an SVD each)


class SpectrumController(Controller):
    group = "spectrum"

    def __init__(self, app) -> None:
        super().__init__(app)
        self.asked: dict[str, SpectrumAsk | str] = {}  # line ident -> what `v` asked there
        self.computing: str | None = None  # the line whose spectra are being computed

    def ask(self) -> None:
        """`v`: decompose the change of the line under the cursor (or say why it cannot)."""
        app = self.app
        line = app.diff.current
        if line is None or app.model is None:
            app.notify("no key under the cursor")
            return
        ask = self._ask_for(line)
        self.asked[line.ident] = ask
        self.computing = line.ident
        app.main.show_tab("tab-detail")
        app.details.to_spectrum = True
        app.details.paint(line)
        if isinstance(ask, SpectrumAsk):
            todo = [r for r in ask.rows if (r.pre_key, r.ft_key) not in app.session.spectra]
            if todo:
                self.run(self._compute, app.session, todo, description="change spectrum")

    def section(self, line: Line | None) -> RenderableType | None:
        """The detail pane's spectrum part for `line`, if `v` was pressed there."""
        ask = self.asked.get(line.ident) if line is not None else None
        return spectrum_section(ask, self.app.session.spectra) if ask is not None else None

    def _ask_for(self, line: Line) -> SpectrumAsk | str:
        """The rows `v` decomposes on this line (a key, or a module's most-changed), or why none."""
        session = self.app.session
        if session.single:
            return "a change spectrum needs a pretrained and a fine-tuned checkpoint"
        if not line.is_group:
            row = line.node.row
            return session.why_no_spectrum(row) or SpectrumAsk("change spectrum", [row])
        leaves = self.app.model.leaves

        def change(row: Any) -> float | None:
            leaf = leaves.get(row.target)
            return leaf.share if leaf is not None else None   # ranked like every most-changed list

        prefix = line.node.prefix
        rows = session.module_spectrum_rows(prefix, MODULE_SPECTRA, change)
        if not rows:
            return f"{prefix}.* holds no paired 2-D weight of one shape on both sides"
        ranked = any(change(r) is not None for r in rows)
        title = (f"change spectra of {len(rows)} {'most-changed ' if ranked else ''}2-D weight"
                 f"{'s' if len(rows) > 1 else ''} under {prefix}.*")
        return SpectrumAsk(title + ("" if ranked else " (in file order: no statistics to rank by yet)"), rows)

    def _compute(self, session: Any, rows: list) -> None:  # worker thread
        worker = get_current_worker()
        for row in rows:
            if worker.is_cancelled:  # the cursor moved on, the rules changed, or the app quits
                return
            try:
                result = session.spectrum(row)
            except GsvError as exc:
                result = str(exc).removeprefix("spectrum: ")
            except Exception as exc:  # an odd tensor must not take the app down
                result = f"{type(exc).__name__}: {exc}"
            self.deliver(self._arrived, session, row, result)

    def _arrived(self, session: Any, row: Any, result: Any) -> None:
        app = self.app
        if session is not app.session:
            return
        session.spectra[(row.pre_key, row.ft_key)] = result
        line = app.diff.current
        ask = self.asked.get(line.ident) if line is not None else None
        if isinstance(ask, SpectrumAsk) and row in ask.rows:
            app.details.paint(line)

    def leave(self, line: Line | None) -> None:
        """The cursor moved to `line`: stop unfinished spectra of the line it left."""
        ident = self.computing
        if ident is None or (line is not None and line.ident == ident):
            return
        self.computing = None
        ask = self.asked.get(ident)
        if isinstance(ask, SpectrumAsk) and any((r.pre_key, r.ft_key) not in self.app.session.spectra
                                                for r in ask.rows):
            self.cancel()
            del self.asked[ident]

    def forget(self) -> None:
        """A new alignment: asks hold the old alignment's rows."""
        self.cancel()
        self.asked.clear()
        self.computing = None
