"""GsvInspectApp: the side-by-side inspector. It composes the screens and delegates the work.

* :mod:`.main_screen` lays out the key tree, status bar and side tabs, and handles the view keys;
* :mod:`.controllers` run the work in thread workers (open, re-align, statistics, findings, detail,
  spectra) and surface every problem in one place (:class:`~.controllers.errors.ErrorSurface`);
* :mod:`.session` is the only door to the library.

What stays here is the wiring: the session and the model being shown, the step that swaps in a new
alignment, the actions that cross areas (export, pair switch, quit) and the command palette. Every
failure a user can cause ends as a message in the app; workers run with exit_on_error=False.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import App
from textual.worker import Worker, WorkerState

from gsvinspect.errors import safe_text

from .commands import inspector_commands
from .controllers import (DetailController, DiagnosisController, ErrorSurface, Loader, RulesController,
                          SpectrumController, StatsController)
from .diff_view import DiffView
from .help_screen import HelpScreen
from .main_screen import MainScreen
from .model import ViewModel
from .rules_editor import RulesEditor
from .session import Realigned, Session


class GsvInspectApp(App[int]):
    """Inspect one checkpoint, or compare a pretrained and a fine-tuned one."""

    CSS_PATH = "app.tcss"
    TITLE = "gsvinspect"
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, pre: str | Path, ft: str | Path | None = None, *, rules: str | Path | None = None,
                 device: str = "cpu", trust: bool = False, stats: bool = True,
                 pairs: dict[str, tuple] | None = None, pair: str | None = None, driver_class=None) -> None:
        super().__init__(driver_class=driver_class)
        self.session = self._new_session(pre, ft, rules, device, trust)
        self.stats_enabled = stats
        self.pairs = pairs or {}
        self.pair = pair
        self._device = device
        self._trust = trust
        self.model: ViewModel | None = None
        self.load_error: str | None = None
        self.loaded = threading.Event()
        self.errors = ErrorSurface(self)
        self.loader = Loader(self)
        self.rules = RulesController(self)
        self.stats = StatsController(self)
        self.diagnosis = DiagnosisController(self)
        self.details = DetailController(self)
        self.spectra = SpectrumController(self)

    @staticmethod
    def _new_session(pre, ft, rules, device, trust) -> Session:
        return Session(Path(pre), Path(ft) if ft is not None else None,
                       Path(rules) if rules is not None else None, trust=trust, device=device)

    def get_default_screen(self) -> MainScreen:
        return MainScreen(id="main-screen")

    def title_text(self, width: int = 0) -> Text:
        """The top bar. When `width` is too small the demo tag goes first, then the pretrained name is
        shortened: the fine-tuned name (the file being judged) always stays whole."""
        s = self.session
        pre = safe_text(s.pre_path.name)
        ft = safe_text(s.ft_path.name) if s.ft_path is not None else None
        tag = f"   [demo: {self.pair}]" if self.pair else ""
        fixed = len(" gsvinspect ") + 1 + (len("  ⇄  ") + len(ft) if ft else 0)
        if width and fixed + len(pre) + len(tag) > width:
            tag = ""
            room = width - fixed
            if len(pre) > room:
                pre = (pre[:max(0, room - 1)] + "…") if room > 1 else ""
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" gsvinspect ", style="bold reverse")
        t.append(f" {pre}", style="bold")
        if ft is not None:
            t.append("  ⇄  ", style="dim")
            t.append(ft, style="bold")
        if tag:
            t.append(tag, style="dim")
        return t

    # -- what the controllers and tests reach -------------------------------------------------------
    @property
    def main(self) -> MainScreen:
        return self.default_screen  # type: ignore[return-value]

    @property
    def diff(self) -> DiffView:
        return self.main.diff

    @property
    def rules_editor(self) -> RulesEditor:
        return self.main.rules_editor

    @property
    def stats_running(self) -> bool:
        return self.stats.running

    def counts(self) -> dict[str, int]:
        """The alignment's non-zero counts by status name (a pair; the library counted them)."""
        al = self.session.alignment
        return {status.name: n for status, n in al.counts.items() if n} if al is not None else {}

    def screen_ready(self) -> None:
        """The main screen is composed: open the files (the frame is painted meanwhile)."""
        self.loader.start(self.session)

    def adopt(self, result: Realigned, text: str) -> None:
        """Show a new alignment (first load or a rules edit); the old model is freed at once."""
        self.session.adopt(result, text)
        old, self.model = self.model, result.model
        self.spectra.forget()  # asks hold the old alignment's rows
        self.main.show_model(result.model)
        if old is not None and old is not result.model:
            old.dispose()
        # Everything alive now lives until the next rule edit: keep it out of the collector's
        # scans (a full collection over a 20k-key model costs 0.1-0.3 s on the UI thread).
        gc.freeze()

    # -- actions that cross areas ---------------------------------------------------------------------
    def action_edit_rules(self) -> None:
        if self.session.single:
            self.notify("rules need two checkpoints")
            return
        self.main.show_tab("tab-rules")
        self.rules_editor.text_area.focus()

    def action_suggest_rules(self) -> None:
        self.rules.suggest()

    def action_load_rules(self) -> None:
        self.rules.load()

    def action_save_rules(self) -> None:
        self.rules.save()

    def action_spectrum(self) -> None:
        self.spectra.ask()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_export(self) -> None:
        s = self.session
        if s.single or s.pre is None or s.ft is None:
            self.notify("export needs a pretrained and a fine-tuned checkpoint", severity="warning")
            return
        from .export_screen import ExportScreen

        self.push_screen(ExportScreen(s))

    def action_switch_pair(self, name: str) -> None:
        spec = self.pairs.get(name)
        if spec is None:
            return
        self.stats.stop()
        old = self.session
        pre, ft, rules = (tuple(spec) + (None, None))[:3]
        self.pair = name
        self.session = self._new_session(pre, ft, rules, self._device, self._trust)
        old.close()
        self.model = None
        self.rules.offer(None)
        self.main.new_pair()
        self.loaded.clear()
        self.loader.start(self.session)

    @property
    def unsaved_rules(self) -> bool:
        """The rules editor holds edits that are in no file (a suggestion counts as an edit)."""
        s = self.session
        return not s.single and s.pre is not None and self.rules_editor.text != s.saved_rules

    def request_quit(self) -> None:
        """`q`, Ctrl+Q: quit, but ask first when rule edits would be lost."""
        if not self.unsaved_rules:
            self.quit_now()
            return
        from .dialogs import ConfirmScreen

        def answer(yes: bool | None) -> None:
            if yes:
                self.quit_now()

        where = f" to {self.session.rules_path.name}" if self.session.rules_path else ""
        self.push_screen(ConfirmScreen(f"The rules have edits that are not saved{where} "
                                       f"(Ctrl+S saves them). Quit anyway?", yes="Quit"), answer)

    def quit_now(self) -> None:
        self.stats.stop()  # stop the statistics thread at its next key
        self.exit(0)

    async def action_quit(self) -> None:
        self.request_quit()

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        yield from inspector_commands(self)

    # -- errors ---------------------------------------------------------------------------------------
    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.errors.worker_failed(event.worker)

    def on_unmount(self) -> None:
        self.stats.stop()
        self.session.close()
