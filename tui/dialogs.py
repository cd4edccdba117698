"""Small modal dialogs: ask for a path, confirm an overwrite, show an error."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DIALOG_CSS = """
{cls} {{ align: center middle; }}
{cls} > Vertical {{
    width: 80%; max-width: 90; height: auto; max-height: 90%;
    border: round $accent; background: $panel; padding: 0 1;
}}
{cls} .dialog-buttons {{ height: auto; align-horizontal: right; margin-top: 1; }}
{cls} .dialog-buttons Button {{ margin-left: 1; min-width: 10; }}
"""


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (a file path); Enter accepts, Esc cancels."""

    DEFAULT_CSS = DIALOG_CSS.format(cls="PromptScreen")
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self._title = title
        self._value = value
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = self._title
            yield Input(self._value, placeholder=self._placeholder, id="prompt-input")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="prompt-ok", variant="primary", compact=True)
                yield Button("Cancel", id="prompt-cancel", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#prompt-ok")
    def _accept(self) -> None:
        self.dismiss(self.query_one(Input).value.strip() or None)

    @on(Button.Pressed, "#prompt-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no question; the default answer is no."""

    DEFAULT_CSS = DIALOG_CSS.format(cls="ConfirmScreen")
    BINDINGS = [
        Binding("escape,n", "answer(False)", "No", id="confirm.no"),
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self._question = question
        self._yes = yes

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = "Please confirm"
            yield Label(self._question)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self._yes, id="confirm-yes", variant="warning", compact=True)
                yield Button("No", id="confirm-no", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class MessageScreen(ModalScreen[None]):
    """An error or notice that must be read; any of Esc/Enter/q closes it."""

    DEFAULT_CSS = DIALOG_CSS.format(cls="MessageScreen") + """
    MessageScreen > Vertical { border: round $error; }
    """
    BINDINGS = [Binding("escape,enter,q", "close", "Close", id="message.close")]

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self._title = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical() as v:
            v.border_title = self._title
            yield Static(self.message, id="message-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="message-close", variant="primary", compact=True)

    @on(Button.Pressed)
    def action_close(self) -> None:
        self.dismiss(None)
