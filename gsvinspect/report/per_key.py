"""One row per key with every number: the rows behind ``diff --csv`` (and ``per_tensor`` in JSON).

Columns (the JSON's names): the alignment's ``target, status, pre_key, ft_key, shape_pre,
dtype_pre, shape_ft, dtype_ft, rule`` (shapes as JSON lists, ``rule`` 1-based), then the
statistics of :func:`gsvinspect.report.stats.tensor_dict` (``numel``, norms, ``norm_diff``,
``rel_change``, ``share``, cosine, ``max_abs_diff``, ``changed_frac``, health counts, ``note``),
empty where not computed, and with a mixing preview ``alpha`` and ``mixed_*`` columns
(``mixed_norm_diff``, ``mixed_rel_change``, ``mixed_share``, ``mixed_cosine``). Non-finite
numbers are written ``inf`` / ``nan``, which pandas and spreadsheets read as numbers.
"""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

ROW_COLUMNS = ("target", "status", "pre_key", "ft_key", "shape_pre", "dtype_pre", "shape_ft", "dtype_ft", "rule")
STAT_COLUMNS = ("numel", "norm_pre", "norm_ft", "norm_diff", "rel_change", "share", "cosine", "one_minus_cos",
                "max_abs_diff", "changed_frac", "nan_pre", "nan_ft", "inf_pre", "inf_ft", "overflow16_pre",
                "overflow16_ft", "note")
MIX_COLUMNS = ("alpha", "mixed_norm_diff", "mixed_rel_change", "mixed_share", "mixed_cosine")


def rows(report: Any, *, only_problems: bool = False) -> list[dict]:
    """One dict per alignment row (file order), with its statistics and mixing preview when computed."""
    from ..stats.rank import total_sumsq_diff
    from .stats import tensor_dict

    al = report.alignment
    stats = report.stats.per_key if report.stats is not None else {}
    total = total_sumsq_diff(report.stats) if report.stats is not None else None
    mixed = report.mixed.per_key if getattr(report, "mixed", None) is not None else None
    mixed_total = total_sumsq_diff(report.mixed) if mixed is not None else None
    out = []
    for r in al.rows:
        if only_problems and not r.status.is_problem:
            continue
        d = {"target": r.target, "status": r.status.value, "pre_key": r.pre_key, "ft_key": r.ft_key,
             "shape_pre": None if r.pre is None else list(r.pre.shape), "dtype_pre": None if r.pre is None else r.pre.dtype,
             "shape_ft": None if r.ft is None else list(r.ft.shape), "dtype_ft": None if r.ft is None else r.ft.dtype,
             "rule": None if r.rule is None else r.rule + 1}
        ts = stats.get(r.target)
        if ts is not None:
            td = tensor_dict(ts, total)
            d.update({k: td.get(k) for k in STAT_COLUMNS})
        if mixed is not None and r.target in mixed:
            md = tensor_dict(mixed[r.target], mixed_total)
            d["alpha"] = report.alphas.get(r.target)
            d.update({f"mixed_{k}": md.get(k) for k in ("norm_diff", "rel_change", "share", "cosine")})
        out.append(d)
    return out


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return json.dumps(v)
    return str(v)


def write_csv(report: Any, out: TextIO, *, only_problems: bool = False) -> None:
    """``diff --csv``: a header and one line per key (see the module docstring for the columns)."""
    columns = list(ROW_COLUMNS)
    if report.stats is not None:
        columns += STAT_COLUMNS
    if getattr(report, "mixed", None) is not None:
        columns += MIX_COLUMNS
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for d in rows(report, only_problems=only_problems):
        w.writerow([_cell(d.get(c)) for c in columns])
