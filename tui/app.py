"""GsvInspectApp: the side-by-side inspector (keys, rules, statistics, export).

Start-up order is chosen for the first paint: the frame mounts, a thread worker opens both files
lazily (zip directory + restricted unpickle, no torch) and aligns them, the keys appear, and only
then does the statistics worker start (numpy; torch only for export). Every failure a user can cause
ends as a message in the app; workers run with exit_on_error=False so nothing kills it.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Group as RGroup
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from gsvinspect.errors import GsvError

from .detail import (SEVERITY_STYLE, DetailPanel, SpectrumAsk, checkpoint_info, embedding_table, findings_view,
                     line_detail, spectrum_section)
from .diff_view import MID_WIDTH, DiffView, fit
from .dialogs import MessageScreen, PromptScreen
from .help_screen import HelpScreen
from .model import Line
from .module_chart import ModuleChart, module_items
from .rules_editor import COUNT_ORDER, RulesEditor
from .session import Realigned, Session

STATS_FLUSH_S = 0.1  # batch statistics to <= 10 UI updates per second (TEXTUAL.md §e)
NARROW_WIDTH = 120  # below this the side panel goes under the diff view
MODULE_SPECTRA = 4  # `v` on a module decomposes this many of its most-changed weights (an SVD each)


class _Realigned(Message):
    def __init__(self, result: Realigned, text: str) -> None:
        super().__init__()
        self.result = result
        self.text = text


class _TextError(Exception):
    """A rules problem known only as text (the file could not be read)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.problem = message
        self.line = None


class _Diagnosed(Message):
    def __init__(self, session: Any, alignment: Any, findings: list) -> None:
        super().__init__()
        self.session = session
        self.alignment = alignment
        self.findings = findings


class _SpectrumDone(Message):
    """One weight's change spectrum, or why it failed (posted from the spectrum thread)."""

    def __init__(self, session: Any, row: Any, result: Any) -> None:
        super().__init__()
        self.session = session
        self.row = row
        self.result = result


class StatsBatch(Message):
    """Statistics that arrived since the last batch (posted from the stats thread)."""

    def __init__(self, generation: int, items: list, done: int, total: int, finished: bool) -> None:
        super().__init__()
        self.generation = generation
        self.items = items
        self.done = done
        self.total = total
        self.finished = finished


class Loaded(Message):
    """Both files are open and aligned (or opening failed)."""

    def __init__(self, session: Session, result: Realigned | None, error: str | None,
                 rules_text: str = "") -> None:
        super().__init__()
        self.session = session
        self.result = result
        self.error = error
        self.rules_text = rules_text


class GsvInspectApp(App[int]):
    """Inspect one checkpoint, or compare a pretrained and a fine-tuned one."""

    CSS_PATH = "app.tcss"
    TITLE = "gsvinspect"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("slash", "filter", "Filter", id="view.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="view.clear-filter"),
        Binding("p", "toggle_problems", "Problems", id="view.only-problems"),
        Binding("s", "toggle_sort", "Sort Δ", id="view.sort-change"),
        Binding("n", "next_problem", "Next problem", id="nav.next-problem"),
        Binding("N", "next_problem(-1)", "Prev problem", show=False, id="nav.prev-problem"),
        Binding("e", "expand_all", "Expand all", show=False, id="view.expand-all"),
        Binding("c", "collapse_all", "Collapse all", show=False, id="view.collapse-all"),
        Binding("f", "toggle_flat", "Flat list", show=False, id="view.flat"),
        Binding("r", "edit_rules", "Rules", id="rules.edit"),
        Binding("ctrl+s", "save_rules", "Save rules", show=False, id="rules.save"),
        Binding("x", "export", "Export", id="export.open"),
        Binding("v", "spectrum", "Spectrum", show=False, id="detail.spectrum"),
        Binding("1", "tab('tab-detail')", "Detail", show=False, id="tab.detail"),
        Binding("2", "tab('tab-rules')", "Rules tab", show=False, id="tab.rules"),
        Binding("3", "tab('tab-modules')", "Modules", show=False, id="tab.modules"),
        Binding("4", "tab('tab-info')", "Info", show=False, id="tab.info"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
    ]

    def __init__(self, pre: str | Path, ft: str | Path | None = None, *, rules: str | Path | None = None,
                 device: str = "cpu", trust: bool = False, stats: bool = True,
                 pairs: dict[str, tuple] | None = None, pair: str | None = None) -> None:
        super().__init__()
        self.session = self._new_session(pre, ft, rules, device, trust)
        self.stats_enabled = stats
        self.pairs = pairs or {}
        self.pair = pair
        self._device = device
        self._trust = trust
        self._cancel = threading.Event()
        self._align_generation = 0
        self._stats_generation = 0
        self._stats_running = False
        self._stats_done = (0, 0)
        self.model = None
        self.load_error: str | None = None
        self.loaded = threading.Event()
        self._embedding: Any = None  # the phoneme-row table of the detail pane's key, when it has one
        self._spectrum_asked: dict[str, SpectrumAsk | str] = {}  # line ident -> what `v` asked there
        self._spectrum_ident: str | None = None  # the line whose spectra are being computed

    @staticmethod
    def _new_session(pre, ft, rules, device, trust) -> Session:
        return Session(Path(pre), Path(ft) if ft is not None else None,
                       Path(rules) if rules is not None else None, trust=trust, device=device)

    # -- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(self._title_text(), id="topbar")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield Input(placeholder="filter: text or regex (re:…)  Enter: keep · Esc: clear", id="filter")
                yield Static(id="columns")
                yield DiffView(id="diff")
                yield Static("", id="message")
                with Horizontal(id="statusbar"):
                    yield Static("opening…", id="status")
                    yield ProgressBar(total=None, show_eta=False, show_percentage=True, id="progress")
            with TabbedContent(id="side", initial="tab-detail"):
                with TabPane("Detail", id="tab-detail"):
                    yield DetailPanel(id="detail")
                with TabPane("Rules", id="tab-rules"):
                    yield RulesEditor(id="rules")
                with TabPane("Modules", id="tab-modules"):
                    yield ModuleChart(id="chart")
                with TabPane("Info", id="tab-info"):
                    yield DetailPanel(id="info")
        yield Footer()

    def _title_text(self) -> Text:
        s = self.session
        t = Text()
        t.append(" gsvinspect ", style="bold reverse")
        t.append(f" {s.pre_path.name}", style="bold")
        if s.ft_path is not None:
            t.append("  ⇄  ", style="dim")
            t.append(s.ft_path.name, style="bold")
        if self.pair:
            t.append(f"   [demo: {self.pair}]", style="dim")
        return t

    @property
    def diff(self) -> DiffView:
        return self.query_one("#diff", DiffView)

    @property
    def rules_editor(self) -> RulesEditor:
        return self.query_one("#rules", RulesEditor)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#message", Static).display = False
        self.query_one("#progress", ProgressBar).display = False
        self._layout_for(self.size.width)
        self.diff.focus()
        self._paint_columns()
        self._load(self.session)

    def on_resize(self, event) -> None:
        self._layout_for(event.size.width)
        self._paint_columns()

    def _layout_for(self, width: int) -> None:
        self.screen.set_class(width < NARROW_WIDTH, "-narrow")

    def _paint_columns(self) -> None:
        s = self.session
        try:
            width = self.diff.scrollable_content_region.width
        except Exception:
            return
        if not width:
            # Not laid out yet: painting with the app's width would give a header that depends
            # on timing. Try again after the next refresh (bounded, in case it stays hidden).
            self._paint_retries = getattr(self, "_paint_retries", 0) + 1
            if self._paint_retries <= 50:
                self.call_after_refresh(self._paint_columns)
            return
        self._paint_retries = 0
        if s.single:
            text = Text(fit(f" {s.pre_path.name}", width - MID_WIDTH) + "  elements", style="bold")
        else:
            left = (width - MID_WIDTH) // 2
            right = width - MID_WIDTH - left
            text = Text()
            text.append(fit(f" pretrained: {s.pre_path.name}", left), style="bold")
            text.append(fit("    Δ rel", MID_WIDTH), style="bold")
            text.append(fit(f"fine-tuned: {s.ft_path.name}", right), style="bold")
        self.query_one("#columns", Static).update(text)

    # -- loading ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load", exit_on_error=False, description="open checkpoints")
    def _load(self, session: Session) -> None:
        # Opening builds ~25 objects per tensor; automatic collections in between would re-scan the
        # growing heap again and again (~30 % of the load time at 20k keys), and none of it is garbage.
        gc.disable()
        try:
            self._load_inner(session)
        finally:
            gc.enable()

    def _load_inner(self, session: Session) -> None:
        text = ""
        rules_error = None
        try:
            text = session.read_rules_file()
        except GsvError as exc:
            rules_error = str(exc)
        try:
            session.open(text)
        except GsvError as exc:
            self.post_message(Loaded(session, None, str(exc)))
            return
        except Exception as exc:  # an unexpected reader failure still ends as a message
            self.post_message(Loaded(session, None, f"{session.pre_path}: cannot open: "
                                                    f"{type(exc).__name__}: {exc}"))
            return
        result = session.realign(text, 0)
        if result.model is None:  # a bad rules file: keys still appear, aligned without rules
            fallback = session.realign("", 0)
            fallback.error = result.error
            result = fallback
        if rules_error:
            result.error = result.error or _TextError(rules_error)
        self.post_message(Loaded(session, result, None, text))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        if event.session is not self.session:
            return
        if event.error is not None:
            self.load_error = event.error
            self._show_message(f"✗ {event.error}")
            self.query_one("#status", Static).update(Text("could not open the checkpoint", style="red"))
            self.loaded.set()
            return
        s = self.session
        editor = self.rules_editor
        editor.set_text(event.rules_text, notify=False)
        result = event.result
        if result.error is not None:
            # bad rules file: the keys were aligned without rules; the editor shows the error
            self.notify(f"rules: {result.error}", severity="error", timeout=8)
        self._adopt(result, event.rules_text)
        if s.single:
            self.query_one("#side", TabbedContent).hide_tab("tab-rules")
        else:
            editor.show_result(self._counts(), result.error)
        self.query_one("#info", DetailPanel).show(self._info_renderable())
        self._update_status()
        self.loaded.set()
        if not s.single:
            self._diagnose()
            if self.stats_enabled:
                self.call_after_refresh(self._start_stats)

    def _adopt(self, result: Realigned, text: str) -> None:
        self.session.adopt(result, text)
        old, self.model = self.model, result.model
        self._forget_spectra()  # asks hold the old alignment's rows
        self.diff.set_model(result.model)
        if old is not None and old is not result.model:
            old.dispose()
        # Everything alive now lives until the next rule edit: keep it out of the collector's
        # scans (a full collection over a 20k-key model costs 0.1-0.3 s on the UI thread).
        gc.freeze()
        self._paint_columns()
        self._update_chart()

    def _show_message(self, message: str) -> None:
        msg = self.query_one("#message", Static)
        msg.update(Text(message, style="bold red"))
        msg.display = True
        self.diff.display = False

    # -- status, counts ---------------------------------------------------------------------
    def _counts(self) -> dict[str, int]:
        """The alignment's non-zero counts by status name (a pair; the library counted them)."""
        al = self.session.alignment
        return {status.name: n for status, n in al.counts.items() if n} if al is not None else {}

    def _update_status(self) -> None:
        s = self.session
        if self.model is None:
            return
        t = Text()
        if s.single:
            t.append(f"{len(self.model.leaves):,} tensors", style="bold")
        else:
            counts = self._counts()
            matched = counts.get("MATCHED", 0) + counts.get("DTYPE_DIFFERS", 0)
            t.append(f"{matched:,} matched", style="bold green")
            for name, label, style in COUNT_ORDER[1:]:  # the problems, as the rules pane names them
                n = counts.get(name, 0)
                if n:
                    t.append(f" · {n:,} {label}", style=style)
        m = self.model
        flags = []
        if m.filter_text:
            flags.append(f"filter “{m.filter_text}”" + (" (bad regex)" if m.filter_error else ""))
        if m.only_problems:
            flags.append("problems only")
        if m.sort_by_change:
            flags.append("sorted by Δ")
        if m.flat:
            flags.append("flat")
        if flags:
            t.append("  [" + ", ".join(flags) + "]", style="cyan")
        findings = s.findings  # stays empty for a single file
        if findings:
            worst = "error" if any(f.severity == "error" for f in findings) else (
                "warning" if any(f.severity == "warning" for f in findings) else "info")
            t.append(f"  {len(findings)} finding{'s' if len(findings) != 1 else ''} (4: info)",
                     style=SEVERITY_STYLE[worst])
        done, total = self._stats_done
        if self._stats_running:
            t.append(f"  statistics {100 * done / max(1, total):.0f}%", style="dim")
        self.query_one("#status", Static).update(t)

    # -- rules ------------------------------------------------------------------------------
    @on(RulesEditor.Edited)
    def _rules_edited(self, event: RulesEditor.Edited) -> None:
        if self.session.pre is None or self.session.single:
            return
        self._align_generation += 1
        self._realign(event.text, self._align_generation)

    @work(thread=True, exclusive=True, group="align", exit_on_error=False, description="re-align")
    def _realign(self, text: str, generation: int) -> None:
        gc.disable()  # building a model allocates ~10 objects per key, none of them garbage
        try:
            result = self.session.realign(text, generation)
        finally:
            gc.enable()
        self.post_message(_Realigned(result, text))

    @on(_Realigned)
    def _realigned(self, event: _Realigned) -> None:
        self._apply_realign(event.result, event.text)

    def _apply_realign(self, result: Realigned, text: str) -> None:
        if result.generation != self._align_generation:
            return  # a newer edit is on its way
        editor = self.rules_editor
        if result.error is not None:
            editor.show_result(None, result.error)
            return
        self._adopt(result, text)
        n_rules = len(result.rules) if result.rules is not None else 0
        dead = result.alignment.dead_rules()
        extra = f"{n_rules} rule{'s' if n_rules != 1 else ''}"
        if dead:
            extra += " · unused: " + ", ".join(str(i + 1) for i in dead)
        editor.show_result(self._counts(), None, extra)
        self._update_status()
        self._diagnose()
        if self.stats_enabled and self.session.pending_triples():
            self._start_stats()

    @on(RulesEditor.ActionRequested)
    def _rules_action(self, event: RulesEditor.ActionRequested) -> None:
        {"suggest": self.action_suggest_rules, "load": self.action_load_rules,
         "save": self.action_save_rules}[event.action]()

    def action_suggest_rules(self) -> None:
        if self.session.pre is None or self.session.single:
            return
        try:
            toml = self.session.suggest()
        except Exception as exc:  # suggestion is advisory; never fatal
            self.notify(f"no suggestion: {exc}", severity="error")
            return
        self.query_one("#side", TabbedContent).active = "tab-rules"
        self.rules_editor.set_text(toml)
        self.notify("suggested rules inserted")

    def action_load_rules(self) -> None:
        def done(path: str | None) -> None:
            if not path:
                return
            p = Path(path).expanduser()
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.push_screen(MessageScreen("Cannot load rules", f"{p}: {exc}"))
                return
            self.session.rules_path = p
            self.rules_editor.set_text(text)
            self.notify(f"loaded {p.name}")

        start = str(self.session.rules_path or "rules.toml")
        self.push_screen(PromptScreen("Load rules file", start, "path to a .toml rules file"), done)

    def action_save_rules(self) -> None:
        if self.session.single:
            return

        def write(path: str | None) -> None:
            if not path:
                return
            p = Path(path).expanduser()
            try:
                p.write_text(self.rules_editor.text, encoding="utf-8")
            except OSError as exc:
                self.push_screen(MessageScreen("Cannot save rules", f"{p}: {exc}"))
                return
            self.session.rules_path = p
            self.notify(f"saved {p}")

        if self.session.rules_path is not None:
            write(str(self.session.rules_path))
        else:
            self.push_screen(PromptScreen("Save rules as", "rules.toml"), write)

    # -- statistics -------------------------------------------------------------------------
    def _start_stats(self) -> None:
        triples = self.session.pending_triples()
        if not triples:
            return
        self._cancel.set()  # stop a previous run
        self._cancel = threading.Event()
        self._stats_generation += 1
        self._stats_running = True
        self._stats_done = (0, len(triples))
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=len(triples), progress=0)
        bar.display = True
        self._stats_worker(triples, self._stats_generation, self._cancel)

    @work(thread=True, group="stats", exit_on_error=False, description="statistics")
    def _stats_worker(self, triples: list, generation: int, cancel: threading.Event) -> None:
        pending: list = []
        pairs = {t: (p, f) for t, p, f in triples}
        state = {"done": 0, "total": len(triples), "last": time.monotonic()}

        def flush(finished: bool = False) -> None:
            items = pending[:]
            del pending[: len(items)]
            state["last"] = time.monotonic()
            self.post_message(StatsBatch(generation, items, state["done"], state["total"], finished))

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
            self.session.compute_stats(triples, progress=progress, cancel=cancel, on_result=on_result)
        except Cancelled:  # we asked for it
            return
        except Exception as exc:  # a bad tensor must not take the app down
            if not cancel.is_set():
                self.post_message(StatsBatch(generation, pending[:], state["done"], state["total"], True))
                self.call_from_thread(self.notify, f"statistics failed: {exc}", severity="error")
            return
        if not cancel.is_set():
            state["done"] = state["total"]
            flush(finished=True)

    @on(StatsBatch)
    def _stats_arrived(self, event: StatsBatch) -> None:
        for _target, st, pair in event.items:
            if pair is not None:
                self.session.stats_by_pair[pair] = st
        if self.model is not None:
            self.model.set_stats((target, st) for target, st, _pair in event.items)
            self.model.rollup()
        bar = self.query_one("#progress", ProgressBar)
        if event.generation == self._stats_generation:
            self._stats_done = (event.done, event.total)
            bar.update(total=max(1, event.total), progress=event.done)
            if event.finished:
                self._stats_running = False
                bar.display = False
        if self.model is not None and self.model.sort_by_change:
            self.diff.rebuild()
        else:
            self.diff.refresh_content()
        if event.finished or self.query_one("#side", TabbedContent).active == "tab-modules":
            self._update_chart()  # walks every group: only when it is visible, or at the end
        self._update_status()
        if event.finished:
            self._refresh_detail()

    @property
    def stats_running(self) -> bool:
        return self._stats_running

    @on(TabbedContent.TabActivated, "#side")
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-modules":
            self._update_chart()

    def _update_chart(self) -> None:
        try:
            self.query_one("#chart", ModuleChart).update_chart(module_items(self.model))
        except Exception:
            pass

    # -- findings / info --------------------------------------------------------------------
    def _diagnose(self) -> None:
        self._diagnose_worker(self.session, self.session.alignment)

    @work(thread=True, exclusive=True, group="diagnose", exit_on_error=False, description="diagnose")
    def _diagnose_worker(self, session: Session, alignment: Any) -> None:
        try:
            findings = session.diagnose()
        except Exception as exc:  # diagnosis is advisory
            self.call_from_thread(self.notify, f"diagnosis failed: {exc}", severity="warning")
            return
        self.post_message(_Diagnosed(session, alignment, findings))

    @on(_Diagnosed)
    def _diagnosed(self, event: _Diagnosed) -> None:
        if event.session is not self.session or event.alignment is not self.session.alignment:
            return
        self.query_one("#info", DetailPanel).show(self._info_renderable())
        self._update_status()

    def _info_renderable(self):
        s = self.session
        parts = []
        if not s.single:
            parts += [Text("GPT-SoVITS findings", style="bold underline"), findings_view(s.findings), Text("")]
        for ck, title in ((s.pre, "pretrained"), (s.ft, "fine-tuned")):
            if ck is not None:
                try:
                    parts += [checkpoint_info(ck, f"{title}: {ck.path.name}"), Text("")]
                except Exception as exc:  # an odd extra entry must not hide the rest
                    parts.append(Text(f"{title}: cannot summarise: {exc}", style="red"))
        return RGroup(*parts)

    # -- detail -----------------------------------------------------------------------------
    @on(DiffView.Highlighted)
    def _highlighted(self, event: DiffView.Highlighted) -> None:
        self._leave_spectrum(event.line)
        self._refresh_detail(event.line)

    def _refresh_detail(self, line: Line | None = None) -> None:
        line = line if line is not None else self.diff.current
        self._embedding = None
        self._paint_detail(line)
        if line is not None and not line.is_group and self._is_embedding(line):
            self._embedding_worker(line)

    def _paint_detail(self, line: Line | None) -> None:
        """The key's detail, its phoneme rows when they arrived, and what `v` computed for it."""
        parts = [line_detail(line, self.session.rules, self.session.single)]
        if self._embedding is not None:
            parts.append(self._embedding)
        ask = self._spectrum_asked.get(line.ident) if line is not None else None
        if ask is not None:
            parts.append(spectrum_section(ask, self.session.spectra))
        self.query_one("#detail", DetailPanel).show(RGroup(*parts) if len(parts) > 1 else parts[0])

    @staticmethod
    def _is_embedding(line: Line) -> bool:
        row = line.node.row
        return (row.pre is not None and row.ft is not None and len(row.pre.shape) == 2
                and row.pre.shape == row.ft.shape and "embedding" in row.target)

    @work(thread=True, exclusive=True, group="embedding", exit_on_error=False, description="embedding rows")
    def _embedding_worker(self, line: Line) -> None:
        row = line.node.row
        try:
            from gsvinspect.stats.rollup import embedding_keys, embedding_rows

            if not embedding_keys([row.target]):
                return
            rows = embedding_rows(self.session.pre, self.session.ft, row.pre_key, row.ft_key)
        except Exception:  # the panel simply shows no row table
            return
        if rows:
            self.call_from_thread(self._show_embedding, line, rows)

    def _show_embedding(self, line: Line, rows: Any) -> None:
        if self.diff.current_ident != line.ident:
            return
        self._embedding = embedding_table(rows)
        self._paint_detail(line)

    # -- change spectra ---------------------------------------------------------------------
    def action_spectrum(self) -> None:
        line = self.diff.current
        if line is None or self.model is None:
            self.notify("no key under the cursor")
            return
        ask = self._spectrum_ask(line)
        self._spectrum_asked[line.ident] = ask
        self._spectrum_ident = line.ident
        self.query_one("#side", TabbedContent).active = "tab-detail"
        self._paint_detail(line)
        if isinstance(ask, SpectrumAsk):
            todo = [r for r in ask.rows if (r.pre_key, r.ft_key) not in self.session.spectra]
            if todo:
                self._spectrum_worker(self.session, todo)

    def _spectrum_ask(self, line: Line) -> SpectrumAsk | str:
        """The rows `v` decomposes on this line (a key, or a module's most-changed), or why none."""
        if self.session.single:
            return "a change spectrum needs a pretrained and a fine-tuned checkpoint"
        if not line.is_group:
            row = line.node.row
            return self.session.why_no_spectrum(row) or SpectrumAsk("change spectrum", [row])
        leaves = self.model.leaves

        def change(row: Any) -> float | None:
            leaf = leaves.get(row.target)
            return leaf.change if leaf is not None else None

        prefix = line.node.prefix
        rows = self.session.module_spectrum_rows(prefix, MODULE_SPECTRA, change)
        if not rows:
            return f"{prefix}.* holds no paired 2-D weight of one shape on both sides"
        ranked = any(change(r) is not None for r in rows)
        title = (f"change spectra of {len(rows)} {'most-changed ' if ranked else ''}2-D weight"
                 f"{'s' if len(rows) > 1 else ''} under {prefix}.*")
        return SpectrumAsk(title + ("" if ranked else " (in file order: no statistics to rank by yet)"), rows)

    @work(thread=True, exclusive=True, group="spectrum", exit_on_error=False, description="change spectrum")
    def _spectrum_worker(self, session: Session, rows: list) -> None:
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
            self.post_message(_SpectrumDone(session, row, result))

    @on(_SpectrumDone)
    def _spectrum_arrived(self, event: _SpectrumDone) -> None:
        if event.session is not self.session:
            return
        self.session.spectra[(event.row.pre_key, event.row.ft_key)] = event.result
        line = self.diff.current
        ask = self._spectrum_asked.get(line.ident) if line is not None else None
        if isinstance(ask, SpectrumAsk) and event.row in ask.rows:
            self._paint_detail(line)

    def _leave_spectrum(self, line: Line | None) -> None:
        """Moving off a line whose spectra are still being computed cancels them and forgets the ask
        (pressing `v` there again starts over; finished spectra stay cached)."""
        ident = self._spectrum_ident
        if ident is None or (line is not None and line.ident == ident):
            return
        self._spectrum_ident = None
        ask = self._spectrum_asked.get(ident)
        if isinstance(ask, SpectrumAsk) and any((r.pre_key, r.ft_key) not in self.session.spectra for r in ask.rows):
            self.workers.cancel_group(self, "spectrum")
            del self._spectrum_asked[ident]

    def _forget_spectra(self) -> None:
        self.workers.cancel_group(self, "spectrum")
        self._spectrum_asked.clear()
        self._spectrum_ident = None

    # -- view actions -----------------------------------------------------------------------
    def _view_changed(self) -> None:
        self.diff.rebuild()
        self._update_status()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self.model is None:
            return
        self.model.set_filter(event.value)
        self._view_changed()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        box = self.query_one("#filter", Input)
        if not box.value:
            box.display = False
        self.diff.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if not box.display and not box.value:
            return
        box.value = ""
        box.display = False
        if self.model is not None:
            self.model.set_filter("")
            self._view_changed()
        self.diff.focus()

    def action_toggle_problems(self) -> None:
        if self.model is not None:
            self.model.only_problems = not self.model.only_problems
            self._view_changed()

    def action_toggle_sort(self) -> None:
        if self.model is not None:
            self.model.sort_by_change = not self.model.sort_by_change
            self._view_changed()

    def action_toggle_flat(self) -> None:
        if self.model is not None:
            self.model.flat = not self.model.flat
            self._view_changed()

    def action_expand_all(self) -> None:
        if self.model is not None:
            self.model.expand_all()
            self._view_changed()

    def action_collapse_all(self) -> None:
        if self.model is not None:
            self.model.collapse_all()
            self._view_changed()

    def action_next_problem(self, step: int = 1) -> None:
        if not self.diff.next_problem(step):
            self.notify("no problem keys in view")

    def action_tab(self, tab: str) -> None:
        if tab == "tab-rules" and self.session.single:
            return
        self.query_one("#side", TabbedContent).active = tab

    def action_edit_rules(self) -> None:
        if self.session.single:
            self.notify("rules need two checkpoints")
            return
        self.query_one("#side", TabbedContent).active = "tab-rules"
        self.rules_editor.text_area.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_export(self) -> None:
        s = self.session
        if s.single or s.pre is None or s.ft is None:
            self.notify("export needs a pretrained and a fine-tuned checkpoint", severity="warning")
            return
        from .export_screen import ExportScreen

        self.push_screen(ExportScreen(s))

    def action_recompute_stats(self) -> None:
        self.session.stats_by_pair.clear()
        self._start_stats()

    def action_switch_pair(self, name: str) -> None:
        spec = self.pairs.get(name)
        if spec is None:
            return
        self._cancel.set()
        old = self.session
        pre, ft, rules = (tuple(spec) + (None, None))[:3]
        self.pair = name
        self.session = self._new_session(pre, ft, rules, self._device, self._trust)
        old.close()
        self.model = None
        self.diff.set_model(None)
        self.query_one("#topbar", Static).update(self._title_text())
        self.query_one("#status", Static).update("opening…")
        self._paint_columns()
        self.loaded.clear()
        self._load(self.session)

    async def action_quit(self) -> None:
        self._cancel.set()  # stop the statistics thread at its next key
        self.exit(0)

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        yield SystemCommand("Suggest rules", "insert rules that line up the keys", self.action_suggest_rules)
        yield SystemCommand("Load rules file…", "replace the rules with a file's", self.action_load_rules)
        yield SystemCommand("Save rules file", "write the rules editor's text", self.action_save_rules)
        yield SystemCommand("Export…", "plan and write a new base model", self.action_export)
        yield SystemCommand("Toggle only problems", "show only keys that do not match", self.action_toggle_problems)
        yield SystemCommand("Toggle sort by change", "largest relative change first", self.action_toggle_sort)
        yield SystemCommand("Toggle flat list", "full keys, no tree", self.action_toggle_flat)
        yield SystemCommand("Expand all groups", "open every module", self.action_expand_all)
        yield SystemCommand("Collapse all groups", "close every module", self.action_collapse_all)
        yield SystemCommand("Next problem", "jump to the next problem key", self.action_next_problem)
        yield SystemCommand("Recompute statistics", "run the statistics again", self.action_recompute_stats)
        yield SystemCommand("Spectrum of the change", "low-rank (LoRA-like) or a rewrite? the key or module "
                            "under the cursor (v)", self.action_spectrum)
        for name in self.pairs:
            yield SystemCommand(f"Demo pair: {name}", f"open the demo's {name} pair",
                                lambda name=name: self.action_switch_pair(name))

    # -- workers ----------------------------------------------------------------------------
    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(f"{event.worker.group}: {type(error).__name__}: {error}", severity="error", timeout=10)
            if event.worker.group == "load":
                self.load_error = str(error)
                self._show_message(f"✗ {error}")
                self.loaded.set()

    def on_unmount(self) -> None:
        self._cancel.set()
        self.session.close()
