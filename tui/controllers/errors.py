"""ErrorSurface: the one place a problem reaches the user (harlequin's pattern).

Controllers report what they expected to go wrong (a bad rules file, a statistics failure, a file
that cannot be saved); anything unexpected ends a worker in the ERROR state, and the app passes that
here too. Nothing a user can cause takes the app down, and each problem is said once, in words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from textual.worker import Worker

    from ..app import GsvInspectApp


class ErrorSurface:
    """Notices, dialogs and the "could not open" message, all in one place."""

    def __init__(self, app: "GsvInspectApp") -> None:
        self.app = app

    def notice(self, text: str, severity: str = "error", timeout: float | None = None) -> None:
        """A toast: advisory problems (diagnosis, suggestion, statistics) and rules errors."""
        kwargs = {"timeout": timeout} if timeout is not None else {}
        self.app.notify(text, severity=severity, **kwargs)  # type: ignore[arg-type]

    def dialog(self, title: str, text: str) -> None:
        """A problem the user must read and close (a rules file that cannot be read or written)."""
        from ..dialogs import MessageScreen

        self.app.push_screen(MessageScreen(title, text))

    def load_failed(self, text: str) -> None:
        """The checkpoints could not be opened: the message replaces the key tree."""
        app = self.app
        app.load_error = text
        app.main.show_message(f"✗ {text}")
        app.main.set_status(Text("could not open the checkpoint", style="red"))
        app.loaded.set()

    def worker_failed(self, worker: "Worker") -> None:
        """A worker raised something no controller expected."""
        error = worker.error
        self.notice(f"{worker.group}: {type(error).__name__}: {error}", timeout=10)
        if worker.group == "load":
            self.app.load_error = str(error)
            self.app.main.show_message(f"✗ {error}")
            self.app.loaded.set()
