"""MainScreen: the inspector's one screen: key tree, status bar and the side tabs, and its keys.

It lays out the widgets, paints the header and status line, and turns view keys into view-model
changes. Work (opening, aligning, statistics, spectra, findings) belongs to the controllers; the
screen only shows what they hand back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group as RGroup
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, ProgressBar, Static, TabbedContent, TabPane

from .detail import SEVERITY_STYLE, DetailPanel, checkpoint_info, findings_view
from .diff_view import MID_WIDTH, DiffView, fit
from .module_chart import ModuleChart, module_items
from .rules_editor import PROBLEM_COUNTS, RulesEditor, RulesText, matched_text

if TYPE_CHECKING:
    from .app import GsvInspectApp

NARROW_WIDTH = 120  # below this the side panel goes under the diff view


class MainScreen(Screen):
    """Pretrained and fine-tuned side by side, with Detail, Rules, Modules and Info tabs."""

    app: "GsvInspectApp"

    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("slash", "filter", "Filter", id="view.filter"),
        Binding("escape", "back", "Back to keys", show=False, id="view.back"),
        Binding("a", "apply_suggestion", "Apply rule", id="rules.apply-suggestion"),
        Binding("p", "toggle_problems", "Problems", id="view.only-problems"),
        Binding("s", "toggle_sort", "Sort Δ", id="view.sort-change"),
        Binding("n", "next_problem", "Next problem", show=False, id="nav.next-problem"),
        Binding("N", "next_problem(-1)", "Prev problem", show=False, id="nav.prev-problem"),
        Binding("e", "expand_all", "Expand all", show=False, id="view.expand-all"),
        Binding("c", "collapse_all", "Collapse all", show=False, id="view.collapse-all"),
        Binding("f", "toggle_flat", "Flat list", show=False, id="view.flat"),
        Binding("r", "edit_rules", "Rules", id="rules.edit"),
        Binding("ctrl+s", "save_rules", "Save rules", show=False, id="rules.save"),
        Binding("x", "export", "Export", id="export.open"),
        Binding("v", "spectrum", "Spectrum", show=False, id="detail.spectrum"),
        Binding("1", "show_tab('tab-detail')", "Detail", show=False, id="tab.detail"),
        Binding("2", "show_tab('tab-rules')", "Rules tab", show=False, id="tab.rules"),
        Binding("3", "show_tab('tab-modules')", "Modules", show=False, id="tab.modules"),
        Binding("4", "show_tab('tab-info')", "Info", show=False, id="tab.info"),
        Binding("question_mark,f1", "app.help", "Help", id="app.help"),
    ]
    """Keys of the main screen; check_action() hides (and disables) the ones that do nothing now."""

    PAIR_ONLY = frozenset({"apply_suggestion", "toggle_problems", "toggle_sort", "next_problem", "edit_rules",
                           "save_rules", "export"})
    """Actions that need a pretrained and a fine-tuned checkpoint."""

    def compose(self) -> ComposeResult:
        yield Static(self.app.title_text(self.app.size.width), id="topbar")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                yield Input(placeholder="filter: text or regex (re:…)  Enter: keep · Esc: clear", id="filter")
                yield Static("", id="hint")
                yield Static(id="columns")
                yield DiffView(id="diff", classes="pane")
                yield Static("", id="message")
                with Horizontal(id="statusbar"):
                    yield Static("opening…", id="status")
                    yield ProgressBar(total=None, show_eta=False, show_percentage=True, id="progress")
            with TabbedContent(id="side", initial="tab-detail"):
                with TabPane("Detail", id="tab-detail"):
                    yield DetailPanel(id="detail", classes="pane")
                with TabPane("Rules", id="tab-rules"):
                    yield RulesEditor(id="rules")
                with TabPane("Modules", id="tab-modules"):
                    yield ModuleChart(id="chart", classes="pane")
                with TabPane("Info", id="tab-info"):
                    yield DetailPanel(id="info", classes="pane")
        yield Footer(compact=True)

    # -- widgets --------------------------------------------------------------------------------
    @property
    def diff(self) -> DiffView:
        return self.query_one("#diff", DiffView)

    @property
    def rules_editor(self) -> RulesEditor:
        return self.query_one("#rules", RulesEditor)

    @property
    def detail(self) -> DetailPanel:
        return self.query_one("#detail", DetailPanel)

    @property
    def side(self) -> TabbedContent:
        return self.query_one("#side", TabbedContent)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one("#message", Static).display = False
        self.query_one("#hint", Static).display = False
        self.query_one("#progress", ProgressBar).display = False
        self._layout_for(self.app.size.width)
        self.diff.focus()
        self.paint_columns()
        self.app.screen_ready()

    def on_resize(self, event) -> None:
        self._layout_for(event.size.width)
        self.paint_title()
        self.paint_columns()

    def paint_title(self) -> None:
        self.query_one("#topbar", Static).update(self.app.title_text(self.size.width or self.app.size.width))

    def _layout_for(self, width: int) -> None:
        self.set_class(width < NARROW_WIDTH, "-narrow")

    # -- header, status, message ----------------------------------------------------------------
    def new_pair(self) -> None:
        """Another pair is opening: title, empty tree, "opening…"."""
        self.diff.set_model(None)
        self.paint_title()
        self.query_one("#status", Static).update("opening…")
        self.paint_columns()

    def paint_columns(self) -> None:
        s = self.app.session
        try:
            width = self.diff.scrollable_content_region.width
        except Exception:
            return
        if not width:
            # Not laid out yet: painting with the app's width would give a header that depends
            # on timing. Try again after the next refresh (bounded, in case it stays hidden).
            self._paint_retries = getattr(self, "_paint_retries", 0) + 1
            if self._paint_retries <= 50:
                self.call_after_refresh(self.paint_columns)
            return
        self._paint_retries = 0
        if s.single:
            text = Text(fit(f" {s.pre_path.name}", width - MID_WIDTH) + "  elements", style="bold")
        else:
            left = (width - MID_WIDTH) // 2
            right = width - MID_WIDTH - left
            text = Text()
            text.append(fit(f" pretrained: {s.pre_path.name}", left), style="bold")
            text.append(fit("   share", MID_WIDTH), style="bold")   # of the model's Σ‖Δ‖² (stats.rank)
            text.append(fit(f"fine-tuned: {s.ft_path.name}", right), style="bold")
        self.query_one("#columns", Static).update(text)

    def show_message(self, message: str) -> None:
        """A message in place of the key tree (the files could not be opened)."""
        msg = self.query_one("#message", Static)
        msg.update(Text(message, style="bold red"))
        msg.display = True
        self.diff.display = False

    def set_status(self, text: Text | str) -> None:
        self.query_one("#status", Static).update(text)

    def update_status(self) -> None:
        app = self.app
        model = app.model
        if model is None:
            return
        t = Text()
        if app.session.single:
            t.append(f"{len(model.leaves):,} tensors", style="bold")
        else:
            counts = app.counts()
            t.append_text(matched_text(counts))
            for name, label, style in PROBLEM_COUNTS:  # the problems, as the rules pane names them
                n = counts.get(name, 0)
                if n:
                    t.append(f" · {n:,} {label}", style=style)
        flags = []
        if model.filter_text:
            flags.append(f"filter “{model.filter_text}”" + (" (bad regex)" if model.filter_error else ""))
        if model.only_problems:
            flags.append("problems only")
        if model.sort_by_change:
            flags.append("sorted by share")
        if model.flat:
            flags.append("flat")
        if flags:
            t.append("  [" + ", ".join(flags) + "]", style="cyan")
        findings = app.session.findings  # stays empty for a single file
        if findings:
            worst = "error" if any(f.severity == "error" for f in findings) else (
                "warning" if any(f.severity == "warning" for f in findings) else "info")
            t.append(f"  {len(findings)} finding{'s' if len(findings) != 1 else ''} (4: info)",
                     style=SEVERITY_STYLE[worst])
        done, total = app.stats.done
        if app.stats.running:
            t.append(f"  statistics {100 * done / max(1, total):.0f}%", style="dim")
        self.set_status(t)

    def show_progress(self, done: int, total: int) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(1, total), progress=done)
        bar.display = True

    def hide_progress(self) -> None:
        self.query_one("#progress", ProgressBar).display = False

    # -- model, statistics, tabs ------------------------------------------------------------------
    def show_model(self, model) -> None:
        self.diff.set_model(model)
        self.paint_columns()
        self.update_chart()
        self.refresh_bindings()

    def stats_changed(self, finished: bool) -> None:
        """A batch of statistics was attached to the model."""
        model = self.app.model
        if model is not None and model.sort_by_change:
            self.diff.rebuild()
        else:
            self.diff.refresh_content()
        if finished or self.side.active == "tab-modules":
            self.update_chart()  # walks every group: only when it is visible, or at the end
        self.update_status()
        if finished:
            self.app.details.show()
            self.refresh_bindings()

    def update_chart(self) -> None:
        try:
            self.query_one("#chart", ModuleChart).update_chart(module_items(self.app.model))
        except Exception:
            pass

    def show_info(self) -> None:
        s = self.app.session
        parts = []
        if not s.single:
            parts += [Text("GPT-SoVITS findings", style="bold underline"), findings_view(s.findings), Text("")]
        for ck, title in ((s.pre, "pretrained"), (s.ft, "fine-tuned")):
            if ck is not None:
                try:
                    parts += [checkpoint_info(ck, f"{title}: {ck.path.name}"), Text("")]
                except Exception as exc:  # an odd extra entry must not hide the rest
                    parts.append(Text(f"{title}: cannot summarise: {exc}", style="red"))
        self.query_one("#info", DetailPanel).show(RGroup(*parts))

    def hide_rules_tab(self) -> None:
        self.side.hide_tab("tab-rules")

    def show_tab(self, tab: str) -> None:
        self.side.active = tab

    @on(TabbedContent.TabActivated, "#side")
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-modules":
            self.update_chart()

    @on(DiffView.Highlighted)
    def _highlighted(self, event: DiffView.Highlighted) -> None:
        self.app.spectra.leave(event.line)
        self.app.details.show(event.line)

    @on(RulesText.Left)
    def _left_editor(self, event: RulesText.Left) -> None:
        self.diff.focus()  # queued on the app: the key below follows it
        self.app.call_later(self.app.simulate_key, event.key)

    @on(RulesEditor.Edited)
    def _rules_edited(self, event: RulesEditor.Edited) -> None:
        self.app.rules.edited(event.text)

    @on(RulesEditor.ActionRequested)
    def _rules_action(self, event: RulesEditor.ActionRequested) -> None:
        {"suggest": self.app.rules.suggest, "load": self.app.rules.load,
         "save": self.app.rules.save}[event.action]()

    # -- which keys apply ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Keys that would do nothing here are neither shown in the footer nor run."""
        app = self.app
        model = app.model
        if action in ("quit", "help", "show_tab", "back"):
            return True
        if model is None:
            return False  # nothing opened (yet, or it failed)
        if app.session.single and action in self.PAIR_ONLY:
            return False
        if action == "apply_suggestion":
            return app.rules.suggestion is not None
        if action == "next_problem":
            return model.root.n_problems > 0
        if action == "toggle_problems":
            return model.root.n_problems > 0 or model.only_problems
        return True

    def show_hint(self, text: Text | None) -> None:
        """A line above the keys that says what to do next (None hides it)."""
        hint = self.query_one("#hint", Static)
        hint.update(text or "")
        hint.display = text is not None
        self.refresh_bindings()

    # -- keys that reach the app's work -----------------------------------------------------------
    def action_quit(self) -> None:
        self.app.request_quit()

    def action_apply_suggestion(self) -> None:
        self.app.rules.apply_suggestion()

    def action_edit_rules(self) -> None:
        self.app.action_edit_rules()

    def action_save_rules(self) -> None:
        self.app.action_save_rules()

    def action_export(self) -> None:
        self.app.action_export()

    def action_spectrum(self) -> None:
        self.app.action_spectrum()

    # -- view keys --------------------------------------------------------------------------------
    def _view_changed(self) -> None:
        self.diff.rebuild()
        self.update_status()
        self.refresh_bindings()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self.app.model is None:
            return
        self.app.model.set_filter(event.value)
        self._view_changed()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        box = self.query_one("#filter", Input)
        if not box.value:
            box.display = False
        self.diff.focus()

    def action_back(self) -> None:
        """Esc: from any pane (the rules editor too) back to the key tree; on the tree, clear the filter."""
        box = self.query_one("#filter", Input)
        if self.focused is not self.diff and self.focused is not box:
            self.diff.focus()
            return
        self.action_clear_filter()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if not box.display and not box.value:
            self.diff.focus()
            return
        box.value = ""
        box.display = False
        if self.app.model is not None:
            self.app.model.set_filter("")
            self._view_changed()
        self.diff.focus()

    def _toggle(self, flag: str) -> None:
        model = self.app.model
        if model is not None:
            setattr(model, flag, not getattr(model, flag))
            self._view_changed()

    def action_toggle_problems(self) -> None:
        self._toggle("only_problems")

    def action_toggle_sort(self) -> None:
        self._toggle("sort_by_change")

    def action_toggle_flat(self) -> None:
        self._toggle("flat")

    def action_expand_all(self) -> None:
        if self.app.model is not None:
            self.app.model.expand_all()
            self._view_changed()

    def action_collapse_all(self) -> None:
        if self.app.model is not None:
            self.app.model.collapse_all()
            self._view_changed()

    def action_next_problem(self, step: int = 1) -> None:
        if not self.diff.next_problem(step):
            self.notify("no problem keys in view")

    def action_show_tab(self, tab: str) -> None:
        if tab == "tab-rules" and self.app.session.single:
            return
        self.show_tab(tab)
