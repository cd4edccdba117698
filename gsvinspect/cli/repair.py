"""`gsvinspect repair FILE -o OUT`: a copy that plain `torch.load(weights_only=True)` opens.

HParams configs become plain dicts, pathlib objects strings, everything else is kept bit for bit
(gsvinspect.export.repair). The plan is printed first (`--dry-run` stops there); the write is
atomic and verified. Exit codes: 0 written (or a clean dry run), 1 dry run with problems,
2 usage errors, 3 unreadable input or refused repair.
"""

from __future__ import annotations

from .main import COMMON


def add_parser(sub) -> None:
    p = sub.add_parser(
        "repair", parents=[COMMON], help="rewrite one file so torch.load(weights_only=True) opens it",
        description="Write a copy of FILE that loads with plain torch.load(weights_only=True) (torch >= 2.6) "
        "and still works where the original worked: utils.HParams configs become plain dicts, pathlib "
        "paths become strings, every tensor, optimizer/scaler state and other field is kept bit for bit. "
        "Nothing from the file is executed. Fixes 'Unsupported global: GLOBAL utils.HParams', "
        "'... GLOBAL pathlib.PosixPath' and (with --header plain) 'Unsupported operand 48'.")
    p.add_argument("file", metavar="FILE", help="the checkpoint to repair (never modified)")
    p.add_argument("-o", "--output", metavar="OUT", help="file to write (required unless --dry-run)")
    p.add_argument("--header", choices=("keep", "plain"), default="keep",
                   help="keep: keep a 2-byte version header (GPT-SoVITS's inference reads the version from "
                   "it); plain: write a plain PK zip for loaders that fail with 'Unsupported operand 48', "
                   "the version then goes into config.model.version")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import UsageError
    from ..export.repair import plan_repair, run_repair
    from ..load.checkpoint import open_checkpoint
    from ..report.output import console, emit_json
    from .export import _table

    if not args.dry_run and not args.output:
        raise UsageError("repair needs -o OUT (or --dry-run to only print the plan)")
    with open_checkpoint(args.file) as ck:
        plan = plan_repair(ck, header=args.header)
        if args.dry_run:
            if args.json:
                emit_json({"dry_run": True, "out": args.output, **plan.to_json()})
            else:
                rows = plan.describe()
                rows.insert(1, ("output", args.output or "(none given)"))
                _table(console(), "repair plan (dry run: nothing written)", rows)
            return 0 if plan.ok else 1
        report = run_repair(plan, args.output, force=args.force)
    if args.json:
        emit_json(report.to_json())
    else:
        _table(console(), "repaired", report.describe())
    return 0
