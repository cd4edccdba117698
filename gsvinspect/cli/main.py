"""Command-line entry point: argparse dispatch to one module per subcommand.

Each module in ``gsvinspect.commands`` exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Errors the user can cause (``GsvError``) print one line and exit with their code; ``--debug``
shows the traceback instead. Nothing here imports torch or Textual.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..errors import GsvError

# Order is the order shown in --help.
COMMAND_MODULES = ("info", "ls", "diff", "check", "rules", "export", "open", "demo", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gsvinspect",
        description="Inspect, remap and export GPT-SoVITS checkpoints. "
        "`gsvinspect PRE FT` opens the side-by-side inspector.",
    )
    parser.add_argument("--version", action="version", version=f"gsvinspect {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"gsvinspect.cli.{name}").add_parser(sub)
    return parser


def _common_parent() -> argparse.ArgumentParser:
    """Options every subcommand accepts (so `gsvinspect info --debug F` works too)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return p


COMMON = _common_parent()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices)
    # `gsvinspect PRE FT` / `gsvinspect FILE` is shorthand for `gsvinspect open ...`
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in known:
        argv.insert(argv.index(first), "open")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False) or bool(os.environ.get("GSVINSPECT_DEBUG"))
    try:
        return int(args.run(args) or 0)
    except GsvError as exc:
        if debug:
            raise
        print(f"gsvinspect: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gsvinspect: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `gsvinspect ls big.pth | head`: not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except MemoryError:
        print("gsvinspect: error: out of memory", file=sys.stderr)
        return 3
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"gsvinspect: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 4


if __name__ == "__main__":
    raise SystemExit(main())
