"""The rules pane: an editable TOML text area, live counts, the error at its line, and buttons.

The editor only reports edits (debounced ~150 ms); the app parses and re-aligns in a worker and
calls back with counts or the error. Keeping parsing out of the widget keeps it presentation only.
"""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.strip import Strip
from textual.timer import Timer
from textual.widgets import Button, Static, TextArea

DEBOUNCE_S = 0.15
COUNT_ORDER = (
    ("MATCHED", "matched", "green"),
    ("MISSING", "missing", "red"),
    ("UNEXPECTED", "unexpected", "magenta"),
    ("CONFLICT", "conflicts", "bright_red"),
    ("SHAPE_DIFFERS", "shape", "red"),
    ("DTYPE_DIFFERS", "dtype", "yellow"),
)
PROBLEM_COUNTS = tuple(c for c in COUNT_ORDER if c[0] not in ("MATCHED", "DTYPE_DIFFERS"))


class RulesText(TextArea):
    """A TextArea that paints the line holding a rules error (the inline error marker)."""

    error_line: int | None = None  # 1-based

    class Left(Message):
        """Esc and the next key arrived as one Alt+key (they do over SSH): leave, then do `key`."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    async def _on_key(self, event) -> None:
        key = event.key
        if key.startswith("alt+") and len(key) == 5 and key[4].isprintable():
            event.stop()
            event.prevent_default()
            self.post_message(self.Left(key[4:]))
            return
        await super()._on_key(event)

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if self.error_line is not None and not self.soft_wrap:
            if y + self.scroll_offset.y == self.error_line - 1:
                strip = strip.apply_style(Style(bgcolor="dark_red"))
        return strip


def matched_text(counts: dict[str, int]) -> Text:
    """The headline, as the CLI's `diff` says it: dtype-only differences are matched (GPT-SoVITS casts
    on load), with their number after it, never listed beside the problems."""
    dtype = counts.get("DTYPE_DIFFERS", 0)
    text = Text(f"{counts.get('MATCHED', 0) + dtype:,} matched", style="bold green")
    if dtype:
        text.append(f" ({dtype:,} dtype only)", style="dim")
    return text


def format_counts(counts: dict[str, int]) -> Text:
    text = matched_text(counts)
    for name, label, colour in PROBLEM_COUNTS:
        n = counts.get(name, 0)
        text.append("  ")
        text.append(f"{n:,}", style=f"bold {colour}" if n else "bold")
        text.append(f" {label}", style="dim")
    return text


class RulesEditor(Vertical):
    """Rules TOML editor with live validation feedback."""

    DEFAULT_CSS = """
    RulesEditor { height: 1fr; }
    RulesEditor #rules-counts { height: auto; padding: 0 1; }
    RulesEditor #rules-error { height: auto; padding: 0 1; color: $error; }
    RulesEditor #rules-error.-ok { color: $success; }
    RulesEditor RulesText { height: 1fr; min-height: 4; }
    RulesEditor #rules-buttons { height: auto; }
    RulesEditor #rules-buttons Button { min-width: 8; margin-right: 1; }
    """

    class Edited(Message):
        """The rules text changed and has been quiet for DEBOUNCE_S."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class ActionRequested(Message):
        """A rules button was pressed: "suggest", "load" or "save"."""

        def __init__(self, action: str) -> None:
            super().__init__()
            self.action = action

    def __init__(self, text: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._initial = text
        self._timer: Timer | None = None
        self._quiet = False

    def compose(self) -> ComposeResult:
        yield Static("", id="rules-counts")
        # Tab moves focus (TOML rules need no indentation) and Esc goes back to the key tree: the
        # editor never keeps the keyboard (issue 13 point 1)
        area = RulesText(self._initial, id="rules-text", show_line_numbers=True, soft_wrap=False,
                         tab_behavior="focus", classes="pane")
        try:
            area.language = "toml"  # highlighted when tree-sitter is installed, plain otherwise
        except Exception:
            area.language = None
        yield area
        yield Static("", id="rules-error")
        with Horizontal(id="rules-buttons"):
            yield Button("Suggest", id="rules-suggest", compact=True)
            yield Button("Load", id="rules-load", compact=True)
            yield Button("Save", id="rules-save", compact=True)

    @property
    def text_area(self) -> RulesText:
        return self.query_one(RulesText)

    @property
    def text(self) -> str:
        return self.text_area.text

    def set_text(self, text: str, *, notify: bool = True) -> None:
        """Replace the whole text (load, suggest); an Edited message follows unless notify=False."""
        self._quiet = not notify
        self.text_area.load_text(text)
        if notify:
            self._schedule()

    @on(TextArea.Changed, "#rules-text")
    def _changed(self, event: TextArea.Changed) -> None:
        event.stop()
        if self._quiet:
            self._quiet = False
            return
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.post_message(self.Edited(self.text))

    def flush(self) -> None:
        """Send a pending edit at once (tests, save)."""
        if self._timer is not None:
            self._timer.stop()
            self._fire()

    @on(Button.Pressed, "#rules-buttons Button")
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.ActionRequested(str(event.button.id).removeprefix("rules-")))

    def show_result(self, counts: dict[str, int] | None, error: Any = None, extra: str = "") -> None:
        """Show fresh counts, or the rules error at its line (counts then stay at the last good ones)."""
        area = self.text_area
        err = self.query_one("#rules-error", Static)
        if error is not None:
            line = getattr(error, "line", None)
            area.error_line = line
            where = f"line {line}: " if line else ""
            err.update(Text(f"✗ {where}{getattr(error, 'problem', str(error))}"))
            err.remove_class("-ok")
        else:
            area.error_line = None
            err.update(Text("✓ rules OK" + (f" · {extra}" if extra else "")))
            err.add_class("-ok")
        area.refresh()
        if counts is not None:
            self.query_one("#rules-counts", Static).update(format_counts(counts))
