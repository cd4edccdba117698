"""`python -m gsvinspect` is the same as the `gsvinspect` command."""

from .cli.main import main

raise SystemExit(main())
