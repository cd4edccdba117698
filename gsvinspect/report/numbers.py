"""The number formats every view shares: ``diff`` (text, Markdown), ``ls``, the app.

One unit per quantity: a relative change (and any other share or fraction) is always a
percentage, from :func:`fmt_rel`; a shape is always ``48×192×1``, from :func:`fmt_shape`. The app
calls the same functions (``compact=True`` where a column is 6 cells wide), so a number reads the
same on every screen.
"""

from __future__ import annotations

import math

from ..meta import fmt_shape  # noqa: F401  (re-exported: the one shape format)

FROM_ZERO = "from 0"   # relative change of a tensor whose pretrained side is all zeros


def fmt_rel(x: float | None, *, compact: bool = False) -> str:
    """A relative change or fraction as a percentage: ``12.3%``, ``1.23%``, ``0.0123%``, ``4.0e-5%``.

    Three significant digits, trailing zeros kept (``0.500%``, ``1.00%``; two with `compact`, which never takes more than 6 cells); ``0%``
    for exactly zero, ``from 0`` for an infinite value (the pretrained side is all zeros: its
    absolute ‖Δ‖ is the number to read), ``nan``, and ``-`` for None (not computed).
    """
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return FROM_ZERO if x > 0 else "-inf"
    if x == 0:
        return "0%"
    pct = abs(x) * 100
    sign = "-" if x < 0 else ""
    if pct >= 99.95:
        body = f"{pct:.0f}" if pct < 1e5 else f"{pct:.0e}".replace("e+0", "e").replace("e+", "e")
    elif pct >= 9.995:
        body = f"{pct:.1f}" if not compact or pct < 99.5 else f"{pct:.0f}"
    elif pct >= 1:
        body = f"{pct:.1f}" if compact else f"{pct:.2f}"
    elif pct >= (1e-2 if compact else 1e-3):
        # '#' keeps trailing zeros, so a column reads 0.500% / 1.00% beside 0.502% / 1.04%
        # (plain .3g wrote 0.5% and, for 0.9996%, "1%" next to a 1.00%)
        body = f"{pct:#.2g}" if compact else f"{pct:#.3g}"
    else:
        m, e = f"{pct:.0e}" if compact else f"{pct:.1e}", None
        m, e = m.split("e")
        body = f"{m}e{int(e)}"
    return f"{sign}{body}%"


def fmt_float(x: float | None, digits: int = 4) -> str:
    """A plain measure (norms, max |Δ|): ``0.2307``, ``9.652e-04``; ``-`` for None."""
    if x is None:
        return "-"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def fmt_cos(x: float | None, one_minus: float | None = None) -> str:
    """Cosine; near 1 shown as ``1-2.3e-07`` from `one_minus` (1 - cos) when given."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    if x > 0.9999:
        om = (1 - x) if one_minus is None else one_minus
        return f"1-{om:.1e}" if om > 0 else "1"
    return f"{x:.4f}"


def fmt_count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"
