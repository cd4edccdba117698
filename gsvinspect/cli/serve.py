"""`gsvinspect serve PRE [FT]`: the inspector in a browser, through the optional textual-serve.

Binds to 127.0.0.1 by default: reach it over `ssh -L PORT:127.0.0.1:PORT host` rather than
exposing it. Each browser session starts `python -m gsvinspect open ...` with this interpreter.
"""

from __future__ import annotations

import shlex
import sys

from ..errors import UsageError


def add_parser(subparsers) -> None:
    from .main import COMMON

    p = subparsers.add_parser(
        "serve", parents=[COMMON], help="serve the inspector to a web browser (needs textual-serve)",
        description="Serve the inspector app over HTTP with textual-serve (pip install 'gsvinspect[serve]').")
    p.add_argument("files", nargs="*", metavar="FILE", help="PRE [FT]; none: the demo")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--rules", metavar="FILE", help="TOML rules file")
    p.add_argument("--trust", action="store_true", help="allow pickles with unknown callables")
    p.set_defaults(run=run)


def app_command(args) -> str:
    """The shell command each browser session runs (`exec`: the shell becomes the app, so the
    server's process is the app itself and nothing is left behind when it ends)."""
    argv = [sys.executable, "-m", "gsvinspect"]
    if args.files:
        argv += ["open", *args.files]
    else:
        argv += ["demo"]
    if args.rules:
        argv += ["--rules", args.rules]
    if args.trust:
        argv += ["--trust"]
    return "exec " + " ".join(shlex.quote(a) for a in argv)


def run(args) -> int:
    if len(args.files) > 2:
        raise UsageError(f"serve takes at most two files, got {len(args.files)}")
    try:
        from textual_serve.server import Server
    except ImportError:
        raise UsageError("`gsvinspect serve` needs the optional package textual-serve: "
                         "pip install 'gsvinspect[serve]' (or pip install textual-serve)") from None
    command = app_command(args)
    print(f"serving on http://{args.host}:{args.port}/  (Ctrl+C to stop)", file=sys.stderr)
    Server(command, host=args.host, port=args.port, title="gsvinspect").serve()
    return 0
