"""Detail and info panels: renderables for the key under the cursor and for the non-weight entries.

Everything here formats objects the library produced (alignment rows, TensorStats, Findings,
checkpoint extras); nothing is computed beyond counting for a summary.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from rich.console import Group as RGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from gsvinspect.report.numbers import fmt_rel

from gsvinspect.errors import safe_text

from .diff_view import change_colour, format_shape
from .model import STATUS_LABELS, Group, Leaf, Line

STAT_FIELDS = (
    ("rel_change", "relative change ‖Δ‖/‖pre‖", "pct"),
    ("cosine", "cosine(pre, ft)", "f6"),
    ("norm_pre", "‖pre‖", "g"),
    ("norm_ft", "‖ft‖", "g"),
    ("norm_diff", "‖ft − pre‖", "g"),
    ("max_abs_diff", "max |ft − pre|", "g"),
    ("changed_frac", "elements changed", "pct"),
    ("numel", "elements", "int"),
)
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "warn": "yellow", "info": "cyan"}


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    try:
        if kind == "pct":
            return fmt_rel(float(value))      # the library's one percentage format ("from 0" for a zero pre)
        if kind == "f6":
            return f"{float(value):.6f}"
        if kind == "int":
            return f"{int(value):,}"
        v = float(value)
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    except (TypeError, ValueError):
        return str(value)


def _kv_table() -> Table:
    t = Table.grid(padding=(0, 1))
    t.add_column(style="dim", no_wrap=True)
    t.add_column(overflow="fold")
    return t


def leaf_detail(leaf: Leaf, rules: Any = None, single: bool = False) -> RenderableType:
    row = leaf.row
    parts: list[RenderableType] = []
    status = STATUS_LABELS.get(leaf.status, leaf.status.lower())
    head = Text(safe_text(row.target), style="bold")
    if status:
        head.append(f"\n{status}", style="red" if leaf.is_problem else "green")
    parts.append(head)
    t = _kv_table()
    sides = [("pretrained", row.pre_key, row.pre)] + ([] if single else [("fine-tuned", row.ft_key, row.ft)])
    for label, key, info in sides:
        if info is None and key is None:
            t.add_row(label, Text("∅ absent", style="dim"))
            continue
        t.add_row(label, Text(safe_text(key)))
        if info is not None:
            t.add_row("", Text(f"{format_shape(info.shape)} {info.dtype} · {info.numel:,} elements",
                               style="dim"))
    sources = getattr(row, "sources", ())
    if sources:
        t.add_row("sources", Text("\n".join(safe_text(x) for x in sources), style="red"))
    rule_ids = getattr(row, "rules", ()) or ((row.rule,) if row.rule is not None else ())
    if rule_ids and rules is not None:
        for i in rule_ids:
            try:
                desc = rules.rules[i].describe()
            except (IndexError, AttributeError):
                desc = ""
            t.add_row(f"rule {i + 1}", Text(desc))
    elif not single:
        t.add_row("rule", Text("none (same name)", style="dim"))
    parts.append(t)
    if leaf.stats is not None:
        st = _kv_table()
        if leaf.share is not None:
            st.add_row("share of the model's Σ‖Δ‖²", Text(_fmt(leaf.share, "pct"), style=change_colour(leaf.share)))
        for name, label, kind in STAT_FIELDS:
            value = getattr(leaf.stats, name, None)
            if value is None:
                continue
            style = change_colour(value) if name == "rel_change" else ""
            st.add_row(label, Text(_fmt(value, kind), style=style))
        bad = {k: getattr(leaf.stats, k) for k in ("nan_pre", "nan_ft", "inf_pre", "inf_ft")
               if getattr(leaf.stats, k, 0)}
        for k, v in bad.items():
            st.add_row(k.replace("_", " "), Text(f"{v:,}", style="bold red"))
        title = "\nstatistics"
        if leaf.alpha is not None:
            title += f" of the mix pre + {leaf.alpha:g}·(ft − pre) against pretrained (rules' [alpha])"
        parts.append(Text(title, style="bold underline"))
        parts.append(st)
    elif not single and row.pre is not None and row.ft is not None:
        parts.append(Text("\nstatistics pending…", style="dim"))
    return RGroup(*parts)


def group_detail(group: Group) -> RenderableType:
    t = _kv_table()
    t.add_row("keys", f"{group.n_keys:,}")
    for status, n in sorted(group.problems.items()):
        t.add_row(STATUS_LABELS.get(status, status), Text(f"{n:,}", style="red"))
    change = group.change
    if change is not None:
        if group.share is not None:
            t.add_row("share of the model's Σ‖Δ‖²", Text(_fmt(group.share, "pct"), style=change_colour(group.share)))
        t.add_row("relative change", Text(_fmt(change, "pct"), style=change_colour(change)))
        t.add_row("largest key change", Text(_fmt(group.max_change, "pct"), style=change_colour(group.max_change)))
        t.add_row("keys with stats", f"{group.n_stats:,}")
    return RGroup(Text(safe_text(group.prefix) + ".*", style="bold"), t)


def embedding_table(changes: Any, limit: int = 12) -> RenderableType:
    """The most-changed rows of a phoneme embedding table (rollup.RowChanges), with languages."""
    t = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim")
    t.add_column("row", justify="right")
    t.add_column("symbol")
    t.add_column("lang")
    t.add_column("change", justify="right")
    for r in changes.top(limit):
        t.add_row(str(r.index), r.symbol, r.language, Text(_fmt(r.rel_change, "pct"), style=change_colour(r.rel_change)))
    parts: list[RenderableType] = [
        Text(f"\nphoneme embedding ({changes.symbol_set or 'unknown'} symbol set): most-changed rows",
             style="bold underline"), t]
    if changes.by_language:
        lt = Table(box=None, padding=(0, 1), show_edge=False, header_style="dim")
        lt.add_column("language")
        lt.add_column("rows moved", justify="right")
        lt.add_column("change", justify="right")
        summaries = sorted(changes.by_language.values(), key=lambda s: -(s.rel_change or 0))
        for s in summaries:
            lt.add_row(s.language, f"{s.moved}/{s.rows}", Text(_fmt(s.rel_change, "pct"), style=change_colour(s.rel_change)))
        parts += [Text("by language", style="dim"), lt]
    if changes.note:
        parts.append(Text(changes.note, style="dim"))
    return RGroup(*parts)


class SpectrumAsk(NamedTuple):
    """What `v` asked for on one line: a title and the alignment rows to decompose."""

    title: str
    rows: list


SPARK = "▁▂▃▄▅▆▇█"
SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def sparkline(values: list[float]) -> str:
    """Bars scaled to the largest value: a LoRA-like change shows a few tall bars, a rewrite many."""
    top = max(values, default=0.0)
    if not top > 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(7, round(7 * v / top))] for v in values)


def _verdict_style(sp: Any) -> str:
    if sp.frobenius == 0.0:
        return "dim"
    return "bold cyan" if sp.verdict.startswith("low-rank") else "bold yellow"


def spectrum_block(sp: Any) -> RenderableType:
    """One spectrum.Spectrum: verdict, ranks, energy, the top singular values as a sparkline."""
    t = _kv_table()
    k = len(sp.singular_values)
    t.add_row("verdict", Text(sp.verdict, style=_verdict_style(sp)))
    t.add_row("effective rank", f"{sp.effective_rank:.3g}  (stable rank ‖Δ‖²/σ₁²)")
    rank90 = f"> {k}" if sp.rank90 is None else str(sp.rank90)
    t.add_row("rank90", f"{rank90} of {min(sp.shape)} directions hold 90 % of ‖Δ‖²")
    t.add_row(f"energy in top {k}", _fmt(sp.energy_top_k, "pct"))
    top = " ".join(f"{v:.3g}" for v in sp.singular_values[:6]) + (" …" if k > 6 else "")
    bars = Text.assemble((sparkline(sp.singular_values), "cyan"), f"  {top}")
    t.add_row(f"σ₁…σ{str(k).translate(SUBSCRIPT)}", bars)
    t.add_row("computed", Text(f"{sp.method} SVD of {sp.shape[0]}×{sp.shape[1]} on {sp.device_used}", style="dim"))
    return t


def spectrum_section(asked: SpectrumAsk | str, results: dict) -> RenderableType:
    """The `v` part of the detail pane: why not (`asked` is a reason), or each asked row's spectrum
    from `results` ((pre_key, ft_key) -> Spectrum, or the error text), "computing…" until it arrives."""
    if isinstance(asked, str):
        return RGroup(Text("\nchange spectrum", style="bold underline"),
                      Text(f"not applicable: {asked}", style="yellow"))
    parts: list[RenderableType] = [Text(f"\n{safe_text(asked.title)}", style="bold underline")]
    for row in asked.rows:
        if len(asked.rows) > 1:
            parts.append(Text(f"\n{safe_text(row.target)}", style="bold"))
        result = results.get((row.pre_key, row.ft_key))
        if result is None:
            parts.append(Text("computing…", style="dim"))
        elif isinstance(result, str):
            parts.append(Text(f"no spectrum: {result}", style="red"))
        else:
            parts.append(spectrum_block(result))
    return RGroup(*parts)


def _summarize(obj: Any, depth: int = 0, max_items: int = 12) -> Any:
    """A small plain view of an extra entry: nested dicts kept, tensors and long lists summarised."""
    info = getattr(obj, "info", None)
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and callable(info):
        return f"tensor {format_shape(tuple(obj.shape))} {obj.dtype}"
    as_plain = getattr(obj, "as_plain", None)
    if callable(as_plain):
        try:
            obj = as_plain()
        except Exception:
            return f"<{getattr(obj, 'fullname', type(obj).__name__)}>"
    if isinstance(obj, dict):
        if depth >= 3:
            return f"{{… {len(obj)} entries}}"
        out = {}
        for i, (k, v) in enumerate(obj.items()):
            if i >= max_items:
                out["…"] = f"{len(obj) - max_items} more"
                break
            out[safe_text(k)] = _summarize(v, depth + 1, max_items)
        return out
    if isinstance(obj, (list, tuple)):
        if len(obj) > 6 or depth >= 3:
            return f"[{len(obj)} items]"
        return [_summarize(v, depth + 1, max_items) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        if isinstance(obj, str):
            obj = safe_text(obj)
            return obj[:117] + "…" if len(obj) > 120 else obj
        return obj
    return f"<{type(obj).__name__}>"


def optimizer_summary(opt: Any) -> str:
    """'AdamW-style: 4 param groups, state for 700 params, lr 0.0001'."""
    try:
        if hasattr(opt, "as_plain"):
            opt = opt.as_plain()
        if isinstance(opt, list):
            return "; ".join(optimizer_summary(o) for o in opt[:3])
        groups = opt.get("param_groups", [])
        state = opt.get("state", {})
        lrs = sorted({g.get("lr") for g in groups if isinstance(g, dict) and "lr" in g}, key=str)
        lr = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in lrs)
        return f"{len(groups)} param groups, state for {len(state)} params" + (f", lr {lr}" if lr else "")
    except Exception:
        return "present"


def checkpoint_info(ck: Any, title: str) -> RenderableType:
    """Layout, version, evidence, scaler state and the other top-level entries of one file."""
    from rich.pretty import Pretty

    parts: list[RenderableType] = [Text(safe_text(title), style="bold underline")]
    t = _kv_table()
    t.add_row("file", Text(safe_text(ck.path.name)))
    t.add_row("size", f"{ck.size:,} B")
    t.add_row("container", str(ck.container))
    layout = getattr(ck.layout, "value", ck.layout)
    t.add_row("layout", str(layout))
    t.add_row("version", str(ck.version))
    for ev in list(getattr(ck, "evidence", []))[:4]:
        t.add_row("", Text(f"· {safe_text(ev)}", style="dim"))
    t.add_row("weights", f"{len(ck.weights):,} tensors under {'.'.join(ck.weights_path) or '(top level)'}")
    scaler = getattr(ck, "scaler", None)
    if scaler is not None:
        state = _summarize(getattr(scaler, "state", {}))
        t.add_row("scaler", Text(f"under {'.'.join(scaler.path)}: " + ", ".join(
            f"{k}={v}" for k, v in (state.items() if isinstance(state, dict) else []))))
    else:
        t.add_row("scaler", Text(getattr(ck, "scaler_note", "") or "none", style="dim"))
    parts.append(t)
    extras = dict(getattr(ck, "extras", {}) or {})
    for key, value in extras.items():
        if key in ("optimizer", "optimizer_states"):
            parts.append(Text.assemble((f"{key}: ", "bold"), optimizer_summary(value)))
            continue
        if scaler is not None and (key,) == tuple(scaler.path):
            continue
        parts.append(Text(f"{safe_text(key)}:", style="bold"))
        parts.append(Pretty(_summarize(value), max_depth=4, max_length=12, max_string=120))
    return RGroup(*parts)


def findings_view(findings: list) -> RenderableType:
    if not findings:
        return Text("No GPT-SoVITS findings.", style="dim")
    parts: list[RenderableType] = []
    for f in findings:
        sev = str(getattr(f, "severity", "info"))  # knowledge.Finding: "error" | "warning" | "info"
        line = Text()
        line.append(f"{sev.upper():7} ", style=SEVERITY_STYLE.get(sev.lower(), ""))
        line.append(f"[{getattr(f, 'code', '')}] ", style="dim")
        line.append(safe_text(getattr(f, "message", f)))
        keys = list(getattr(f, "keys", ()) or ())
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            line.append("\n        " + ", ".join(safe_text(k) for k in keys[:3]) + more, style="dim")
        parts.append(line)
    return RGroup(*parts)


class DetailPanel(VerticalScroll):
    """Shows one renderable, scrollable."""

    DEFAULT_CSS = """
    DetailPanel { height: 1fr; padding: 0 1; }
    DetailPanel > Static { width: 1fr; }
    """

    renderable: RenderableType = ""
    """What the panel shows now (kept for tests and copy-out)."""

    def compose(self):
        yield Static("", classes="detail-body")

    def show(self, renderable: RenderableType) -> None:
        self.renderable = renderable
        self.query_one(".detail-body", Static).update(renderable)

    def scroll_past(self, above: RenderableType) -> None:
        """Scroll so that what follows `above` (the first part of what is shown) starts at the top."""
        width = self.scrollable_content_region.width or 40
        console = self.app.console
        lines = len(console.render_lines(above, console.options.update_width(width), pad=False))
        self.call_after_refresh(self.scroll_to, y=lines, animate=False)

    def plain_text(self, width: int = 100) -> str:
        """The panel's content as plain text."""
        import io

        from rich.console import Console

        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(self.renderable)
        return console.export_text()


def line_detail(line: Line | None, rules: Any = None, single: bool = False) -> RenderableType:
    if line is None:
        return Text("No key under the cursor.", style="dim")
    if line.is_group:
        return group_detail(line.node)
    return leaf_detail(line.node, rules, single)
