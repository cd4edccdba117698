"""ExportScreen: choose layout, dtype, alpha, missing-key policy and output; see the dry-run plan
(including whether the scaler state is kept) before anything is written; then write with progress
and show the verified result or the error.

All planning and writing is gsvinspect.export's (plan_export, run_export); this screen only collects options and shows
results. It never overwrites a file without asking, and every failure stays inside the dialog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group as RGroup
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from gsvinspect.export.options import DTYPE_CHOICES, LAYOUT_CHOICES, MISSING_CHOICES

from gsvinspect.errors import safe_text

from .detail import _kv_table
from .dialogs import ConfirmScreen


class _Planned(Message):
    def __init__(self, token: int, plan: Any, error: str | None) -> None:
        super().__init__()
        self.token = token
        self.plan = plan
        self.error = error


class _Progress(Message):
    def __init__(self, phase: str, done: int, total: int) -> None:
        super().__init__()
        self.phase = phase
        self.done = done
        self.total = total


class _Finished(Message):
    def __init__(self, report: Any, error: str | None) -> None:
        super().__init__()
        self.report = report
        self.error = error


class ExportScreen(ModalScreen[Any]):
    """The export dialog for the session's pair."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="export.close"),
        # priority: no field can swallow it (Ctrl+W, the old key, deletes a word in an Input)
        Binding("ctrl+s", "write", "Write", priority=True, id="export.write"),
        Binding("pageup", "scroll_plan(-1)", "Plan up", show=False, id="export.plan-up"),
        Binding("pagedown", "scroll_plan(1)", "Plan down", show=False, id="export.plan-down"),
    ]

    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen > Vertical {
        width: 96%; max-width: 130; height: 96%; border: round $accent; background: $panel;
        padding: 0 1;
    }
    ExportScreen #export-form { grid-size: 4; grid-columns: auto 1fr auto 1fr; grid-gutter: 0 1;
        height: auto; }
    ExportScreen #export-form Label { padding: 0 0; height: 1; margin-top: 0; }
    ExportScreen Select { height: auto; }
    ExportScreen #export-out-row { height: auto; }
    ExportScreen #export-out-row Label { width: auto; padding: 0 1 0 0; }
    ExportScreen #export-out { width: 1fr; }
    ExportScreen Input { border: tall $boost; height: 3; }
    ExportScreen #export-plan { height: 1fr; border: round $primary 50%; padding: 0 1; }
    ExportScreen #export-progress-row { height: 1; }
    ExportScreen #export-phase { width: 10; }
    ExportScreen #export-buttons { height: auto; align-horizontal: right; }
    ExportScreen #export-buttons Button { margin-left: 1; min-width: 12; }
    """

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.plan: Any = None
        self.plan_error: str | None = None
        self.report: Any = None
        self.error: str | None = None
        self.writing = False
        self._token = 0  # the newest options' plan request
        self._shown = -1  # the request whose plan is on screen
        from gsvinspect.export import plan, writer

        self._plan_export, self._run_export = plan.plan_export, writer.run_export

    def default_out(self) -> str:
        ft = self.session.ft_path
        suffix = ft.suffix or ".pth"
        return str(ft.with_name(f"{ft.stem}-base{suffix}"))

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = "Export a new base model"
            v.border_subtitle = "Esc close · Ctrl+S write · PgUp/PgDn plan"
            with Grid(id="export-form"):
                # the CLI's choices, its defaults first
                yield Label("layout")
                yield Select([(x, x) for x in LAYOUT_CHOICES], value=LAYOUT_CHOICES[0], allow_blank=False,
                             id="export-layout", compact=True)
                yield Label("dtype")
                yield Select([(x, x) for x in DTYPE_CHOICES], value=DTYPE_CHOICES[0], allow_blank=False,
                             id="export-dtype", compact=True)
                yield Label("alpha")
                yield Input("", placeholder="1.0", id="export-alpha", compact=True,
                            tooltip="1.0 = fine-tuned, 0.0 = pretrained; [alpha] in the rules overrides per module")
                yield Label("missing")
                yield Select([(x, x) for x in MISSING_CHOICES], value=MISSING_CHOICES[0],
                             allow_blank=False, id="export-missing", compact=True)
            with Horizontal(id="export-out-row"):
                yield Label("output")
                yield Input(self.default_out(), id="export-out", compact=True)
            with VerticalScroll(id="export-plan"):
                yield Static("planning…", id="export-plan-text")
            with Horizontal(id="export-progress-row"):
                yield Label("", id="export-phase")
                yield ProgressBar(total=None, id="export-progress", show_eta=False)
            with Horizontal(id="export-buttons"):
                yield Button("Write", id="export-write", variant="primary", compact=True)
                yield Button("Close", id="export-close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#export-progress-row").display = False
        self.replan()

    # -- planning ---------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        alpha_text = self.query_one("#export-alpha", Input).value.strip()
        try:
            alpha = float(alpha_text) if alpha_text else None
        except ValueError:
            raise ValueError(f"alpha must be a number between 0 and 1, not {alpha_text!r}") from None
        return {
            "layout": self.query_one("#export-layout", Select).value,
            "dtype": self.query_one("#export-dtype", Select).value,
            "alpha": alpha,
            "missing": self.query_one("#export-missing", Select).value,
        }

    @on(Select.Changed)
    @on(Input.Changed, "#export-alpha")
    def replan(self) -> None:
        if not self.is_mounted:
            return
        self._token += 1
        try:
            opts = self.options()
        except ValueError as exc:
            self._show_plan(None, str(exc))
            return
        self._plan_worker(self._token, opts)

    @work(thread=True, exclusive=True, group="export-plan", exit_on_error=False, description="plan export")
    def _plan_worker(self, token: int, opts: dict) -> None:
        s = self.session
        try:
            plan = self._plan_export(s.pre, s.ft, rules=s.rules, **opts)
        except Exception as exc:  # ExportError / UsageError / anything: shown, never raised
            self.post_message(_Planned(token, None, _describe_error(exc)))
            return
        self.post_message(_Planned(token, plan, None))

    @on(_Planned)
    def _planned(self, event: _Planned) -> None:
        if event.token == self._token:
            self._show_plan(event.plan, event.error)

    def _show_plan(self, plan: Any, error: str | None) -> None:
        self.plan, self.plan_error = plan, error
        self._shown = self._token
        self.report = None  # a new plan replaces an old "written" result
        box = self.query_one("#export-plan-text", Static)
        if error:
            box.update(Text(f"✗ {error}", style="bold red"))
        else:
            ok = bool(getattr(plan, "ok", True))
            head = Text("Dry run — nothing written yet." if ok else "The export would be refused:",
                        style="bold" if ok else "bold red")
            box.update(RGroup(head, self._options_line(), rows_table(plan)))
        refused = plan is None or not getattr(plan, "ok", True)
        self.query_one("#export-write", Button).disabled = bool(error) or refused or self.writing

    def _options_line(self) -> Text:
        """What the plan on screen was made for, alpha spelled out (an edit's effect is visible)."""
        try:
            opts = self.options()
        except ValueError:
            return Text("")
        alpha = opts["alpha"]
        rules = self.session.rules
        if rules is not None and getattr(rules, "has_alphas", False):   # what export.mixing writes
            mix = "alpha from the rules' [alpha] table" + (
                f", {alpha:g} where it names no module" if alpha is not None else "")
        elif alpha is None:
            mix = "alpha: none (fine-tuned weights as they are)"
        elif alpha == 0:
            mix = "alpha 0: every weight from the PRETRAINED file"
        elif alpha == 1:
            mix = "alpha 1: fine-tuned weights"
        else:
            mix = f"alpha {alpha:g}: {alpha:g}·fine-tuned + {1 - alpha:g}·pretrained"
        return Text(f"for {mix} · layout {opts['layout']} · dtype {opts['dtype']} · missing {opts['missing']}",
                    style="cyan")

    @on(Input.Changed, "#export-out")
    def _out_changed(self) -> None:
        """Another output path: an old result (written, or failed) no longer applies to it."""
        if (self.report is not None or self.error is not None) and not self.writing:
            self.report, self.error = None, None
            self._show_plan(self.plan, self.plan_error)

    def action_scroll_plan(self, pages: int) -> None:
        plan = self.query_one("#export-plan", VerticalScroll)
        plan.scroll_to(y=plan.scroll_y + pages * max(1, plan.scrollable_content_region.height - 1), animate=False)

    # -- writing ----------------------------------------------------------------------------
    @on(Button.Pressed, "#export-write")
    def action_write(self) -> None:
        if self.writing:
            return
        if self._shown != self._token:
            # an edit changed the options and its plan is not on screen yet: never write unseen
            self.notify("the plan is being updated for your edit; check it, then write", severity="warning")
            return
        if self.plan is None:
            if self.plan_error:
                self.notify(self.plan_error, severity="error")
            return
        out_text = self.query_one("#export-out", Input).value.strip()
        if not out_text:
            self._show_plan(self.plan, "choose an output path")
            return
        out = Path(out_text).expanduser()
        try:
            exists = out.exists()
        except OSError as exc:
            self._finished(_Finished(None, f"{out}: {exc}"))
            return
        if exists:
            def answer(yes: bool | None) -> None:
                if yes:
                    self._start_write(out, True)

            self.app.push_screen(ConfirmScreen(f"{out} exists. Overwrite it?", yes="Overwrite"), answer)
            return
        self._start_write(out, False)

    def _start_write(self, out: Path, force: bool) -> None:
        self.writing = True
        self.query_one("#export-write", Button).disabled = True
        bar = self.query_one("#export-progress", ProgressBar)
        bar.update(total=None, progress=0)
        self.query_one("#export-progress-row").display = True
        self._write_worker(self.plan, out, force)

    @work(thread=True, exclusive=True, group="export-write", exit_on_error=False, description="write export")
    def _write_worker(self, plan: Any, out: Path, force: bool) -> None:
        last = [0.0]
        import time

        def progress(phase: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.1 or done >= total:
                last[0] = now
                self.post_message(_Progress(phase, done, total))

        try:
            report = self._run_export(plan, out, force=force, progress=progress)
        except Exception as exc:  # the error is the result: shown in the dialog
            self.post_message(_Finished(None, _describe_error(exc)))
            return
        self.post_message(_Finished(report, None))

    @on(_Progress)
    def _progress(self, event: _Progress) -> None:
        self.query_one("#export-progress", ProgressBar).update(total=max(1, event.total), progress=event.done)
        self.query_one("#export-phase", Label).update(event.phase)

    @on(_Finished)
    def _finished(self, event: _Finished) -> None:
        self.writing = False
        self.report, self.error = event.report, event.error
        self.query_one("#export-progress-row").display = False
        self.query_one("#export-write", Button).disabled = False
        box = self.query_one("#export-plan-text", Static)
        if event.error:
            box.update(Text(f"✗ export failed: {event.error}\n\nNothing was overwritten.", style="bold red"))
        else:
            box.update(RGroup(Text("✓ written and verified", style="bold green"), rows_table(event.report)))

    @on(Button.Pressed, "#export-close")
    def action_close(self) -> None:
        if self.writing:
            self.notify("an export is being written; wait for it to finish")
            return
        self.dismiss(self.report)


def rows_table(obj: Any) -> Any:
    """A (label, value) table from .describe(); PROBLEM rows in red."""
    t = _kv_table()
    try:
        rows = obj.describe()
    except Exception as exc:  # a summary must never break the dialog
        return Text(f"(cannot describe: {exc})")
    if isinstance(rows, str):
        return Text(rows)
    for label, value in rows:
        style = "bold red" if label == "PROBLEM" else ("bold" if label == "scaler state" else "")
        t.add_row(Text(safe_text(label), style="red" if label == "PROBLEM" else ""), Text(safe_text(value), style=style))
    return t


def _describe_error(exc: BaseException) -> str:
    from gsvinspect.errors import GsvError

    if isinstance(exc, GsvError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{getattr(exc, 'filename', '') or ''} {exc.strerror or exc}".strip()
    return f"{type(exc).__name__}: {exc}"
