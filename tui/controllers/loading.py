"""Loader: open both checkpoints and align them in a thread, then hand the model to the app.

Start-up order is chosen for the first paint: the frame is already on screen, this worker opens
both files lazily (zip directory + restricted unpickle, no torch) and aligns them, the keys appear,
and only then do diagnosis and statistics start.
"""

from __future__ import annotations

import gc

from gsvinspect.errors import GsvError

from ..session import Realigned, Session
from .base import Controller


class TextError(Exception):
    """A rules problem known only as text (the file could not be read)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.problem = message
        self.line = None


class Loader(Controller):
    group = "load"

    def start(self, session: Session) -> None:
        self.run(self._load, session, description="open checkpoints")

    def _load(self, session: Session) -> None:  # worker thread
        # Opening builds ~25 objects per tensor; automatic collections in between would re-scan the
        # growing heap again and again (~30 % of the load time at 20k keys), and none of it is garbage.
        gc.disable()
        try:
            self._open_and_align(session)
        finally:
            gc.enable()

    def _open_and_align(self, session: Session) -> None:  # worker thread
        text = ""
        rules_error = None
        try:
            text = session.read_rules_file()
        except GsvError as exc:
            rules_error = str(exc)
        try:
            session.open(text)
        except GsvError as exc:
            self.deliver(self._failed, session, str(exc))
            return
        except Exception as exc:  # an unexpected reader failure still ends as a message
            self.deliver(self._failed, session, f"{session.pre_path}: cannot open: {type(exc).__name__}: {exc}")
            return
        result = session.realign(text, 0)
        if result.model is None:  # a bad rules file: keys still appear, aligned without rules
            fallback = session.realign("", 0)
            fallback.error = result.error
            result = fallback
        if rules_error:
            result.error = result.error or TextError(rules_error)
        self.deliver(self._loaded, session, result, text)

    def _failed(self, session: Session, error: str) -> None:
        if session is self.app.session:
            self.app.errors.load_failed(error)

    def _loaded(self, session: Session, result: Realigned, rules_text: str) -> None:
        app = self.app
        if session is not app.session:
            return  # the user switched pairs meanwhile
        app.rules_editor.set_text(rules_text, notify=False)
        session.saved_rules = rules_text
        if result.error is not None:
            # bad rules file: the keys were aligned without rules; the editor shows the error
            app.errors.notice(f"rules: {result.error}", timeout=8)
        app.adopt(result, rules_text)
        if session.single:
            app.main.hide_rules_tab()
        else:
            app.rules_editor.show_result(app.counts(), result.error)
        app.main.show_info()
        app.main.update_status()
        app.loaded.set()
        if not session.single:
            app.diagnosis.start()
            app.rules.check_suggestion()
            if app.stats_enabled:
                app.call_after_refresh(app.stats.start)
