"""The command line: argument parsing (``main``) and one module per subcommand.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. May import every
library stage; imports the Textual app (``gsvinspect_tui``) only inside ``open``/``demo``/``serve``.
"""

from .main import main

__all__ = ["main"]
