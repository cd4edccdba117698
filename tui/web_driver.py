"""The driver for `gsvinspect serve`: textual-serve's WebDriver, ending the app when its server goes.

textual-serve runs one app process per browser session and talks to it over stdin/stdout. It asks
the app to quit when the browser leaves and when it stops cleanly, and Textual's WebDriver already
ends on SIGTERM/SIGINT; but when the server dies without a word, the app's stdin simply ends and the
stock driver keeps the app running, orphaned. This driver treats the end of stdin as "quit".
"""

from __future__ import annotations

from textual import messages
from textual.drivers.web_driver import WebDriver


class ServedWebDriver(WebDriver):
    def run_input_thread(self) -> None:
        try:
            super().run_input_thread()
        finally:
            if not self.exit_event.is_set():  # input ended, but not because the app is stopping
                self._app.post_message(messages.ExitApp())
