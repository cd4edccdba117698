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
      #           "weights_path": [str, ...],
      #           "version_fits": [str, ...]}   # every version an identical net fits (info's "v1 or v2")
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
      "stats": object|null,             # gsvinspect.report.stats.report_dict when computed: "per_tensor"
                                        # (every pair, file order; --top does not cut it), "top_tensors",
                                        # "top_modules" (ranked by "share" of "total_sumsq_diff"), "parts",
                                        # "model", "health", "embeddings", "notes", "spectra"
      "stats_error": str,               # only when stats were wanted but could not be computed
      "spectra": [SPECTRUM],            # --spectrum / --spectrum-top (also with --no-stats), where
      #   SPECTRUM = stats_report.spectrum_dict: {"key", "shape", "singular_values", "effective_rank",
      #              "rank90", "energy_top_k", "frobenius", "rel_change", "method", "device", "verdict"}
      "spectra_notes": [str],           # e.g. a module prefix capped to its most-changed weights
      "mixed": {"formula": str, "alpha_source": str, "alphas_used": {alpha: n},
                "stats": object}        # only with --alpha / an [alpha] table: the mix against
                                        # pretrained, same schema as "stats" (per_tensor rows add "alpha")
    }

With statistics, ``stats.spectra`` holds the same list as ``spectra``.

Over 500 lines because the four renderers of one report (rich text, Markdown, JSON, the per-key
sections they share) are kept side by side, so a change to what `diff` says lands in all of them.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from ..align.alignment import Alignment, Row, Status
from ..align.knowledge import Finding
from ..meta import fmt_shape
from .check import CHECK_SCHEMA, check_to_json, render_check_markdown, render_check_text  # noqa: F401  (re-exported)

SCHEMA = "gsvinspect.diff/1"

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
    fits: tuple[str, ...] = ()     # every version an identical net could be, when nothing decides

    @classmethod
    def of(cls, ck: Any, path: str | None = None) -> "FileSide":
        from ..load.identity import identify

        layout = getattr(ck, "layout", None)
        try:
            fits = tuple(identify(ck).fits)
        except (AttributeError, TypeError, ValueError):   # a stand-in without what identify reads
            fits = ()
        return cls(path=str(path if path is not None else getattr(ck, "path", "?")),
                   layout=getattr(layout, "value", layout), version=getattr(ck, "version", None),
                   n_keys=len(getattr(ck, "weights", {}) or {}),
                   weights_path=tuple(getattr(ck, "weights_path", ()) or ()), fits=fits)

    def as_dict(self) -> dict:
        return {"path": self.path, "layout": self.layout, "version": self.version, "n_keys": self.n_keys,
                "weights_path": list(self.weights_path), "version_fits": list(self.fits)}

    def describe(self) -> str:
        """``path (layout, version, N keys under 'weight')``; the version as `info` says it ("v1 or v2"
        for a net two versions share and nothing in the file decides)."""
        from ..load.identity import say_versions

        version = say_versions(self.fits) if len(self.fits) > 1 else self.version
        bits = [b for b in (self.layout, version) if b and b != "unknown"]
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
    mixed: Any = None              # StatsResult of pre + alpha*(ft - pre) vs pre (--alpha / [alpha])
    mixed_embeddings: list = field(default_factory=list)
    alphas: dict = field(default_factory=dict)      # target -> alpha of the mix
    alpha_source: str = ""
    hint: str = ""                 # the next step when the keys do not line up but suggested rules would

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


def to_json(report: DiffReport, *, only_problems: bool = False, top: int | None = None) -> dict:
    al = report.alignment
    rows = [r for r in al.rows if r.status.is_problem] if only_problems else al.rows
    stats = None
    if report.stats is not None:
        stats = _stats_json(report, top)
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
        **({"mixed": _mixed_json(report, top)} if report.mixed is not None else {}),
    }


def _stats_json(report: "DiffReport", top: int | None) -> Any:
    from . import stats as stats_report

    return stats_report.report_dict(report.stats, top=20 if top is None else top, embeddings=report.embeddings,
                                    spectra=report.spectra)


def _mixed_json(report: "DiffReport", top: int | None) -> dict:
    """The mixing preview: where the alphas came from, how many tensors got each, and the mixed
    result's statistics against pretrained (same schema as ``stats``; ``per_tensor`` has ``alpha``)."""
    from collections import Counter

    from . import stats as stats_report

    doc = stats_report.report_dict(report.mixed, top=20 if top is None else top,
                                   embeddings=report.mixed_embeddings)
    for d in doc["per_tensor"]:
        d["alpha"] = report.alphas.get(d["target"])
    used = Counter(report.alphas.values())
    return {"formula": "pre + alpha * (ft - pre)", "alpha_source": report.alpha_source,
            "alphas_used": {f"{a:g}": n for a, n in sorted(used.items())}, "stats": doc}


def _spectra_json(report: "DiffReport") -> list:
    if not report.spectra:
        return []
    from . import stats as stats_report

    return [stats_report.spectrum_dict(sp) for sp in report.spectra]



# ---------------------------------------------------------------------------------------------
# text (rich) rendering

def _shape(t) -> str:
    if t is None:
        return "—"
    return f"{fmt_shape(t.shape)} {t.dtype}"


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


def headline_counts(al: Alignment) -> list[tuple[str, str]]:
    """The counts as a user reads them: a dtype-only difference is a match (GPT-SoVITS casts on
    load), so ``matched`` counts both and says how many differ in dtype; JSON keeps the split."""
    c = al.counts
    matched = c.get(Status.MATCHED, 0) + c.get(Status.DTYPE_DIFFERS, 0)
    dt = c.get(Status.DTYPE_DIFFERS, 0)
    out = [("matched", f"{matched}" + (f" ({dt} differ only in dtype)" if dt else ""))]
    out += [(s.value, str(c.get(s, 0))) for s in (Status.SHAPE_DIFFERS, Status.MISSING, Status.UNEXPECTED,
                                                   Status.CONFLICT)]
    return out


def _counts_line(al: Alignment) -> str:
    return "  ".join(f"{label}: {value}" for label, value in headline_counts(al))


_INFORMATIONAL = (Status.DTYPE_DIFFERS, Status.MATCHED)


def _sections(al: Alignment, only_problems: bool, top: int | None, all_rows: bool = True):
    """(status, every row of it, the rows to show) per non-empty section, most serious first.

    Without `all_rows`, informational sections (dtype-only, matched) come with no rows to show:
    the renderers print one line for them instead.
    """
    by_status: dict[Status, list[Row]] = {}
    for r in al.rows:
        by_status.setdefault(r.status, []).append(r)
    for status in _STATUS_ORDER:
        rows = by_status.get(status)
        if rows and (status.is_problem or not only_problems):
            if status in _INFORMATIONAL and not all_rows:
                yield status, rows, []
            else:
                yield status, rows, rows if top is None else rows[:top]


def collapsed_line(status: Status, rows: list[Row]) -> str:
    """One line for an informational section left unlisted (``--all`` lists it)."""
    if status is Status.DTYPE_DIFFERS:
        pairs = collections.Counter((r.pre.dtype, r.ft.dtype) for r in rows if r.pre is not None and r.ft is not None)
        how = ", ".join(f"{a} → {b}" + (f" ×{n}" if len(pairs) > 1 else "") for (a, b), n in pairs.most_common())
        return f"{status.value} ({len(rows)}): pair up, differing only in dtype ({how}); --all lists them"
    return f"{status.value} ({len(rows)}): same name, shape and dtype; --all lists them"


def _finding_text(f: Finding):
    """One finding as an indented, severity-coloured rich Text line."""
    from rich.text import Text

    line = Text(f"  {f.severity.upper():7} ", style=_SEVERITY_STYLE.get(f.severity, ""))
    line.append(f"[{f.code}] ", style="dim")
    line.append(f.message)
    return line


def render_text(report: DiffReport, console, *, only_problems: bool = False, top: int | None = None,
                show_stats: bool = True, all_rows: bool = False) -> None:
    """Print the report with rich; `console` decides colours (none when piped).

    What matters first: files, rules, verdict and counts, findings, then the statistics
    (where the change went, most-changed tensors and modules, phoneme rows by language), then
    the per-key listing, where informational sections collapse to one line unless `all_rows`.
    """
    from rich.text import Text

    al = report.alignment
    _render_head(report, console)
    console.print(Text(_verdict(al), style="bold green" if al.ok else "bold red"))
    console.print(_counts_line(al))
    if report.hint:
        console.print(Text(f"hint: {report.hint}", style="yellow"))
    if report.findings:
        console.print(Text("findings", style="bold"))
        for f in report.findings:
            console.print(_finding_text(f))
    if al.conflicts:
        console.print(Text("conflicts", style="bold red"))
        for target, sources in al.conflicts:
            console.print(f"  {target}  <=  {', '.join(sources)}")
    if show_stats:
        if report.stats is not None:
            _render_stats_text(report, console, top)
        elif report.stats_error:
            console.print(Text(f"stats not computed: {report.stats_error}", style="yellow"))
    for status, rows, shown in _sections(al, only_problems, top, all_rows):
        if not shown:
            console.print(Text(collapsed_line(status, rows), style=_STATUS_STYLE[status]))
            continue
        console.print(_rows_table(console, status, rows, shown))
        if len(shown) < len(rows):
            console.print(f"  … and {len(rows) - len(shown)} more {status.value} rows (--top)")
    if al.dropped:
        console.print(f"dropped by rules: {sum(1 for d in al.dropped if d[0] == 'ft')} fine-tuned, "
                      f"{sum(1 for d in al.dropped if d[0] == 'pre')} pretrained keys")
    _render_spectra_text(report, console)


def _render_head(report: DiffReport, console) -> None:
    """The two files, the rules with their hits, the weights entry."""
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


def _rows_table(console, status: Status, rows: list[Row], shown: list[Row]):
    """One status section of the per-key listing."""
    from rich.text import Text

    t = _table(console, title=f"{status.value} ({len(rows)})", title_justify="left", show_edge=False,
               pad_edge=False, title_style=_STATUS_STYLE[status])
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
    return t


def _table(console, **kw):
    """A rich Table: boxed on a terminal, plain aligned columns when piped (grep/awk friendly)."""
    from rich.table import Table

    if not getattr(console, "is_terminal", False):
        kw.setdefault("box", None)
    return Table(**kw)


def _render_stats_text(report: "DiffReport", console, top: int | None) -> None:
    from rich.text import Text

    from . import stats as stats_report

    top = 20 if top is None else top
    if report.mixed is None:
        stats_report.print_report(console, report.stats, top=top, embeddings=report.embeddings)
        return
    console.print(Text(mix_banner(report), style="bold"))
    stats_report.print_report(console, report.mixed, top=top, embeddings=report.mixed_embeddings)


def mix_banner(report: "DiffReport") -> str:
    """What the mixing preview shows, with the whole model's change before and after mixing."""
    from collections import Counter

    from ..stats.rollup import rollup
    from .numbers import fmt_rel

    used = Counter(report.alphas.values())
    alphas = ", ".join(f"{a:g} ×{n}" for a, n in sorted(used.items()))
    ft, mx = rollup(report.stats).get(""), rollup(report.mixed).get("")
    whole = ""
    if ft is not None and mx is not None and ft.paired:
        whole = f"; whole model rel Δ {fmt_rel(mx.rel_change)} (fine-tuned as is: {fmt_rel(ft.rel_change)})"
    return (f"mixing preview ({report.alpha_source}): result = pre + alpha·(ft − pre), alpha {alphas}; "
            f"the statistics below are the mixed result against pretrained{whole}")


def _render_spectra_text(report: "DiffReport", console) -> None:
    from rich.text import Text

    for note in report.spectra_notes:
        console.print(Text(f"note: {note}", style="yellow"))
    if report.spectra:
        from . import stats as stats_report

        stats_report.print_spectra(console, report.spectra)



# ---------------------------------------------------------------------------------------------
# Markdown

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("`", "'")


def render_markdown(report: DiffReport, *, only_problems: bool = False, top: int | None = None,
                    all_rows: bool = False) -> str:
    """The report as Markdown, in the order of :func:`render_text` (statistics before the listing)."""
    al = report.alignment
    counts = headline_counts(al)
    out = ["# gsvinspect diff", "",
           f"- **pretrained:** `{_md_escape(report.pre.describe())}`",
           f"- **fine-tuned:** `{_md_escape(report.ft.describe())}`",
           f"- **result:** {'✅' if al.ok else '❌'} {_verdict(al)}", ""]
    out += ["| " + " | ".join(label for label, _ in counts) + " |",
            "|" + "---:|" * len(counts),
            "| " + " | ".join(value for _, value in counts) + " |", ""]
    if report.hint:
        out += [f"**hint:** {_md_escape(report.hint)}", ""]
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
    if report.stats is not None:
        md = _stats_markdown(report, top)
        if md:
            out += ["## Weight changes", "", md, ""]
    out += _rows_markdown(al, only_problems, top, all_rows)
    if report.spectra or report.spectra_notes:
        out += _spectra_markdown(report)
    return "\n".join(out)


def _rows_markdown(al: Alignment, only_problems: bool, top: int | None, all_rows: bool) -> list[str]:
    out: list[str] = []
    for status, rows, shown in _sections(al, only_problems, top, all_rows):
        if not shown:
            out += [f"- {_md_escape(collapsed_line(status, rows))}", ""]
            continue
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
    return out


def _spectra_markdown(report: "DiffReport") -> list[str]:
    from . import stats as stats_report

    out = ["## Change spectra"]
    if report.spectra_notes:
        out += [""] + [f"- {_md_escape(n)}" for n in report.spectra_notes]
    return out + stats_report.spectra_markdown(report.spectra) + [""]


def _stats_markdown(report: "DiffReport", top: int | None) -> str | None:
    from . import stats as stats_report

    top = 20 if top is None else top
    if report.mixed is None:
        return stats_report.to_markdown(report.stats, top=top, embeddings=report.embeddings)
    return (f"_{_md_escape(mix_banner(report))}_\n\n"
            + stats_report.to_markdown(report.mixed, top=top, embeddings=report.mixed_embeddings))
