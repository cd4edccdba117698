"""`python -m gsvinspect` is the same as the `gsvinspect` command."""

from .cli import main

raise SystemExit(main())
