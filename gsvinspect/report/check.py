"""Render a `check` result (a file against a model version's exact key set): text, JSON, Markdown.

Shares the look of :mod:`gsvinspect.report.diff` (findings, tables that go plain when piped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..align.check import CheckResult
from ..meta import fmt_shape

if TYPE_CHECKING:
    from .diff import FileSide

CHECK_SCHEMA = "gsvinspect.check/1"


def check_to_json(result: CheckResult, side: FileSide | None = None) -> dict:
    out = {"schema": CHECK_SCHEMA, **result.as_dict()}
    if side is not None:
        out["file"] = side.as_dict()
    return out


def render_check_text(result: CheckResult, console, side: FileSide | None = None, *, top: int | None = None) -> None:
    from rich.text import Text

    from .diff import _finding_text, _table

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
            t.add_row(k, fmt_shape(e), fmt_shape(f))
        console.print(t)
        if len(rows) < len(result.shape_mismatched):
            console.print(f"  … and {len(result.shape_mismatched) - len(rows)} more (--top 0 lists all)")


def render_check_markdown(result: CheckResult, side: FileSide | None = None) -> str:
    from .diff import _md_escape

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
        out += [f"| `{_md_escape(k)}` | {fmt_shape(e)} | {fmt_shape(f)} |" for k, e, f in result.shape_mismatched]
    return "\n".join(out) + "\n"
