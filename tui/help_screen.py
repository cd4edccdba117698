"""HelpScreen: every key binding and what the marks and colours mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .diff_view import MARKS

KEYS = (
    ("navigation", [
        ("↑ ↓ / j k", "move"), ("PgUp PgDn Home End", "page / first / last"),
        ("Enter Space", "open or close a group"), ("← → / h l", "close group, go to parent / open"),
        ("n  N", "next / previous problem key"), ("e  c", "expand all / collapse all"),
    ]),
    ("view", [
        ("/", "filter keys (text, or a regex; re:… forces regex)"),
        ("Esc", "back to the key tree from any pane; on the tree, clear the filter"),
        ("p", "only problems"), ("s", "sort by share of the change"), ("f", "flat list of full keys"),
        ("Tab  Shift+Tab", "next / previous pane (arrows, PgUp PgDn scroll it)"),
        ("1 2 3 4", "detail, rules, modules, info tab"),
    ]),
    ("actions", [
        ("r", "edit rules (re-aligns as you type; Tab or Esc leave)"), ("Ctrl+S", "save the rules file"),
        ("a", "apply the suggested rule offered above the tree"),
        ("x", "export dialog: dry-run plan first, Ctrl+S writes it, PgUp PgDn scroll it"),
        ("v", "spectrum of the change: low-rank (LoRA-like) or a rewrite? (a module: its most-changed weights)"),
        ("Ctrl+P", "command palette: suggest rules, load rules, …"),
        ("?  F1", "this help"), ("q", "quit (cancels running statistics; asks if rule edits are unsaved)"),
    ]),
)


def help_text() -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    for title, rows in KEYS:
        t.add_row(Text(title, style="bold underline"), "")
        for k, v in rows:
            t.add_row(k, v)
    t.add_row(Text("marks", style="bold underline"), "")
    labels = {"MATCHED": "matched", "DTYPE_DIFFERS": "dtype differs", "SHAPE_DIFFERS": "shape differs",
              "MISSING": "missing in fine-tuned (∅ on the right)", "UNEXPECTED": "only in fine-tuned",
              "CONFLICT": "two keys map onto one name"}
    for status, label in labels.items():
        mark, colour = MARKS[status]
        t.add_row(Text(mark, style=f"bold {colour}"), label)
    t.add_row(Text("*", style="bold red"), "a module holding problem keys of several kinds (one kind: that key's mark)")
    t.add_row("∅", "absent on this side (a key, or a module with no key in that file)")
    t.add_row("↻", "fine-tuned key renamed by a rule")
    t.add_row("12.3% ▌", "share of the model's change Σ‖ft−pre‖² (bar: log scale, 0.01 % … 100 %);"
              " the Detail tab adds the relative change ‖ft−pre‖/‖pre‖")
    return t


class HelpScreen(ModalScreen[None]):
    """Modal help; any of Esc, q, ? closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help.close"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 90; height: 90%; border: round $accent; padding: 0 1;
        background: $panel;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll() as vs:
            vs.border_title = "gsvinspect help"
            vs.border_subtitle = "Esc to close"
            yield Static(help_text())

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
