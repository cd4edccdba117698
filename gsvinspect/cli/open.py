"""`gsvinspect open PRE [FT]` (also plain `gsvinspect PRE FT`): the side-by-side inspector app.

Textual is imported only here, inside run(), so every other command stays free of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import UsageError


def add_parser(subparsers) -> None:
    from .main import COMMON

    p = subparsers.add_parser(
        "open", parents=[COMMON], help="open the inspector app (one file, or PRE and FT side by side)",
        description="Open the inspector: PRE alone to browse one checkpoint, PRE FT to compare a "
                    "pretrained and a fine-tuned checkpoint key by key.")
    p.add_argument("files", nargs="+", metavar="FILE", help="PRE [FT]")
    add_app_options(p)
    p.set_defaults(run=run)


def add_app_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `open` and `demo`."""
    p.add_argument("--rules", metavar="FILE", help="TOML rules file (editable in the app)")
    p.add_argument("--device", default="auto",
                   help="statistics device: auto (default: CUDA only when it wins), cpu (numpy), cuda")
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse (keeps native selection)")
    p.add_argument("--trust", action="store_true",
                   help="allow pickles that reference unknown callables (only for files you trust)")
    p.add_argument("--no-stats", action="store_true", help="do not compute statistics")


def can_run_app() -> bool:
    """A terminal on both ends, or a non-terminal Textual driver (textual-serve sets TEXTUAL_DRIVER
    to its web driver and talks to the app over pipes)."""
    return bool(os.environ.get("TEXTUAL_DRIVER")) or (sys.stdin.isatty() and sys.stdout.isatty())


def require_terminal(what: str) -> None:
    if not can_run_app():
        raise UsageError(f"{what} needs an interactive terminal (stdin and stdout); "
                         f"use `gsvinspect diff` / `gsvinspect info` in scripts, or run over `ssh -t`")


def run(args) -> int:
    files = [Path(f) for f in args.files]
    if len(files) > 2:
        raise UsageError(f"open takes one or two files, got {len(files)}")
    require_terminal("the inspector")
    from gsvinspect_tui import run_app

    return run_app(files[0], files[1] if len(files) > 1 else None, rules=args.rules, device=args.device,
                   trust=args.trust, mouse=not args.no_mouse, stats=not args.no_stats)
