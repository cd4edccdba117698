"""gsvinspect's Textual inspector (installed as ``gsvinspect_tui`` from the repo folder ``tui/``).

Kept out of the ``gsvinspect`` library so that ``gsvinspect info/ls/diff`` never import Textual;
the CLI imports this package only inside ``open``/``demo``/``serve``.
"""

from __future__ import annotations

__all__ = ["GsvInspectApp", "run_app"]

WEB_DRIVER_NAME = "textual.drivers.web_driver:WebDriver"  # what textual-serve puts in TEXTUAL_DRIVER


def __getattr__(name: str):
    if name == "GsvInspectApp":
        from .app import GsvInspectApp

        return GsvInspectApp
    raise AttributeError(name)


def run_app(pre, ft=None, *, rules=None, device="cpu", trust=False, mouse=True, stats=True,
            pairs=None, pair=None) -> int:
    """Build and run the app; returns its exit code. A folder opens the run view (``run_view``)."""
    import os
    from pathlib import Path

    from .app import GsvInspectApp

    if ft is None and Path(pre).is_dir():
        from .run_view import run_run_view

        def open_pair(a, b):
            GsvInspectApp(a, b, rules=rules, device=device, trust=trust, stats=stats).run(mouse=mouse)

        return run_run_view(Path(pre), trust=trust, mouse=mouse, open_pair=open_pair)
    driver = None
    if os.environ.get("TEXTUAL_DRIVER") == WEB_DRIVER_NAME:  # under `gsvinspect serve` (textual-serve)
        from .web_driver import ServedWebDriver as driver
    app = GsvInspectApp(pre, ft, rules=rules, device=device, trust=trust, stats=stats, pairs=pairs, pair=pair,
                        driver_class=driver)
    result = app.run(mouse=mouse)
    return int(result or 0)
