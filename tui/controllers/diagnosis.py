"""DiagnosisController: the GPT-SoVITS findings of the current alignment, computed in a thread."""

from __future__ import annotations

from typing import Any

from .base import Controller


class DiagnosisController(Controller):
    group = "diagnose"

    def start(self) -> None:
        session = self.app.session
        self.run(self._diagnose, session, session.alignment, description="diagnose")

    def _diagnose(self, session: Any, alignment: Any) -> None:  # worker thread
        try:
            findings = session.diagnose()
        except Exception as exc:  # diagnosis is advisory
            self.deliver(self.app.errors.notice, f"diagnosis failed: {exc}", "warning")
            return
        self.deliver(self._diagnosed, session, alignment, findings)

    def _diagnosed(self, session: Any, alignment: Any, findings: list) -> None:
        if session is not self.app.session or alignment is not session.alignment:
            return  # a newer alignment has its own diagnosis on the way
        self.app.main.show_info()
        self.app.main.update_status()
