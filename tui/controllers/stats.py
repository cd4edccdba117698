"""StatsController: per-key statistics in a thread, handed to the UI in batches.

The engine reports each key as it finishes; this worker collects them and flushes at most every
STATS_FLUSH_S (<= 10 UI updates a second, TEXTUAL.md §e), so 20,000 keys never flood the event loop.
A new run (a rule edit, "Recompute statistics") stops the previous one through its cancel event.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .base import Controller

STATS_FLUSH_S = 0.1


class StatsController(Controller):
    group = "stats"

    def __init__(self, app) -> None:
        super().__init__(app)
        self.cancel_event = threading.Event()
        self.generation = 0
        self.running = False
        self.done = (0, 0)  # (keys done, keys to do) of the newest run

    def start(self) -> None:
        """Compute what the session does not have yet (kept across rule edits)."""
        triples = self.app.session.pending_triples()
        if not triples:
            return
        self.stop()
        self.cancel_event = threading.Event()
        self.generation += 1
        self.running = True
        self.done = (0, len(triples))
        self.app.main.show_progress(0, len(triples))
        self.run(self._compute, self.app.session, triples, self.generation, self.cancel_event,
                 exclusive=False, description="statistics")

    def stop(self) -> None:
        """Stop the running statistics at their next key (quit, pair switch, a new run)."""
        self.cancel_event.set()

    def recompute(self) -> None:
        self.app.session.stats_by_pair.clear()
        self.start()

    def _compute(self, session: Any, triples: list, generation: int, cancel: threading.Event) -> None:
        pending: list = []
        pairs = {t: (p, f) for t, p, f in triples}
        state = {"done": 0, "total": len(triples), "last": time.monotonic()}

        def flush(finished: bool = False) -> None:
            items = pending[:]
            del pending[: len(items)]
            state["last"] = time.monotonic()
            self.deliver(self._arrived, session, generation, items, state["done"], state["total"], finished)

        def on_result(target: str, stats: Any) -> None:
            pending.append((target, stats, pairs.get(target)))
            if time.monotonic() - state["last"] >= STATS_FLUSH_S and not cancel.is_set():
                flush()

        def progress(done: int, total: int) -> None:
            state["done"], state["total"] = done, total
            if time.monotonic() - state["last"] >= STATS_FLUSH_S and not cancel.is_set():
                flush()

        from gsvinspect.stats.engine import Cancelled

        try:
            session.compute_stats(triples, progress=progress, cancel=cancel, on_result=on_result)
        except Cancelled:  # we asked for it
            return
        except Exception as exc:  # a bad tensor must not take the app down
            if not cancel.is_set():
                self.deliver(self._arrived, session, generation, pending[:], state["done"], state["total"], True)
                self.deliver(self.app.errors.notice, f"statistics failed: {exc}")
            return
        if not cancel.is_set():
            state["done"] = state["total"]
            flush(finished=True)

    def _arrived(self, session: Any, generation: int, items: list, done: int, total: int, finished: bool) -> None:
        """A batch of statistics (UI thread): store, roll up, repaint what shows them."""
        app = self.app
        if session is not app.session:
            return  # the user switched pairs; these keys belong to the files closed then
        for _target, st, pair in items:
            if pair is not None:
                app.session.stats_by_pair[pair] = st
        model = app.model
        if model is not None:
            model.set_stats((target, st) for target, st, _pair in items)
            model.rollup()
        if generation == self.generation:
            self.done = (done, total)
            app.main.show_progress(done, total)
            if finished:
                self.running = False
                app.main.hide_progress()
        app.main.stats_changed(finished)
