"""Stats as people and programs read them: rich tables, JSON-ready dicts, Markdown.

``gsvinspect diff`` (cli/diff.py) and the TUI call these; nothing here computes a statistic.
Rankings are :mod:`gsvinspect.stats.rank`'s (share of the model's ‖Δ‖²); numbers are formatted by
:mod:`gsvinspect.report.numbers` (relative change always a percentage, ``from 0`` for a zero
pretrained side). JSON dicts hold only str/int/float/bool/None/list/dict, and non-finite floats
become the strings ``"inf"``, ``"-inf"``, ``"nan"`` (JSON has no literal for them).

Functions:
    fmt_rel(x), fmt_float(x), fmt_count(n)       -> re-exported from report.numbers.
    tensor_dict(ts, total) / module_dict(m, total) -> JSON-ready dict of one TensorStats / ModuleStats
                                                 (with its ``share`` when the model's total is given).
    parts_line(rollups)                          -> "where the change went: dec 48% · flow 23% · …".
    health_issues(result)                        -> list of dicts, one per tensor with NaN/Inf/fp16 overflow.
    report_dict(result, rollups=None, top=20, depth=None, embeddings=(), spectra=())
                                                 -> the whole report as one JSON-ready dict.
    tensors_table(result, top=20)                -> rich Table of the most-changed tensors.
    modules_table(rollups, top=20, depth=None)   -> rich Table of the most-changed modules.
    health_table(result)                         -> rich Table of unhealthy tensors (None if all healthy).
    languages_table(row_changes) / rows_table(row_changes, top=20)
                                                 -> rich Tables for a phoneme embedding.
    spectrum_table(spectrum)                     -> rich Table of one change spectrum.
    print_spectra(console, spectra) / spectra_markdown(spectra) -> the spectra alone.
    to_markdown(result, rollups=None, top=20, depth=None, embeddings=(), spectra=()) -> str.
    print_report(console, result, ...)           -> print all of the tables above.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

from rich.table import Table

from ..stats.rank import parts, share, top_modules, top_tensors, total_sumsq_diff
from ..stats.results import StatsResult, TensorStats
from ..stats.rollup import ModuleStats, RowChanges, rollup
from ..stats.spectrum import Spectrum
from .numbers import fmt_cos, fmt_count, fmt_float, fmt_rel, fmt_shape


# -- formatting (the shared formats live in report.numbers; re-exported here) ----------------------

def _json_float(x: float | None):
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


_fmt_shape = fmt_shape


# -- dicts --------------------------------------------------------------------------------------

_TS_FLOATS = ("norm_pre", "norm_ft", "norm_diff", "rel_change", "cosine", "one_minus_cos", "max_abs_diff",
              "changed_frac")
_TS_INTS = ("numel", "nan_pre", "nan_ft", "inf_pre", "inf_ft", "overflow16_pre", "overflow16_ft")


def tensor_dict(ts: TensorStats, total: float | None = None) -> dict:
    """JSON-ready dict of one tensor's stats (shapes as lists, dtypes as torch names); with the
    model's total ‖Δ‖² (:func:`gsvinspect.stats.rank.total_sumsq_diff`), its ``share``."""
    d = {"target": ts.target, "pre_key": ts.pre_key, "ft_key": ts.ft_key,
         "shape_pre": None if ts.shape_pre is None else list(ts.shape_pre),
         "shape_ft": None if ts.shape_ft is None else list(ts.shape_ft),
         "dtype_pre": ts.dtype_pre, "dtype_ft": ts.dtype_ft}
    for name in _TS_INTS:
        d[name] = getattr(ts, name)
    for name in _TS_FLOATS:
        d[name] = _json_float(getattr(ts, name))
    if total is not None:
        d["share"] = _json_float(share(ts.sumsq_diff, total))
    if ts.note:
        d["note"] = ts.note
    return d


def module_dict(m: ModuleStats, total: float | None = None) -> dict:
    d = {"module": m.prefix, "depth": m.depth, "tensors": m.tensors, "paired": m.paired,
         "only_pre": m.only_pre, "only_ft": m.only_ft, "numel": m.numel,
         "norm_pre": _json_float(m.norm_pre), "norm_ft": _json_float(m.norm_ft),
         "norm_diff": _json_float(m.norm_diff), "rel_change": _json_float(m.rel_change),
         "cosine": _json_float(m.cosine), "one_minus_cos": _json_float(m.one_minus_cos),
         "max_abs_diff": _json_float(m.max_abs_diff), "changed_frac": _json_float(m.changed_frac),
         "nan": m.nan, "inf": m.inf, "overflow16": m.overflow16}
    if total is not None:
        d["share"] = _json_float(share(m.sumsq_diff if m.paired else None, total))
    return d


_HEALTH_KEYS = ("nan_pre", "inf_pre", "overflow16_pre", "nan_ft", "inf_ft", "overflow16_ft")
_HEALTH_HEADERS = ["tensor", "NaN pre", "Inf pre", ">fp16 pre", "NaN ft", "Inf ft", ">fp16 ft"]


def health_issues(result: StatsResult) -> list[dict]:
    """One dict per tensor holding NaN, Inf, or values a cast to fp16 turns into Inf."""
    return [{"target": ts.target, **{k: getattr(ts, k) for k in _HEALTH_KEYS}}
            for ts in result.per_key.values() if not ts.healthy]


def row_changes_dict(rc: RowChanges, top: int = 20) -> dict:
    return {
        "pre_key": rc.pre_key, "ft_key": rc.ft_key, "symbol_set": rc.symbol_set,
        "shape_pre": list(rc.shape_pre), "shape_ft": list(rc.shape_ft),
        "moved_threshold": rc.moved_threshold, "note": rc.note or None,
        "languages": [{"language": s.language, "rows": s.rows, "moved": s.moved, "changed": s.changed,
                       "rel_change": _json_float(s.rel_change), "mean_rel": _json_float(s.mean_rel),
                       "max_rel": _json_float(s.max_rel), "top": s.top} for s in rc.by_language.values()],
        "top_rows": [{"index": r.index, "symbol": r.symbol, "language": r.language,
                      "rel_change": _json_float(r.rel_change), "norm_diff": _json_float(r.norm_diff),
                      "cosine": _json_float(r.cosine)} for r in rc.top(top)],
        "only_pre": [s.symbol for s in rc.only_pre], "only_ft": [s.symbol for s in rc.only_ft],
    }


def spectrum_dict(sp: Spectrum) -> dict:
    return {"key": sp.key, "shape": list(sp.shape), "singular_values": [_json_float(s) for s in sp.singular_values],
            "effective_rank": _json_float(sp.effective_rank), "rank90": sp.rank90,
            "energy_top_k": _json_float(sp.energy_top_k), "frobenius": _json_float(sp.frobenius),
            "rel_change": _json_float(sp.rel_change), "method": sp.method, "device": sp.device_used,
            "verdict": sp.verdict}


def report_dict(result: StatsResult, rollups: Mapping[str, ModuleStats] | None = None, *, top: int | None = 20,
                depth: int | None = None, embeddings: Iterable[RowChanges] = (),
                spectra: Iterable[Spectrum] = ()) -> dict:
    """The whole stats report as one JSON-ready dict (what ``gsvinspect diff --json`` prints).

    ``per_tensor`` holds every target's stats in file order (``--top`` does not cut it);
    ``top_tensors`` / ``top_modules`` are the rankings (see :mod:`gsvinspect.stats.rank`), each
    entry with its ``share`` of ``total_sumsq_diff``.
    """
    rollups = rollup(result) if rollups is None else rollups
    root = rollups.get("")
    total = total_sumsq_diff(result)
    return {
        "device": result.device_used, "seconds": result.seconds, "bytes_read": result.bytes_read,
        "cancelled": result.cancelled, "tensors": len(result.per_key),
        "ranking": "share of the model's total ||delta||^2 (sum over compared tensors with a finite one)",
        "total_sumsq_diff": _json_float(total),
        "model": module_dict(root, total) if root is not None else None,
        "parts": [module_dict(m, total) for m in parts(rollups)],
        "top_tensors": [tensor_dict(ts, total) for ts in top_tensors(result, top)],
        "top_modules": [module_dict(m, total) for m in top_modules(rollups, top, depth=depth)],
        "per_tensor": [tensor_dict(ts, total) for ts in result.per_key.values()],
        "health": health_issues(result),
        "notes": list(result.notes),
        "embeddings": [row_changes_dict(rc, 20 if top is None else top) for rc in embeddings],
        "spectra": [spectrum_dict(sp) for sp in spectra],
    }


# -- rich tables --------------------------------------------------------------------------------

def _dtypes(ts: TensorStats) -> str:
    return ts.dtype_pre if ts.dtype_pre == ts.dtype_ft else f"{ts.dtype_pre}→{ts.dtype_ft}"


def _tensor_cells(ts: TensorStats, total: float) -> list[str]:
    """share, ‖Δ‖, rel Δ, cos, max|Δ|, changed: the columns every most-changed-tensors view shows."""
    return [fmt_rel(share(ts.sumsq_diff, total)), fmt_float(ts.norm_diff), fmt_rel(ts.rel_change),
            fmt_cos(ts.cosine, ts.one_minus_cos), fmt_float(ts.max_abs_diff), fmt_rel(ts.changed_frac)]


def _module_cells(m: ModuleStats, total: float) -> list[str]:
    return [fmt_rel(share(m.sumsq_diff, total)), fmt_float(m.norm_diff), fmt_rel(m.rel_change),
            fmt_cos(m.cosine, m.one_minus_cos), fmt_rel(m.changed_frac)]


_TENSOR_COLS = ("share", "‖Δ‖", "rel Δ", "cos", "max|Δ|", "changed")
_MODULE_COLS = ("share", "‖Δ‖", "rel Δ", "cos", "changed")


def tensors_table(result: StatsResult, top: int = 20) -> Table:
    """The `top` tensors that carry most of the change (share of the model's ‖Δ‖²), biggest first."""
    t = Table(title=f"Most-changed tensors (top {top} by share of the model's ‖Δ‖²)", title_justify="left")
    for col in ("#", "tensor", "shape", "dtype") + _TENSOR_COLS:
        t.add_column(col, justify="left" if col in ("tensor", "shape", "dtype") else "right", no_wrap=col != "tensor")
    total = total_sumsq_diff(result)
    for i, ts in enumerate(top_tensors(result, top), 1):
        t.add_row(str(i), ts.target, fmt_shape(ts.shape_ft or ts.shape_pre), _dtypes(ts), *_tensor_cells(ts, total))
    return t


def modules_table(rollups: Mapping[str, ModuleStats], top: int = 20, depth: int | None = None) -> Table:
    """The `top` layers (or modules of one `depth`) that carry most of the change."""
    level = "layers" if depth is None else f"depth {depth}"
    t = Table(title=f"Most-changed modules ({level}; top {top} by share of the model's ‖Δ‖²)", title_justify="left")
    for col in ("#", "module", "tensors", "params") + _MODULE_COLS:
        t.add_column(col, justify="left" if col == "module" else "right", no_wrap=col != "module")
    total = _total_of(rollups)
    for i, m in enumerate(top_modules(rollups, top, depth=depth), 1):
        t.add_row(str(i), m.prefix, str(m.paired), fmt_count(m.numel), *_module_cells(m, total))
    return t


def _total_of(rollups: Mapping[str, ModuleStats]) -> float:
    """The model's Σ finite ‖Δ‖² (the denominator of every share)."""
    root = rollups.get("")
    return root.sumsq_diff_finite if root is not None else 0.0


def parts_line(rollups: Mapping[str, ModuleStats]) -> str | None:
    """``where the change went: dec 48.1% · flow 21.0% · …`` (top-level parts by share), or None."""
    total = _total_of(rollups)
    ps = parts(rollups)
    if len(ps) < 2 or total <= 0:
        return None
    return "where the change went (share of ‖Δ‖²): " + " · ".join(
        f"{m.prefix} {fmt_rel(share(m.sumsq_diff, total))}" for m in ps)


def health_table(result: StatsResult) -> Table | None:
    """Tensors with NaN / Inf / fp16-overflow values, or None when every tensor is healthy."""
    issues = health_issues(result)
    if not issues:
        return None
    t = Table(title="Health: NaN, Inf, values beyond fp16 range (|x| ≥ 65520)", title_justify="left")
    for col in _HEALTH_HEADERS:
        t.add_column(col, justify="left" if col == "tensor" else "right")
    for d in issues:
        t.add_row(d["target"], *(fmt_count(d[k]) for k in _HEALTH_KEYS))
    return t


def _by_change(rc: RowChanges) -> list:
    """Languages most-moved first (the ones the fine-tuning data used stand out at the top)."""
    return sorted(rc.by_language.values(), key=lambda s: -(s.rel_change or 0.0))


def languages_table(rc: RowChanges) -> Table:
    t = Table(title=f"Phoneme embedding {rc.ft_key}: rows moved per language "
                    f"(moved = rel Δ > {fmt_rel(rc.moved_threshold)})", title_justify="left")
    for col in ("language", "rows", "moved", "rel Δ (all rows)", "max rel Δ", "most moved"):
        t.add_column(col, justify="left" if col in ("language", "most moved") else "right")
    for s in _by_change(rc):
        t.add_row(s.language, str(s.rows), f"{s.moved} ({s.moved_frac:.0%})", fmt_rel(s.rel_change),
                  fmt_rel(s.max_rel), " ".join(s.top))
    return t


def rows_table(rc: RowChanges, top: int = 20) -> Table:
    t = Table(title=f"Most-moved phoneme rows (top {top})", title_justify="left")
    for col in ("row", "symbol", "language", "rel Δ", "‖Δ‖", "cos"):
        t.add_column(col, justify="left" if col in ("symbol", "language") else "right")
    for r in rc.top(top):
        t.add_row(str(r.index), r.symbol, r.language, fmt_rel(r.rel_change), fmt_float(r.norm_diff),
                  fmt_cos(r.cosine))
    return t


def _spectrum_rows(sp: Spectrum) -> list[tuple[str, str]]:
    """(measure, value) pairs shared by the rich and the Markdown spectrum tables."""
    return [("verdict", sp.verdict),
            ("effective (stable) rank", fmt_float(sp.effective_rank)),
            ("rank for 90% of ‖Δ‖²", "-" if sp.rank90 is None else str(sp.rank90)),
            (f"energy in top {len(sp.singular_values)}", fmt_rel(sp.energy_top_k)),
            ("‖Δ‖ (relative)", f"{fmt_float(sp.frobenius)} ({fmt_rel(sp.rel_change)})"),
            ("top singular values", " ".join(fmt_float(s, 3) for s in sp.singular_values[:8]))]


def _spectrum_title(sp: Spectrum) -> str:
    return f"{sp.shape[0]}×{sp.shape[1]} ({sp.method} SVD, {sp.device_used})"


def spectrum_table(sp: Spectrum) -> Table:
    t = Table(title=f"Spectrum of Δ {sp.key} {_spectrum_title(sp)}", title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for measure, value in _spectrum_rows(sp):
        t.add_row(measure, value)
    return t


def _show(console, table: Table) -> None:
    if not getattr(console, "is_terminal", False):  # piped: no box drawing, like the rest of `diff`
        table.box = None
    console.print(table)


def print_spectra(console, spectra: Iterable[Spectrum]) -> None:
    """Print one table per spectrum (`diff` shows them with or without the other stats)."""
    for sp in spectra:
        _show(console, spectrum_table(sp))


def print_report(console, result: StatsResult, rollups: Mapping[str, ModuleStats] | None = None, *,
                 top: int = 20, depth: int | None = None, embeddings: Iterable[RowChanges] = (),
                 spectra: Iterable[Spectrum] = ()) -> None:
    """Print the tensors, modules, health, embedding and spectrum tables to a rich Console."""
    rollups = rollup(result) if rollups is None else rollups
    line = parts_line(rollups)
    if line:
        console.print(line, highlight=False, soft_wrap=True)
    _show(console, tensors_table(result, top))
    _show(console, modules_table(rollups, top, depth))
    h = health_table(result)
    if h is not None:
        _show(console, h)
    for rc in embeddings:
        _show(console, languages_table(rc))
        _show(console, rows_table(rc, top))
    print_spectra(console, spectra)


# -- markdown -----------------------------------------------------------------------------------

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return out


def to_markdown(result: StatsResult, rollups: Mapping[str, ModuleStats] | None = None, *, top: int = 20,
                depth: int | None = None, embeddings: Iterable[RowChanges] = (),
                spectra: Iterable[Spectrum] = ()) -> str:
    """The report as GitHub-flavoured Markdown (tables), e.g. for an issue or a model card."""
    rollups = rollup(result) if rollups is None else rollups
    lines: list[str] = []
    root = rollups.get("")
    if root is not None and root.paired:
        lines += [f"Whole model: relative change {fmt_rel(root.rel_change)} over {root.paired} compared tensors "
                  f"({fmt_count(root.numel)} parameters), cosine {fmt_cos(root.cosine, root.one_minus_cos)}.", ""]
    line = parts_line(rollups)
    if line:
        lines += [line[0].upper() + line[1:] + ".", ""]
    total = total_sumsq_diff(result)
    lines += [f"### Most-changed tensors (top {top} by share of the model's ‖Δ‖²)", ""]
    lines += _md_table(["#", "tensor", "shape"] + [c.replace("|", "\\|") for c in _TENSOR_COLS],
                       [[str(i), f"`{ts.target}`", fmt_shape(ts.shape_ft or ts.shape_pre), *_tensor_cells(ts, total)]
                        for i, ts in enumerate(top_tensors(result, top), 1)],
                       {0, 3, 4, 5, 6, 7, 8})
    level = "layers" if depth is None else f"depth {depth}"
    lines += ["", f"### Most-changed modules ({level}; top {top} by share of the model's ‖Δ‖²)", ""]
    lines += _md_table(["#", "module", "tensors", "params", *_MODULE_COLS],
                       [[str(i), f"`{m.prefix}`", str(m.paired), fmt_count(m.numel), *_module_cells(m, total)]
                        for i, m in enumerate(top_modules(rollups, top, depth=depth), 1)],
                       {0, 2, 3, 4, 5, 6, 7, 8})
    issues = health_issues(result)
    if issues:
        lines += ["", "### Health", ""]
        lines += _md_table(_HEALTH_HEADERS, [[f"`{d['target']}`"] + [fmt_count(d[k]) for k in _HEALTH_KEYS]
                                             for d in issues], {1, 2, 3, 4, 5, 6})
    for rc in embeddings:
        lines += ["", f"### Phoneme embedding `{rc.ft_key}` by language", ""]
        lines += _md_table(["language", "rows", "moved", "rel Δ", "max rel Δ", "most moved"],
                           [[s.language, str(s.rows), str(s.moved), fmt_rel(s.rel_change), fmt_rel(s.max_rel),
                             " ".join(s.top)] for s in _by_change(rc)], {1, 2, 3, 4})
    lines += spectra_markdown(spectra)
    if result.notes:
        lines += ["", "### Notes", ""] + [f"- {_md_escape(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def spectra_markdown(spectra: Iterable[Spectrum]) -> list[str]:
    """Markdown lines: a heading and a measure/value table per spectrum."""
    lines: list[str] = []
    for sp in spectra:
        lines += ["", f"### Spectrum of Δ `{sp.key}` {_spectrum_title(sp)}", ""]
        lines += _md_table(["measure", "value"], [list(r) for r in _spectrum_rows(sp)], {1})
    return lines
