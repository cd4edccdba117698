"""`gsvinspect export PRE FT -o OUT`: write the fine-tuned model as a new GPT-SoVITS base (or export).

The plan is printed first (`--dry-run` stops there); the write is atomic and verified
(gsvinspect.export.writer.run_export). Exit codes: 0 written (or a clean dry run), 1 dry run with
problems, 2 usage/rules errors, 3 unreadable input or refused export.
"""

from __future__ import annotations

import sys

from .main import COMMON


def add_parser(sub) -> None:
    from ..export.options import CONFIG_CHOICES, DTYPE_CHOICES, LAYOUT_ALIASES, LAYOUT_CHOICES, MISSING_CHOICES

    p = sub.add_parser(
        "export", parents=[COMMON], help="write a fine-tuned checkpoint as a new base model",
        description="Write FT (fine-tuned) in the layout of PRE (pretrained) so GPT-SoVITS accepts it as "
        "pretrained_s1 / pretrained_s2G / pretrained_s2D, or as an inference export (--layout). "
        "Missing keys are filled from PRE, GradScaler state is kept, the result is verified bit for bit "
        "and checked against GPT-SoVITS's own version detection before it replaces OUT.")
    p.add_argument("pretrained", metavar="PRE", help="the pretrained file whose layout the output takes")
    p.add_argument("finetuned", metavar="FT", help="the fine-tuned file the weights come from")
    p.add_argument("-o", "--output", metavar="OUT", help="file to write (required unless --dry-run)")
    p.add_argument("--rules", metavar="FILE", help="rename rules (TOML) and optional per-module [alpha]")
    p.add_argument("--suggest", action="store_true", help="apply suggested rename rules automatically")
    p.add_argument("--layout", default="pretrained", choices=list(LAYOUT_CHOICES) + list(LAYOUT_ALIASES),
                   help="pretrained (default: new base model), gpt-weights / sovits-weights (inference "
                   "exports: fp16, no enc_q, 05/06 or 03/04 headers), same/repair (FT's own layout, "
                   "paths written as strings)")
    p.add_argument("--dtype", default="keep", choices=DTYPE_CHOICES,
                   help="keep: the layout's dtype (PRE's for bases, fp16 for exports, FT's for same)")
    p.add_argument("--alpha", type=float, metavar="A",
                   help="write (1-A)*pre + A*ft (1 = fine-tuned, 0 = pretrained); [alpha] in --rules overrides per module")
    p.add_argument("--missing", default="pretrained", choices=MISSING_CHOICES,
                   help="keys the fine-tuned file lacks (or has in another shape): fill from PRE, or refuse")
    p.add_argument("--config", default="plain", choices=CONFIG_CHOICES,
                   help="plain: write an HParams-like config as a plain dict; keep: unchanged")
    p.add_argument("--allow-swapped", action="store_true",
                   help="export even when PRE is a training checkpoint or export and FT a pretrained base")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tensors", action="store_true", help="with --json: list every output tensor's source")
    p.add_argument("--trust", action="store_true", help="load inputs with plain torch.load (runs code from the files!)")
    p.set_defaults(run=run)


def _table(con, title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:
        style = "red" if k == "PROBLEM" else None
        t.add_row(k, v, style=style)
    con.print(t)


def _list(con, title: str, items: list[tuple[str, str]], limit: int = 40) -> None:
    if not items:
        return
    con.print(f"[bold]{title}[/bold] ({len(items)})")
    for k, why in items[:limit]:
        con.print(f"  {k}  [dim]{why}[/dim]")
    if len(items) > limit:
        con.print(f"  ... {len(items) - limit} more (--json --tensors lists them all)")


def run(args) -> int:
    from ..load.checkpoint import open_with_entry
    from ..errors import UsageError
    from ..export.plan import plan_export
    from ..export.writer import run_export
    from ..report.output import console, emit_json

    if not args.dry_run and not args.output:
        raise UsageError("export needs -o OUT (or --dry-run to only print the plan)")
    rules = None
    if args.rules:
        from ..align.rules import load_rules

        rules = load_rules(args.rules)
    from ..align.rules import alpha_conflict

    if (why := alpha_conflict(rules, args.alpha)) is not None:
        raise UsageError(why)
    con = None if args.json else console()
    entry = rules.weights_entry if rules is not None else None
    with open_with_entry(args.pretrained, trust=args.trust, weights_entry=entry) as pre, \
            open_with_entry(args.finetuned, trust=args.trust, weights_entry=entry) as ft:
        plan = plan_export(pre, ft, rules=rules, layout=args.layout, dtype=args.dtype, alpha=args.alpha,
                           missing=args.missing, config=args.config, suggest=args.suggest,
                           allow_swapped=args.allow_swapped)
        if args.dry_run:
            if args.json:
                emit_json({"dry_run": True, "out": args.output, **plan.to_json(tensors=args.tensors)})
            else:
                rows = plan.describe()
                rows.insert(2, ("output", args.output or "(none given: add -o OUT to write)"))
                _table(con, "export plan (dry run: nothing written)", rows)
                _list(con, "filled from pretrained", plan.filled())
                _list(con, "dropped", plan.dropped)
            return 0 if plan.ok else 1
        progress = _print_progress if not args.json and sys.stderr.isatty() else None
        report = run_export(plan, args.output, force=args.force, progress=progress)
        if progress is not None:
            print(file=sys.stderr)
        if args.json:
            emit_json(report.to_json(tensors=args.tensors))
        else:
            _table(con, "export written", report.describe())
            _list(con, "filled from pretrained", plan.filled())
            _list(con, "dropped", plan.dropped)
    return 0


def _print_progress(phase: str, done: int, total: int) -> None:
    print(f"\r{phase:8s} {done}/{total}   ", end="", file=sys.stderr, flush=True)
