"""`gsvinspect rules suggest PRE FT` and `gsvinspect rules check FILE [PRE FT]`.

`suggest` prints a commented TOML rules file (redirect it: `> rules.toml`); `check` validates a
rules file (exit 2 with the line of the problem) and, given two checkpoints, shows how many keys
each rule touches.
"""

from __future__ import annotations

import sys

from .main import COMMON


def add_parser(sub) -> None:
    p = sub.add_parser("rules", parents=[COMMON], help="suggest or check key-rename rules",
                       description="Work with TOML key-rename rules files.")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")
    s = rsub.add_parser("suggest", parents=[COMMON], help="print suggested rules for a pair as TOML",
                        description="Print the shortest rule list that pairs the most keys of PRE and FT, as a "
                        "commented TOML file: gsvinspect rules suggest PRE FT > rules.toml")
    s.add_argument("pre", metavar="PRE")
    s.add_argument("ft", metavar="FT")
    s.add_argument("--trust", action="store_true", help="load with plain torch.load (runs code from the files!)")
    s.set_defaults(run=run_suggest)
    c = rsub.add_parser("check", parents=[COMMON], help="validate a rules file",
                        description="Validate a rules file (exit 2 with the line of the first problem); with PRE "
                        "and FT, also show how many keys each rule touches.")
    c.add_argument("file", metavar="FILE")
    c.add_argument("pre", metavar="PRE", nargs="?")
    c.add_argument("ft", metavar="FT", nargs="?")
    c.add_argument("--trust", action="store_true", help="load with plain torch.load (runs code from the files!)")
    c.set_defaults(run=run_check)
    p.set_defaults(run=lambda args: _usage(p))


def _usage(p) -> int:
    p.print_help(sys.stderr)
    return 2


def run_suggest(args) -> int:
    from ..align.alignment import Status, align
    from ..load.checkpoint import open_checkpoint
    from ..align.suggest import suggest_rules

    with open_checkpoint(args.pre, trust=args.trust) as pre, open_checkpoint(args.ft, trust=args.trust) as ft:
        rules = suggest_rules(pre.weights, ft.weights)
        al = align(pre.weights, ft.weights, rules)
    c = al.counts
    head = [
        f"# suggested by: gsvinspect rules suggest {args.pre} {args.ft}",
        f"# with these rules {al.n_paired} of {len(pre.weights)} pretrained keys pair up; "
        f"{c[Status.MISSING]} stay missing, {c[Status.UNEXPECTED]} fine-tuned keys stay unexpected"
        + (f", {c[Status.SHAPE_DIFFERS]} differ in shape" if c[Status.SHAPE_DIFFERS] else ""),
    ]
    sys.stdout.write("\n".join(head) + "\n" + rules.to_toml())
    return 0


def run_check(args) -> int:
    from ..errors import UsageError
    from ..align.rules import load_rules
    from ..load.checkpoint import open_with_entry

    rules = load_rules(args.file)
    print(f"{args.file}: OK, {len(rules.rules)} rule{'s' if len(rules.rules) != 1 else ''}"
          + (f", weights_entry {rules.weights_entry!r}" if rules.weights_entry else "")
          + (f", {len(rules.alphas) + (rules.alpha_default is not None)} alpha entries" if rules.has_alphas else ""))
    if (args.pre is None) != (args.ft is None):
        raise UsageError("give both PRE and FT (or neither)")
    hits = None
    if args.pre:
        from ..align.alignment import align

        with open_with_entry(args.pre, trust=args.trust, weights_entry=rules.weights_entry) as pre, \
                open_with_entry(args.ft, trust=args.trust, weights_entry=rules.weights_entry) as ft:
            al = align(pre.weights, ft.weights, rules)
        hits = al.rule_hits
    for i, rule in enumerate(rules.rules):
        where = f"line {rule.line}" if rule.line else ""
        extra = ""
        if hits is not None:
            extra = f"  -> {hits[i]} keys" if hits[i] else "  -> matched nothing"
        print(f"  {i + 1:>2}. {where:>8}  {rule.describe()}{extra}")
    if hits is not None and any(h == 0 for h in hits):
        return 1
    return 0
