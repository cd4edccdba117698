"""`gsvinspect diff PRE FT`: line up two checkpoints' keys under a rule list and say what it means.

With --spectrum/--spectrum-top it also says *how* chosen weights changed: the singular values of
Δ = ft - pre (low-rank, LoRA-like, or a rewrite). Spectra need no statistics, so --spectrum works
with --no-stats and reads only the tensors it names; --spectrum-top ranks by the statistics.

Exit 0 when fully aligned, 1 when anything is missing, unexpected, conflicting or of another
shape (a dtype difference alone does not count), 2 for usage/rules errors, 3 for unreadable files.
"""

from __future__ import annotations

import math
import sys
from contextlib import ExitStack

from .main import COMMON

SPECTRUM_MODULE_CAP = 16  # a --spectrum module prefix takes at most this many weights (an SVD each)


def add_parser(sub) -> None:
    p = sub.add_parser("diff", parents=[COMMON], help="compare the keys of a pretrained and a fine-tuned checkpoint",
                       description="Pair the keys of PRE (pretrained) and FT (fine-tuned) after applying rename "
                       "rules, explain what the differences mean for GPT-SoVITS, and (unless --no-stats) "
                       "measure how far each tensor moved; with --spectrum, how a weight moved (low-rank "
                       "or a rewrite). Exit 0: fully aligned; 1: differences; "
                       "2: usage or rules-file error; 3: unreadable file.")
    p.add_argument("pre", metavar="PRE", help="pretrained checkpoint (the reference side)")
    p.add_argument("ft", metavar="FT", help="fine-tuned checkpoint")
    p.add_argument("--rules", metavar="FILE", help="TOML rules file (see `gsvinspect rules suggest`)")
    p.add_argument("--suggest", action="store_true", help="use the automatically suggested rules")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output (schema: gsvinspect.diff/1), "
                     "with the statistics of every aligned pair")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown report")
    fmt.add_argument("--csv", action="store_true", help="one row per key with the JSON's columns (for a "
                     "spreadsheet or pandas)")
    p.add_argument("--only-problems", action="store_true", help="leave matched keys out of the listing")
    p.add_argument("--all", action="store_true", dest="all_rows",
                   help="list matched and dtype-only keys too (by default each is one line)")
    p.add_argument("--alpha", type=float, metavar="A",
                   help="preview the mix `export --alpha A` would write, pre + A*(ft - pre): the statistics "
                   "show the mixed result against pretrained ([alpha] in --rules overrides per module)")
    p.add_argument("--top", type=int, metavar="N", help="show at most N rows per section (and N top changes)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to compute stats and spectra")
    p.add_argument("--spectrum", action="append", default=[], metavar="KEY",
                   help="singular values of the change ft - pre of a 2-D/conv weight: low-rank (LoRA-like) or "
                   "a rewrite? KEY is a target key as listed, or a module prefix (its paired 2-D weights; "
                   f"over {SPECTRUM_MODULE_CAP}, the most changed); repeatable; works with --no-stats, "
                   "reading only those tensors")
    p.add_argument("--spectrum-top", type=int, metavar="N",
                   help="spectra of the N most-changed 2-D/conv weights (ranked by the stats, so not with "
                   "--no-stats)")
    p.add_argument("--no-stats", action="store_true", help="keys and shapes only; read no tensor data")
    p.add_argument("--trust", action="store_true", help="load with plain torch.load (runs code from the files!)")
    p.set_defaults(run=run)


def compute_report(args, stack: ExitStack):
    """Build the DiffReport for parsed args; both checkpoints are opened into `stack`, which closes them."""
    from ..align.alignment import align
    from ..load.checkpoint import open_with_entry
    from ..report.diff import DiffReport, FileSide
    from ..errors import UsageError
    from ..align.knowledge import diagnose
    from ..align.rules import load_rules
    from ..align.suggest import suggest_rules

    if args.top is not None and args.top < 1:
        raise UsageError("--top needs a positive number")
    if args.spectrum_top is not None and args.spectrum_top < 1:
        raise UsageError("--spectrum-top needs a positive number")
    if args.spectrum_top and args.no_stats:
        raise UsageError("--spectrum-top ranks weights by the stats that --no-stats skips; drop --no-stats, "
                         "or name weights with --spectrum KEY")
    from ..export.mixing import check_alpha

    check_alpha(args.alpha)           # the message export gives for the same flag
    if args.alpha is not None and args.no_stats:
        raise UsageError("--alpha previews the mix from the statistics that --no-stats skips; drop --no-stats")
    if args.rules and args.suggest:
        raise UsageError("--rules and --suggest exclude each other (write the suggestion to a file with "
                         "`gsvinspect rules suggest PRE FT > rules.toml` and edit it)")
    rules = load_rules(args.rules) if args.rules else None   # a bad rules file fails before any file is read
    from ..align.rules import alpha_conflict

    if (why := alpha_conflict(rules, args.alpha)) is not None:
        raise UsageError(why)
    entry = rules.weights_entry if rules is not None else None
    pre = stack.enter_context(open_with_entry(args.pre, trust=args.trust, weights_entry=entry))
    ft = stack.enter_context(open_with_entry(args.ft, trust=args.trust, weights_entry=entry))
    if args.suggest:
        rules = suggest_rules(pre.weights, ft.weights)
    al = align(pre.weights, ft.weights, rules)
    report = DiffReport(pre=FileSide.of(pre, args.pre), ft=FileSide.of(ft, args.ft), alignment=al,
                        findings=diagnose(pre, ft, al), suggested=bool(args.suggest))
    if not al.ok and rules is None:
        report.hint = _suggest_hint(pre, ft, al)
    asked = _asked_spectra(args, al)   # a bad --spectrum fails before any tensor is read
    if not args.no_stats:
        report.stats, report.stats_error = _stats(pre, ft, al, args.device)
        if report.stats is not None:
            report.embeddings = _embeddings(pre, ft, al)
            _mix(report, al.rules, args.alpha)
    if asked or args.spectrum_top:
        report.spectra, report.spectra_notes = _spectra(pre, ft, al, report, asked, args)
    return report


def _suggest_hint(pre, ft, al) -> str:
    """The next step when suggested rules pair up more keys than none do (a DDP `module.`, a
    Lightning `model.` on one side): a first `diff` of such a pair listed every key as missing and
    unexpected without naming the option that lines them up."""
    from ..align.alignment import align
    from ..align.suggest import suggest_rules

    rules = suggest_rules(pre.weights, ft.weights)
    if not len(rules):
        return ""
    better = align(pre.weights, ft.weights, rules)
    if better.n_paired <= al.n_paired:
        return ""
    return (f"the suggested rules ({', '.join(r.describe() for r in rules.rules)}) pair up {better.n_paired} "
            f"of {len(pre.weights)} pretrained keys: add --suggest, or write them to a file with "
            "`gsvinspect rules suggest PRE FT > rules.toml`")


def _asked_spectra(args, al) -> list[tuple[str, list]]:
    """(name, its rows) per --spectrum; checks the device once when any spectrum is wanted."""
    from ..stats.spectrum import check_device
    from ..stats.spectrum_pick import named

    asked = [(name, named(al, name)) for name in args.spectrum]
    if asked or args.spectrum_top:
        check_device(args.device)
    return asked


def _spectra(pre, ft, al, report, asked, args):
    """The spectra asked for by name, then the --spectrum-top most changed, without repeats.

    A weight named as a key must work (its error ends the run); one picked from a module or the
    ranking is skipped with a note instead, like a capped module.
    """
    from ..errors import UsageError
    from ..stats.spectrum import MIN_SIDE
    from ..stats.spectrum_pick import candidates, most_changed, of_row

    change = _change_of(report.stats)
    notes: list[str] = []
    picks = []   # (row, named as a key)
    for name, rows in asked:
        if len(rows) > SPECTRUM_MODULE_CAP:
            how = "most changed" if change else "first (no stats to rank by)"
            notes.append(f"{name}: {len(rows)} 2-D weights, showing the {SPECTRUM_MODULE_CAP} {how}; "
                         "name a key for another")
            rows = most_changed(rows, SPECTRUM_MODULE_CAP, change)
        picks += [(r, r.target == name) for r in rows]
    if args.spectrum_top:
        if change is None:
            notes.append(f"--spectrum-top: no stats to rank by ({report.stats_error or 'no paired tensors'})")
        else:
            moved = [r for r in candidates(al.rows, min_side=MIN_SIDE) if (change(r) or 0) > 0]
            picks += [(r, False) for r in most_changed(moved, args.spectrum_top, change)]
    spectra, seen = [], set()
    for row, is_key in picks:
        if row.target in seen:
            continue
        seen.add(row.target)
        try:
            spectra.append(of_row(pre, ft, row, device=args.device))
        except UsageError as exc:
            if is_key:
                raise
            notes.append(f"{row.target}: no spectrum: {str(exc).removeprefix('spectrum: ')}")
    return spectra, notes


def _change_of(stats):
    """row -> its ‖Δ‖² (the ranking of every most-changed list, see stats.rank), or None without stats.

    Non-finite ‖Δ‖² (Inf values) ranks as unknown: last.
    """
    if stats is None:
        return None
    per_key = stats.per_key

    def change(row):
        d = getattr(per_key.get(row.target), "sumsq_diff", None)
        return d if d is not None and math.isfinite(d) else None
    return change


def _embeddings(pre, ft, al):
    """Per-row changes of the phoneme tables: which languages a fine-tune moved."""
    from ..stats.rollup import embedding_keys, embedding_rows

    out = []
    for target in embedding_keys(r.target for r in al.rows):
        row = al.row_for(target)
        if row is not None and row.pre_key and row.ft_key:
            out.append(embedding_rows(pre, ft, row.pre_key, row.ft_key))
    return out


def _mix(report, rules, alpha: float | None) -> None:
    """With --alpha or an [alpha] table, the mixed result's stats against pretrained (from the sums)."""
    from ..stats.mix import alpha_lookup, mix_rows, mix_stats

    alpha_of = alpha_lookup(rules, alpha)   # the exporter's rule: [alpha] per module, else --alpha
    if alpha_of is None:
        return
    report.mixed = mix_stats(report.stats, alpha_of)
    report.mixed_embeddings = [mix_rows(rc, alpha_of(_target_of(report.alignment, rc.ft_key)))
                               for rc in report.embeddings]
    report.alphas = {t: alpha_of(t) for t, ts in report.stats.per_key.items() if ts.paired}
    report.alpha_source = (f"{rules.source or 'rules'} [alpha]" if rules is not None and rules.has_alphas
                           else f"--alpha {alpha:g}")


def _target_of(al, ft_key: str) -> str:
    return next((r.target for r in al.rows if r.ft_key == ft_key), ft_key)


def _stats(pre, ft, al, device):
    from ..stats.engine import compute_stats

    triples = [t for t in al.triples() if t[1] is not None and t[2] is not None]
    if not triples:
        return None, None
    try:
        return compute_stats(pre, ft, triples, device=device), None
    except ImportError as exc:  # torch/numpy missing
        return None, f"needs {exc.name or 'torch'}"


def run(args) -> int:
    from ..report.diff import render_markdown, render_text, to_json
    from ..report.output import console, emit_json
    from ..report.per_key import write_csv

    with ExitStack() as stack:
        report = compute_report(args, stack)
        if args.json:
            emit_json(to_json(report, only_problems=args.only_problems, top=args.top))
        elif args.csv:
            write_csv(report, sys.stdout, only_problems=args.only_problems)
        elif args.markdown:
            sys.stdout.write(render_markdown(report, only_problems=args.only_problems, top=args.top,
                                             all_rows=args.all_rows))
        else:
            render_text(report, console(), only_problems=args.only_problems, top=args.top,
                        show_stats=not args.no_stats, all_rows=args.all_rows)
    return 0 if report.ok else 1
