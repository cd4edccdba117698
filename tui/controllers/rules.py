"""RulesController: re-align after each rules edit (in a thread), suggest, load and save rules.

The editor only reports debounced edits; parsing and aligning happen here, off the UI thread, and
only the newest edit's result is adopted (a generation number drops stale ones).
"""

from __future__ import annotations

import gc
from pathlib import Path

from rich.text import Text

from gsvinspect.errors import safe_text

from ..dialogs import PromptScreen
from ..session import Realigned, Suggestion
from .base import Controller


class RulesController(Controller):
    group = "align"

    def __init__(self, app) -> None:
        super().__init__(app)
        self.generation = 0
        self.suggestion: Suggestion | None = None  # offered on screen with `a` (first run)

    # -- re-alignment -------------------------------------------------------------------------
    def edited(self, text: str) -> None:
        """The rules text changed (debounced): re-align it in a worker."""
        session = self.app.session
        if session.pre is None or session.single:
            return
        self.generation += 1
        self.run(self._realign, session, text, self.generation, description="re-align")

    def _realign(self, session, text: str, generation: int) -> None:  # worker thread
        gc.disable()  # building a model allocates ~10 objects per key, none of them garbage
        try:
            result = session.realign(text, generation)
        finally:
            gc.enable()
        self.deliver(self.apply, result, text)

    def apply(self, result: Realigned, text: str) -> None:
        """Adopt a re-alignment (UI thread); a rules error stays in the editor, the old model stays."""
        if result.generation != self.generation:
            return  # a newer edit is on its way
        app = self.app
        editor = app.rules_editor
        if result.error is not None:
            editor.show_result(None, result.error)
            return
        app.adopt(result, text)
        n_rules = len(result.rules) if result.rules is not None else 0
        dead = result.alignment.dead_rules()
        extra = f"{n_rules} rule{'s' if n_rules != 1 else ''}"
        if dead:
            extra += " · unused: " + ", ".join(str(i + 1) for i in dead)
        editor.show_result(app.counts(), None, extra)
        if self.suggestion is not None and text.strip():
            self.offer(None)  # the user has rules of their own now
        app.main.update_status()
        app.diagnosis.start()
        if app.stats_enabled and app.session.pending_triples():
            app.stats.start()

    # -- the first-run offer ------------------------------------------------------------------
    def check_suggestion(self) -> None:
        """After the first load without rules: do suggested rules pair more keys? (a worker)"""
        session = self.app.session
        if session.single or session.rules_text.strip() or session.alignment is None or session.alignment.ok:
            return
        self.run(self._suggestion, session, description="suggest rules")

    def _suggestion(self, session) -> None:  # worker thread
        try:
            found = session.suggestion()
        except Exception:  # advisory: the palette's "Suggest rules" still reports its own problems
            return
        if found is not None:
            self.deliver(self._found, session, found)

    def _found(self, session, found: Suggestion) -> None:
        if session is self.app.session and not self.app.rules_editor.text.strip():
            self.offer(found)

    def offer(self, found: Suggestion | None) -> None:
        """Show (or with None, withdraw) the one-key offer above the key tree."""
        self.suggestion = found
        if found is None:
            self.app.main.show_hint(None)
            return
        text = Text()
        text.append(" These files line up after a suggested rule ", style="bold")
        text.append("(" + "; ".join(safe_text(d) for d in found.described) + ")", style="cyan")
        text.append(f": {found.paired:,} keys paired. Press ", style="bold")
        text.append(" a ", style="bold reverse")
        text.append(" to apply it.", style="bold")
        self.app.main.show_hint(text)

    def apply_suggestion(self) -> None:
        """`a`: put the offered rules in the editor (they re-align like any edit)."""
        found = self.suggestion
        if found is None:
            return
        self.offer(None)
        self.app.rules_editor.set_text(found.toml)
        self.app.notify("suggested rules applied (Ctrl+S saves them; r edits them)")

    # -- suggest / load / save ----------------------------------------------------------------
    def suggest(self) -> None:
        session = self.app.session
        if session.pre is None or session.single:
            return
        try:
            toml = session.suggest()
        except Exception as exc:  # suggestion is advisory; never fatal
            self.app.errors.notice(f"no suggestion: {exc}")
            return
        self.app.main.show_tab("tab-rules")
        self.app.rules_editor.set_text(toml)
        self.app.notify("suggested rules inserted")

    def load(self) -> None:
        app = self.app

        def done(path: str | None) -> None:
            if not path:
                return
            p = Path(path).expanduser()
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                app.errors.dialog("Cannot load rules", f"{p}: {exc}")
                return
            app.session.rules_path = p
            app.session.saved_rules = text
            app.rules_editor.set_text(text)
            app.notify(f"loaded {p.name}")

        start = str(app.session.rules_path or "rules.toml")
        app.push_screen(PromptScreen("Load rules file", start, "path to a .toml rules file"), done)

    def save(self) -> None:
        app = self.app
        if app.session.single:
            return

        def write(path: str | None) -> None:
            if not path:
                return
            p = Path(path).expanduser()
            text = app.rules_editor.text
            try:
                p.write_text(text, encoding="utf-8")
            except OSError as exc:
                app.errors.dialog("Cannot save rules", f"{p}: {exc}")
                return
            app.session.rules_path = p
            app.session.saved_rules = text
            app.notify(f"saved {p}")

        if app.session.rules_path is not None:
            write(str(app.session.rules_path))
        else:
            app.push_screen(PromptScreen("Save rules as", "rules.toml"), write)
