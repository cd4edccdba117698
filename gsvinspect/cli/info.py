"""`gsvinspect info FILE...`: layout, version with evidence, sizes, extras, scaler state.

Never imports torch: the zip directory and a restricted unpickle are all it reads.
"""

from __future__ import annotations

from .main import COMMON


def add_parser(sub) -> None:
    p = sub.add_parser("info", parents=[COMMON], help="what a checkpoint is: layout, version, scaler state",
                       description="Describe checkpoints: layout, version (with evidence), parameters, dtypes, "
                       "extras, whether it can serve as a training base, GradScaler state.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--globals", action="store_true", help="list every global the pickle references")
    p.add_argument("--trust", action="store_true", help="load with plain torch.load (runs code from the file!)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..load.checkpoint import open_checkpoint
    from ..errors import CheckpointError
    import sys

    from ..report.output import console, emit_json, is_terminal
    from ..report.summary import info_dict, render_info, render_info_plain

    results, errors = [], []
    con = console() if not args.json and is_terminal() else None
    for f in args.files:
        try:
            ck = open_checkpoint(f, trust=args.trust)
        except CheckpointError as exc:
            if args.globals and getattr(exc, "globals", None):
                _list_refused_globals(f, exc, args.json, results)  # still listed, for inspection
            if len(args.files) == 1 and not (args.globals and getattr(exc, "globals", None)):
                raise
            errors.append(str(exc))
            print(f"gsvinspect: error: {exc}", file=sys.stderr)
            continue
        with ck:
            if args.json:
                results.append(info_dict(ck, with_globals=args.globals))
            elif con is None:
                render_info_plain(sys.stdout, ck, with_globals=args.globals)
            else:
                render_info(con, ck, with_globals=args.globals)
    if args.json:
        emit_json(results if len(args.files) > 1 else (results[0] if results else None))
    return 3 if errors else 0


def _list_refused_globals(path, exc, as_json: bool, results: list) -> None:
    """`info --globals` of an unsafe file: every global its pickle references, then the refusal."""
    from ..errors import safe_text

    if as_json:
        results.append({"path": str(path), "refused": exc.global_name, "globals": list(exc.globals)})
        return
    print(safe_text(path))
    for i, name in enumerate(exc.globals):
        print(f"{'globals' if i == 0 else '':<8} {safe_text(name)}")
    print()
