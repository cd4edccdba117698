"""gsvinspect's Textual inspector (installed as ``gsvinspect_tui`` from the repo folder ``tui/``).

Kept out of the ``gsvinspect`` library so that ``gsvinspect info/ls/diff`` never import Textual;
the CLI imports this package only inside ``open``/``demo``/``serve``.
"""

from __future__ import annotations

__all__ = ["GsvInspectApp", "run_app"]


def __getattr__(name: str):
    if name == "GsvInspectApp":
        from .app import GsvInspectApp

        return GsvInspectApp
    raise AttributeError(name)


def run_app(pre, ft=None, *, rules=None, device="cpu", trust=False, mouse=True, stats=True,
            pairs=None, pair=None) -> int:
    """Build and run the app; returns its exit code."""
    from .app import GsvInspectApp

    app = GsvInspectApp(pre, ft, rules=rules, device=device, trust=trust, stats=stats, pairs=pairs, pair=pair)
    result = app.run(mouse=mouse)
    return int(result or 0)
