"""`gsvinspect check FILE [--as NAME]`: what GPT-SoVITS's loader would find loading this file.

Compares the file's keys and shapes with the full-size manifest of a network (picked from the
detected layout and version unless --as names one): missing, unexpected, shape-mismatched keys,
and what each means for the loader that reads such a file. Exit 0 clean, 1 differences.
"""

from __future__ import annotations

import sys

from .main import COMMON


def add_parser(sub) -> None:
    p = sub.add_parser("check", parents=[COMMON], help="check one file against the keys GPT-SoVITS expects",
                       description="Report exactly what GPT-SoVITS's loader would find missing, unexpected or "
                       "shape-mismatched in FILE, for the network named by --as (default: the detected one). "
                       "Exit 0: loads cleanly; 1: differences; 2: usage; 3: unreadable file.")
    p.add_argument("file", metavar="FILE", nargs="?")
    p.add_argument("--as", dest="as_name", metavar="NAME",
                   help="expected key set, e.g. sovits-G-v2, gpt-v1, sovits-G-v4-lora (see --list)")
    p.add_argument("--list", action="store_true", help="list the names --as accepts")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output (schema: gsvinspect.check/1)")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown report")
    p.add_argument("--top", type=int, metavar="N", default=25,
                   help="list at most N keys per section (default 25; 0 lists all)")
    p.add_argument("--trust", action="store_true", help="load with plain torch.load (runs code from the file!)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..load.checkpoint import open_checkpoint
    from ..report.diff import FileSide, check_to_json, render_check_markdown, render_check_text
    from ..errors import UsageError
    from ..align.check import check_against
    from ..load.manifest import describe_name, manifest_names, resolve_name
    from ..report.output import console, emit_json

    if args.list:
        for name in manifest_names():
            print(f"{name:28} {describe_name(name)}")
        return 0
    if not args.file:
        raise UsageError("check needs a FILE (or --list)")
    if args.as_name:
        resolve_name(args.as_name)  # a typo is a usage error before the file is read
    with open_checkpoint(args.file, trust=args.trust) as ck:
        result = check_against(ck, args.as_name)
        side = FileSide.of(ck, args.file)
    if args.json:
        emit_json(check_to_json(result, side))
    elif args.markdown:
        sys.stdout.write(render_check_markdown(result, side))
    else:
        render_check_text(result, console(), side, top=args.top or None)
    return 0 if result.ok else 1
