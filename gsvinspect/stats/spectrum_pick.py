"""Which weights get a change spectrum: a named key, a module's weights, or the most changed.

`gsvinspect diff --spectrum/--spectrum-top` and the inspector's `v` key choose here, so a weight
refused on the command line is refused in the app with the same words. Everything works on
alignment rows (metadata only); no tensor is read until `spectrum.spectrum` runs.

Functions:
    why_not(row)                    -> why a row has no spectrum, or None.
    candidates(rows, min_side=1)    -> the rows that have one (paired, same shape, a matrix).
    in_module(rows, prefix)         -> the rows under a module prefix.
    wide_first(rows)                -> candidates at least MIN_SIDE wide (the narrow ones if none is).
    most_changed(rows, n, change)   -> at most n candidates, most changed first.
    named(al, name)                 -> the candidates a --spectrum KEY|MODULE names (UsageError if none).
    of_row(pre_ck, ft_ck, row)      -> the Spectrum of one row, under its target key.
"""

from __future__ import annotations

import difflib
import math
from typing import Callable, Iterable

from ..align.alignment import Alignment, Row, Status
from ..errors import UsageError
from ..meta import fmt_shape
from .spectrum import MIN_SIDE, matrix_shape

Change = Callable[[Row], "float | None"]


def why_not(row: Row) -> str | None:
    """Why `row` has no change spectrum (no partner, a conflict, shapes differ, 1-D), or None."""
    t = row.target
    if row.status is Status.CONFLICT:
        return f"{t}: several keys are renamed onto it (a rules conflict), so there is no single pair"
    if row.pre_key is None:
        return f"{t} has no partner: it is only in the fine-tuned file"
    if row.ft_key is None:
        return f"{t} has no partner: it is only in the pretrained file"
    if row.pre is None or row.ft is None:     # metadata unknown: spectrum() checks when it reads
        return None
    if tuple(row.pre.shape) != tuple(row.ft.shape):
        return f"{t}: shapes differ ({fmt_shape(row.pre.shape)} vs {fmt_shape(row.ft.shape)}); Δ needs equal shapes"
    if matrix_shape(row.pre.shape) is None:
        dims = f"{len(row.pre.shape)}-D" if len(row.pre.shape) < 2 else "effectively 1-D"
        return f"{t} is {dims} ({fmt_shape(row.pre.shape)}); a spectrum needs a 2-D or conv weight"
    return None


def candidates(rows: Iterable[Row], *, min_side: int = 1) -> list[Row]:
    """Rows with a spectrum; `min_side` also leaves out matrices narrower than that (picks made
    for the user skip those whose spectrum cannot say much)."""
    return [r for r in rows if why_not(r) is None
            and (r.pre is None or min(matrix_shape(r.pre.shape)) >= min_side)]


def in_module(rows: Iterable[Row], prefix: str) -> list[Row]:
    start = prefix + "."
    return [r for r in rows if r.target.startswith(start)]


def _rank(c: float | None) -> float:
    return -math.inf if c is None or math.isnan(c) else c


def wide_first(rows: Iterable[Row]) -> list[Row]:
    """The candidates at least MIN_SIDE wide, or, when there are none, the narrower ones."""
    rows = list(rows)
    return candidates(rows, min_side=MIN_SIDE) or candidates(rows)


def most_changed(rows: Iterable[Row], n: int, change: Change | None = None) -> list[Row]:
    """At most `n` candidates: the largest `change` first (unknown last), file order without one."""
    out = candidates(rows)
    if change is not None:
        out.sort(key=lambda r: _rank(change(r)), reverse=True)
    return out[:n]


def _close(name: str, al: Alignment) -> str:
    """'; did you mean a, b?' from the target keys and their module prefixes (empty if none close)."""
    names = {r.target for r in al.rows}
    names |= {t.rsplit(".", i)[0] for t in list(names) for i in range(1, t.count(".") + 1)}
    hits = difflib.get_close_matches(name, names, n=3, cutoff=0.7)
    return f"; did you mean {', '.join(hits)}?" if hits else ""


def named(al: Alignment, name: str) -> list[Row]:
    """The target key `name`, or every candidate under the module `name` (``enc_p.encoder``,
    ``enc_p.encoder.*``), in file order.

    Raises:
        UsageError: an unknown name, a key without a spectrum (why_not), a module without a candidate.
    """
    row = al.row_for(name)
    if row is not None:
        why = why_not(row)
        if why:
            raise UsageError(f"spectrum: {why}")
        return [row]
    prefix = name[:-2] if name.endswith(".*") else name.rstrip(".")
    inside = in_module(al.rows, prefix) if prefix else []
    if not inside:
        raise UsageError(f"spectrum: no key or module {name!r} in the aligned pair{_close(name, al)}")
    found = wide_first(inside)
    if not found:
        raise UsageError(f"spectrum: module {prefix} has no paired 2-D weight of one shape on both sides "
                         f"({len(inside)} keys: 1-D, unpaired or of another shape)")
    return found


def of_row(pre_ck, ft_ck, row: Row, *, device: str = "auto"):
    """`spectrum.spectrum` of an aligned row, named by its target key (the name `diff` lists).

    Raises:
        UsageError: as `spectrum.spectrum` (non-float dtype, NaN/Inf, no CUDA).
    """
    from dataclasses import replace

    from .spectrum import spectrum

    return replace(spectrum(pre_ck, ft_ck, row.pre_key, row.ft_key, device=device), key=row.target)
