"""Render an alignment and its findings: rich tables, plain text, JSON, Markdown.

One data model (`DiffReport`) feeds every form, so the terminal, a script and a pasted report
say the same thing. Rule numbers are 1-based everywhere a person or a script sees them.

JSON schema (``gsvinspect diff --json``; stable, additions only; ``schema`` names the version)::

    {
      "schema": "gsvinspect.diff/1",
      "ok": bool,                       # exit 0 criterion: nothing missing/unexpected/conflicting/
                                        # shape-differing (dtype differences do not count)
      "pretrained": FILE, "finetuned": FILE,
      #   FILE = {"path": str, "layout": str|null, "version": str|null, "n_keys": int,
      #           "weights_path": [str, ...]}
      "rules": {"source": str|null,     # rules file, or null
                "suggested": bool,      # true when the rules came from --suggest
                "weights_entry": str|null,
                "list": [{"number": int (1-based), "kind": str, "pattern": str, "replacement": str,
                          "side": "ft"|"pre"|"both", "line": int|null, "hits": int,
                          "hits_ft": int, "hits_pre": int, "dead": bool}]},
      "counts": {"matched": int, "dtype-differs": int, "shape-differs": int, "missing": int,
                 "unexpected": int, "conflict": int},
      "conflicts": [{"target": str, "sources": [str, ...]}],
      "dropped": [{"side": "ft"|"pre", "key": str, "rule": int (1-based)}],
      "rows": [{"target": str, "status": str (a counts key), "pre_key": str|null,
                "ft_key": str|null,         # the fine-tuned key as stored, before rules
                "pre": {"shape": [int], "dtype": str}|null, "ft": {...}|null,
                "rule": int|null (1-based, last rule that renamed it), "rules": [int],
                "sources": [str]}],         # conflict rows: every key that landed on target
      "rows_truncated": bool,           # --only-problems left matched rows out
      "findings": [{"severity": "error"|"warning"|"info", "code": str, "message": str,
                    "keys": [str]}],
      "stats": object|null,             # gsvinspect.report.stats JSON when computed
      "stats_error": str,               # only when stats were wanted but could not be computed
      "spectra": [SPECTRUM],            # --spectrum / --spectrum-top (also with --no-stats), where
      #   SPECTRUM = stats_report.spectrum_dict: {"key", "shape", "singular_values", "effective_rank",
      #              "rank90", "energy_top_k", "frobenius", "rel_change", "method", "device", "verdict"}
      "spectra_notes": [str]            # e.g. a module prefix capped to its most-changed weights
    }

With statistics, ``stats.spectra`` holds the same list as ``spectra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..align.alignment import Alignment, Row, Status
from ..align.knowledge import CheckResult, Finding

SCHEMA = "gsvinspect.diff/1"
CHECK_SCHEMA = "gsvinspect.check/1"

_STATUS_STYLE = {
    Status.MATCHED: "green", Status.DTYPE_DIFFERS: "cyan", Status.SHAPE_DIFFERS: "red",
    Status.MISSING: "yellow", Status.UNEXPECTED: "magenta", Status.CONFLICT: "bold red",
}
_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_STATUS_ORDER = (Status.CONFLICT, Status.SHAPE_DIFFERS, Status.MISSING, Status.UNEXPECTED,
                 Status.DTYPE_DIFFERS, Status.MATCHED)


@dataclass
class FileSide:
    path: str
    layout: str | None = None
    version: str | None = None
    n_keys: int = 0
    weights_path: tuple[str, ...] = ()

    @classmethod
    def of(cls, ck: Any, path: str | None = None) -> "FileSide":
        layout = getattr(ck, "layout", None)
        return cls(path=str(path if path is not None else getattr(ck, "path", "?")),
                   layout=getattr(layout, "value", layout), version=getattr(ck, "version", None),
                   n_keys=len(getattr(ck, "weights", {}) or {}),
                   weights_path=tuple(getattr(ck, "weights_path", ()) or ()))

    def as_dict(self) -> dict:
        return {"path": self.path, "layout": self.layout, "version": self.version, "n_keys": self.n_keys,
                "weights_path": list(self.weights_path)}

    def describe(self) -> str:
        bits = [b for b in (self.layout, self.version) if b and b != "unknown"]
        where = f" under {'/'.join(self.weights_path)!r}" if self.weights_path else ""
        return f"{self.path} ({', '.join(bits + [f'{self.n_keys} keys{where}'])})"


@dataclass
class DiffReport:
    """Everything `gsvinspect diff` shows."""

    pre: FileSide
    ft: FileSide
    alignment: Alignment
    findings: list[Finding] = field(default_factory=list)
    suggested: bool = False        # the alignment's rules came from --suggest
    stats: Any = None              # gsvinspect.stats.engine.StatsResult when computed
    stats_error: str | None = None
    embeddings: list = field(default_factory=list)  # rollup.RowChanges of the phoneme tables
    spectra: list = field(default_factory=list)     # spectrum.Spectrum, in the order asked for
    spectra_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.alignment.ok


# ---------------------------------------------------------------------------------------------
# JSON

def _tinfo(t) -> dict | None:
    return None if t is None else {"shape": list(t.shape), "dtype": t.dtype}


def _row_dict(r: Row) -> dict:
    return {"target": r.target, "status": r.status.value, "pre_key": r.pre_key, "ft_key": r.ft_key,
            "pre": _tinfo(r.pre), "ft": _tinfo(r.ft),
            "rule": None if r.rule is None else r.rule + 1, "rules": [i + 1 for i in r.rules],
            "sources": list(r.sources)}


def rules_dict(al: Alignment, suggested: bool = False) -> dict:
    """The alignment's rules with their hits (the hit lists have one entry per rule)."""
    rules = al.rules
    lst = [{"number": i + 1, "kind": rule.kind, "pattern": rule.pattern, "replacement": rule.replacement,
            "side": rule.side, "line": rule.line, "hits": al.rule_hits[i],
            "hits_ft": al.rule_hits_ft[i], "hits_pre": al.rule_hits_pre[i], "dead": al.rule_hits[i] == 0}
           for i, rule in enumerate(rules.rules if rules is not None else [])]
    return {"source": rules.source if rules is not None else None, "suggested": suggested,
            "weights_entry": rules.weights_entry if rules is not None else None, "list": lst}


def to_json(report: DiffReport, *, only_problems: bool = False) -> dict:
    al = report.alignment
    rows = [r for r in al.rows if r.status.is_problem] if only_problems else al.rows
    stats = None
    if report.stats is not None:
        stats = _stats_json(report)
    return {
        "schema": SCHEMA,
        "ok": al.ok,
        "pretrained": report.pre.as_dict(),
        "finetuned": report.ft.as_dict(),
        "rules": rules_dict(al, report.suggested),
        "counts": {s.value: al.counts.get(s, 0) for s in Status},
        "conflicts": [{"target": t, "sources": list(s)} for t, s in al.conflicts],
        "dropped": [{"side": side, "key": k, "rule": ri + 1} for side, k, ri in al.dropped],
        "rows": [_row_dict(r) for r in rows],
        "rows_truncated": only_problems and len(rows) != len(al.rows),
        "findings": [f.as_dict() for f in report.findings],
        "stats": stats,
        **({"stats_error": report.stats_error} if report.stats_error else {}),
        "spectra": _spectra_json(report),
        "spectra_notes": list(report.spectra_notes),
    }


def _stats_json(report: "DiffReport") -> Any:
    from . import stats as stats_report

    return stats_report.report_dict(report.stats, top=20, embeddings=report.embeddings, spectra=report.spectra)


def _spectra_json(report: "DiffReport") -> list:
    if not report.spectra:
        return []
    from . import stats as stats_report

    return [stats_report.spectrum_dict(sp) for sp in report.spectra]


def check_to_json(result: CheckResult, side: FileSide | None = None) -> dict:
    out = {"schema": CHECK_SCHEMA, **result.as_dict()}
    if side is not None:
        out["file"] = side.as_dict()
    return out


# ---------------------------------------------------------------------------------------------
# text (rich) rendering

def _shape(t) -> str:
    if t is None:
        return "—"
    return f"{list(t.shape)} {t.dtype}"


def _verdict(al: Alignment) -> str:
    c = al.counts
    if al.ok:
        extra = f"; {c[Status.DTYPE_DIFFERS]} differ only in dtype" if c[Status.DTYPE_DIFFERS] else ""
        return f"fully aligned: all {al.n_paired} keys pair up{extra}"
    bits = []
    for s, word in ((Status.MISSING, "missing from the fine-tuned file"), (Status.UNEXPECTED, "unexpected"),
                    (Status.SHAPE_DIFFERS, "of another shape"), (Status.CONFLICT, "rename conflicts")):
        if c.get(s):
            bits.append(f"{c[s]} {word}")
    return f"NOT aligned: {', '.join(bits)} ({al.n_paired} keys pair up)"


def _counts_line(al: Alignment) -> str:
    return "  ".join(f"{s.value}: {al.counts.get(s, 0)}" for s in Status)


def _sections(al: Alignment, only_problems: bool, top: int | None):
    """(status, every row of it, the rows to show) per non-empty section, most serious first."""
    by_status: dict[Status, list[Row]] = {}
    for r in al.rows:
        by_status.setdefault(r.status, []).append(r)
    for status in _STATUS_ORDER:
        rows = by_status.get(status)
        if rows and (status.is_problem or not only_problems):
            yield status, rows, rows if top is None else rows[:top]


def _finding_text(f: Finding):
    """One finding as an indented, severity-coloured rich Text line."""
    from rich.text import Text

    line = Text(f"  {f.severity.upper():7} ", style=_SEVERITY_STYLE.get(f.severity, ""))
    line.append(f"[{f.code}] ", style="dim")
    line.append(f.message)
    return line


def render_text(report: DiffReport, console, *, only_problems: bool = False, top: int | None = None,
                show_stats: bool = True) -> None:
    """Print the report with rich; `console` decides colours (none when piped)."""
    from rich.text import Text

    al = report.alignment
    rules = al.rules
    console.print(Text("pretrained: ", style="bold") + Text(report.pre.describe()))
    console.print(Text("fine-tuned: ", style="bold") + Text(report.ft.describe()))

    if rules is not None and rules.rules:
        src = "suggested" if report.suggested else (rules.source or "rules")
        t = _table(console, title=f"rules ({src})", title_justify="left", show_edge=False, pad_edge=False)
        t.add_column("#", justify="right")
        t.add_column("line", justify="right")
        t.add_column("rule", overflow="fold")
        t.add_column("keys", justify="right")
        for i, (rule, hits) in enumerate(zip(rules.rules, al.rule_hits)):
            hit_text = Text(str(hits)) if hits else Text("0  matched nothing", style="bold yellow")
            t.add_row(str(i + 1), str(rule.line or ""), Text(rule.describe()), hit_text)
        console.print(t)
    elif report.suggested:
        console.print("suggested rules: none needed, the keys line up as they are")
    if rules is not None and rules.weights_entry:
        console.print(f"weights entry (from the rules): {rules.weights_entry!r}")

    console.print(Text(_verdict(al), style="bold green" if al.ok else "bold red"))
    console.print(_counts_line(al))

    if report.findings:
        console.print(Text("findings", style="bold"))
        for f in report.findings:
            console.print(_finding_text(f))

    if al.conflicts:
        console.print(Text("conflicts", style="bold red"))
        for target, sources in al.conflicts:
            console.print(f"  {target}  <=  {', '.join(sources)}")

    for status, rows, shown in _sections(al, only_problems, top):
        t = _table(console, title=f"{status.value} ({len(rows)})", title_justify="left", show_edge=False, pad_edge=False,
                  title_style=_STATUS_STYLE[status])
        t.add_column("target key", overflow="fold")
        if status is not Status.UNEXPECTED:
            t.add_column("pretrained", overflow="fold")
        if status is not Status.MISSING:
            t.add_column("fine-tuned", overflow="fold")
        t.add_column("rule", justify="right")
        for r in shown:
            cells = [Text(r.target)]
            if status is not Status.UNEXPECTED:
                cells.append(Text(_shape(r.pre)))
            if status is not Status.MISSING:
                ft = _shape(r.ft)
                if r.ft_key is not None and r.ft_key != r.target:
                    ft = f"{ft}  from {r.ft_key}"
                if r.sources:
                    ft = f"{ft}  sources: {', '.join(r.sources)}"
                cells.append(Text(ft))
            cells.append(Text("" if r.rule is None else str(r.rule + 1)))
            t.add_row(*cells)
        console.print(t)
        if len(shown) < len(rows):
            console.print(f"  … and {len(rows) - len(shown)} more {status.value} rows (--top)")

    if al.dropped:
        console.print(f"dropped by rules: {sum(1 for d in al.dropped if d[0] == 'ft')} fine-tuned, "
                      f"{sum(1 for d in al.dropped if d[0] == 'pre')} pretrained keys")

    if show_stats:
        if report.stats is not None:
            _render_stats_text(report, console, top)
        elif report.stats_error:
            console.print(Text(f"stats not computed: {report.stats_error}", style="yellow"))
    _render_spectra_text(report, console)


def _table(console, **kw):
    """A rich Table: boxed on a terminal, plain aligned columns when piped (grep/awk friendly)."""
    from rich.table import Table

    if not getattr(console, "is_terminal", False):
        kw.setdefault("box", None)
    return Table(**kw)


def _render_stats_text(report: "DiffReport", console, top: int | None) -> None:
    from . import stats as stats_report

    stats_report.print_report(console, report.stats, top=20 if top is None else top, embeddings=report.embeddings)


def _render_spectra_text(report: "DiffReport", console) -> None:
    from rich.text import Text

    for note in report.spectra_notes:
        console.print(Text(f"note: {note}", style="yellow"))
    if report.spectra:
        from . import stats as stats_report

        stats_report.print_spectra(console, report.spectra)


def render_check_text(result: CheckResult, console, side: FileSide | None = None, *, top: int | None = None) -> None:
    from rich.text import Text

    if side is not None:
        console.print(Text("file: ", style="bold") + Text(side.describe()))
    how = "picked from the detected layout/version" if result.auto else "as requested"
    console.print(Text("checked as: ", style="bold") + Text(f"{result.name} ({result.description}; {how})"))
    console.print(Text("loader: ", style="bold") + Text(result.loader))
    style = "bold green" if result.ok else "bold yellow" if result.widths_only else "bold red"
    console.print(Text(result.verdict, style=style))  # the same sentence export prints
    for f in result.findings:
        console.print(_finding_text(f))
    for title, keys in (("missing", result.missing), ("unexpected", result.unexpected)):
        if not keys:
            continue
        shown = keys if top is None else keys[:top]
        t = _table(console, title=f"{title} ({len(keys)})", title_justify="left", show_edge=False, pad_edge=False)
        t.add_column("key", overflow="fold")
        for k in shown:
            t.add_row(k)
        console.print(t)
        if len(shown) < len(keys):
            console.print(f"  … and {len(keys) - len(shown)} more")
    if result.shape_mismatched:
        t = _table(console, title=f"shape mismatched ({len(result.shape_mismatched)})", title_justify="left",
                  show_edge=False, pad_edge=False)
        t.add_column("key", overflow="fold")
        t.add_column("expected")
        t.add_column("found")
        rows = result.shape_mismatched if top is None else result.shape_mismatched[:top]
        for k, e, f in rows:
            t.add_row(k, str(list(e)), str(list(f)))
        console.print(t)
        if len(rows) < len(result.shape_mismatched):
            console.print(f"  … and {len(result.shape_mismatched) - len(rows)} more (--top 0 lists all)")


# ---------------------------------------------------------------------------------------------
# Markdown

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("`", "'")


def render_markdown(report: DiffReport, *, only_problems: bool = False, top: int | None = None) -> str:
    al = report.alignment
    out = ["# gsvinspect diff", "",
           f"- **pretrained:** `{_md_escape(report.pre.describe())}`",
           f"- **fine-tuned:** `{_md_escape(report.ft.describe())}`",
           f"- **result:** {'✅' if al.ok else '❌'} {_verdict(al)}", ""]
    out += ["| " + " | ".join(s.value for s in Status) + " |",
            "|" + "---:|" * len(Status),
            "| " + " | ".join(str(al.counts.get(s, 0)) for s in Status) + " |", ""]
    rules = al.rules
    if rules is not None and rules.rules:
        src = "suggested" if report.suggested else (rules.source or "rules")
        out += [f"## Rules ({_md_escape(src)})", "", "| # | line | rule | keys |", "|---:|---:|---|---:|"]
        for i, (rule, hits) in enumerate(zip(rules.rules, al.rule_hits)):
            out.append(f"| {i + 1} | {rule.line or ''} | `{_md_escape(rule.describe())}` | "
                       f"{hits if hits else '**0 — matched nothing**'} |")
        out.append("")
    if report.findings:
        out += ["## Findings", ""]
        for f in report.findings:
            out.append(f"- **{f.severity}** `{f.code}`: {_md_escape(f.message)}")
        out.append("")
    for status, rows, shown in _sections(al, only_problems, top):
        out += [f"## {status.value} ({len(rows)})", "", "| target | pretrained | fine-tuned | rule |",
                "|---|---|---|---:|"]
        for r in shown:
            ft = _shape(r.ft)
            if r.ft_key is not None and r.ft_key != r.target:
                ft += f" from `{_md_escape(r.ft_key)}`"
            if r.sources:
                ft += " sources: " + ", ".join(f"`{_md_escape(s)}`" for s in r.sources)
            out.append(f"| `{_md_escape(r.target)}` | {_shape(r.pre)} | {ft} | "
                       f"{'' if r.rule is None else r.rule + 1} |")
        if len(shown) < len(rows):
            out.append(f"\n… and {len(rows) - len(shown)} more")
        out.append("")
    if report.stats is not None:
        md = _stats_markdown(report, top)
        if md:
            out += ["## Weight changes", "", md, ""]
    if report.spectra or report.spectra_notes:
        out += _spectra_markdown(report)
    return "\n".join(out)


def _spectra_markdown(report: "DiffReport") -> list[str]:
    from . import stats as stats_report

    out = ["## Change spectra"]
    if report.spectra_notes:
        out += [""] + [f"- {_md_escape(n)}" for n in report.spectra_notes]
    return out + stats_report.spectra_markdown(report.spectra) + [""]


def _stats_markdown(report: "DiffReport", top: int | None) -> str | None:
    from . import stats as stats_report

    return stats_report.to_markdown(report.stats, top=20 if top is None else top, embeddings=report.embeddings)


def render_check_markdown(result: CheckResult, side: FileSide | None = None) -> str:
    out = ["# gsvinspect check", ""]
    if side is not None:
        out.append(f"- **file:** `{_md_escape(side.describe())}`")
    out += [f"- **checked as:** `{result.name}` ({_md_escape(result.description)})",
            f"- **loader:** {_md_escape(result.loader)}",
            f"- **result:** {'✅' if result.ok else '⚠️' if result.widths_only else '❌'} {_md_escape(result.verdict)}",
            ""]
    for f in result.findings:
        out.append(f"- **{f.severity}** `{f.code}`: {_md_escape(f.message)}")
    for title, keys in (("Missing", result.missing), ("Unexpected", result.unexpected)):
        if keys:
            out += ["", f"## {title} ({len(keys)})", ""] + [f"- `{_md_escape(k)}`" for k in keys]
    if result.shape_mismatched:
        out += ["", f"## Shape mismatched ({len(result.shape_mismatched)})", "", "| key | expected | found |",
                "|---|---|---|"]
        out += [f"| `{_md_escape(k)}` | {list(e)} | {list(f)} |" for k, e, f in result.shape_mismatched]
    return "\n".join(out) + "\n"
