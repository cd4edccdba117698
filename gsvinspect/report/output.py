"""Where command output goes: rich tables on a terminal, plain text when piped, JSON for scripts.

Rich is imported lazily so `--json` paths stay lean; piped output never carries ANSI codes.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def is_terminal() -> bool:
    return sys.stdout.isatty()


def console():
    """A rich Console: colours on a terminal, plain and wide enough not to wrap keys when piped.

    A closed pipe (`gsvinspect ls F | head`) raises BrokenPipeError, which the CLI turns into exit 0;
    rich's own handler would exit 1.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    if is_terminal():
        return _Console()
    return _Console(force_terminal=False, no_color=True, width=200, soft_wrap=False, highlight=False)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON view of checkpoint metadata (placeholders and tensor refs become descriptions)."""
    from ..load.safe_unpickle import Opaque, TensorRef

    if isinstance(obj, TensorRef):
        return {"tensor": {"shape": list(obj.shape), "dtype": obj.dtype}}
    if isinstance(obj, Opaque):
        return {"object": obj.fullname, "state": to_jsonable(obj.as_plain())}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("latin1")
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    sys.stdout.write("\n")


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def human_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)
