"""The project's own error types: every failure a user can cause ends in one of these.

The CLI turns them into one line naming the file and the problem (exit 3 for files, 2 for usage);
anything else escaping is a bug.
"""

from __future__ import annotations

from pathlib import Path


class GsvError(Exception):
    """Base class: a problem the user can act on, with a one-line message."""

    exit_code = 3


class _FileError(GsvError):
    """A problem with one file: the message is `PATH: problem` (just the problem without a path)."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class CheckpointError(_FileError):
    """A checkpoint could not be read, or its contents are inconsistent."""


class RefusedGlobalError(CheckpointError):
    """The pickle references a callable that could run code; we refuse to open it."""

    def __init__(self, path: str | Path | None, global_name: str, why: str = "could run code"):
        self.global_name = global_name
        super().__init__(
            path,
            f"refused: pickle references {global_name} ({why}); nothing was executed "
            f"(use --trust only if you trust this file's author)",
        )


class RulesError(GsvError):
    """A rules file is invalid; `line` is 1-based (None when unknown)."""

    exit_code = 2

    def __init__(self, problem: str, line: int | None = None, source: str | None = None):
        self.problem = problem
        self.line = line
        self.source = source
        where = source or "rules"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")


class ExportError(_FileError):
    """An export was refused or failed; OUT is absent or untouched."""


class UsageError(GsvError):
    exit_code = 2
