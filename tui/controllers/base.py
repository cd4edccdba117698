"""Controller: the small base every piece of background work in the app builds on."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from textual.worker import Worker

    from ..app import GsvInspectApp


class Controller:
    """One job of the app: its worker group, its state, and the UI-thread step that takes a result.

    Workers run on the app node (``app.workers`` lists and cancels them) with ``exit_on_error=False``:
    an unexpected exception ends as ``Worker.StateChanged(ERROR)``, which the app hands to its
    :class:`~.errors.ErrorSurface`. Expected failures are reported by the controller itself,
    through the same surface.
    """

    group = ""
    """The worker group; `exclusive` runs in one group cancel each other."""

    def __init__(self, app: "GsvInspectApp") -> None:
        self.app = app

    def run(self, work: Callable[..., Any], *args: Any, exclusive: bool = True, description: str = "") -> "Worker":
        """Start `work(*args)` in a thread worker of this controller's group."""
        return self.app.run_worker(partial(work, *args), thread=True, exclusive=exclusive, group=self.group,
                                   exit_on_error=False, description=description or self.group)

    def deliver(self, callback: Callable[..., Any], *args: Any) -> None:
        """From a worker thread: run `callback(*args)` on the UI thread, in order, without waiting
        (a posted message: the worker never blocks on a busy UI)."""
        self.app.call_later(callback, *args)

    def cancel(self) -> None:
        """Cancel this controller's running workers."""
        self.app.workers.cancel_group(self.app, self.group)
