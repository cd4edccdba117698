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
from ..errors import CheckpointError, GsvError, UsageError

# Order is the order shown in --help.
COMMAND_MODULES = ("info", "ls", "diff", "check", "scan", "rules", "export", "repair", "open", "demo", "serve")


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


CHECKPOINT_SUFFIXES = (".pth", ".ckpt", ".safetensors", ".pt", ".bin")


def check_first_word(word: str, commands) -> None:
    """A first word that is neither a command nor an existing path is a typo (exit 2), unless it
    plainly names a file (a path separator or a checkpoint suffix): that is a missing file (exit 3)."""
    if os.path.lexists(word):
        return
    if os.sep in word or "/" in word or word.lower().endswith(CHECKPOINT_SUFFIXES):
        raise CheckpointError(word, "no such file")
    import difflib

    close = difflib.get_close_matches(word, sorted(commands), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (commands: {', '.join(COMMAND_MODULES)})"
    raise UsageError(f"unknown command {word!r}{hint}")


def precheck_app_paths(paths, *, trust: bool = False) -> None:
    """Before the app starts: every FILE must open (metadata only, nothing executed), so a missing,
    unreadable or refused file is one line and exit 3 instead of an app showing an error."""
    from ..load.checkpoint import preopen

    for p in paths:
        if os.path.isdir(p) and len(paths) == 1:
            continue   # a run folder: the app scans it
        preopen(p, trust=trust)   # kept for the app: opened (and with --trust, run) once


def main(argv: list[str] | None = None) -> int:
    from ..report.output import install_safe_stdout

    restore = install_safe_stdout()  # text from files can hold escape sequences (issue 12)
    try:
        return _main(argv)
    finally:
        restore()


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices)
    debug = "--debug" in argv or bool(os.environ.get("GSVINSPECT_DEBUG"))
    try:
        # `gsvinspect PRE FT` / `gsvinspect FILE` / `gsvinspect DIR` is shorthand for `gsvinspect open ...`
        first = next((a for a in argv if not a.startswith("-")), None)
        if first is not None and first not in known:
            check_first_word(first, known)
            argv.insert(argv.index(first), "open")
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 2
        debug = debug or getattr(args, "debug", False)
        if args.command == "open":
            precheck_app_paths(args.files, trust=args.trust)
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
        # `gsvinspect ls big.pth | head`: not an error; what is still buffered goes nowhere
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except MemoryError:
        print("gsvinspect: error: out of memory", file=sys.stderr)
        return 3
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        from ..errors import safe_text

        print(f"gsvinspect: internal error: {type(exc).__name__}: {safe_text(exc)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 4


if __name__ == "__main__":
    raise SystemExit(main())
