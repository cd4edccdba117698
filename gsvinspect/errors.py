"""The project's own error types: every failure a user can cause ends in one of these.

The CLI turns them into one line naming the file and the problem (exit 3 for files, 2 for usage);
anything else escaping is a bug.
"""

from __future__ import annotations

import re
from pathlib import Path

# C0 and C1 controls, DEL, line/paragraph separators and the bidirectional overrides
# (a file name or key can reorder or hide what follows it on a terminal)
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe_text(text: object) -> str:
    """`text` with every control character escaped (``\\x1b``, ``\\u202e``): safe to show on a terminal.

    Text from a file (keys, globals, config strings, record names) can hold escape sequences
    that retitle, recolour or rewrite a terminal; everything gsvinspect prints or shows in the app
    goes through here. JSON output is escaped by the JSON writer instead.
    """
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE_CHARS.sub(_escape, s) if _UNSAFE_CHARS.search(s) else s


class GsvError(Exception):
    """Base class: a problem the user can act on, with a one-line message."""

    exit_code = 3


class _FileError(GsvError):
    """A problem with one file: the message is `PATH: problem` (just the problem without a path)."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else safe_text(path)
        self.problem = safe_text(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)


class CheckpointError(_FileError):
    """A checkpoint could not be read, or its contents are inconsistent."""


class RefusedGlobalError(CheckpointError):
    """The file is unsafe: its pickle references a global off the allow-list, or uses an allowed one
    in a way nothing honest does. `globals` lists every global the pickle references (when known)."""

    def __init__(self, path: str | Path | None, global_name: str, why: str = "not on the allow-list of safe globals"):
        self.global_name = global_name
        self.globals: list[str] = []
        super().__init__(
            path,
            f"unsafe, refused: pickle references {global_name} ({why}); nothing was executed "
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
