"""Where command output goes: rich tables on a terminal, plain text when piped, JSON for scripts.

Rich is imported lazily so `--json` paths stay lean; piped output never carries ANSI codes.

Terminal safety (issue 12): text taken from a file (keys, globals, config strings, record names)
can hold escape sequences. Every way out escapes them with `safe_text` (``\\x1b``): the rich
console escapes the text of every segment it renders (its own styling codes are added after),
`SafeStream` escapes what plain renderers write to stdout (``\\n`` and ``\\t`` kept), and JSON
escapes controls as JSON does, C1 controls and bidirectional overrides included (``\\u009b``).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from ..errors import safe_text

__all__ = ["safe_text", "console", "PlainOut", "cell_len", "emit_json", "json_text", "install_safe_stdout", "SafeStream", "to_jsonable",
           "bounded_repr", "human_bytes", "human_count", "is_terminal"]


def is_terminal() -> bool:
    return sys.stdout.isatty()


class SafeStream:
    """A text stream that writes `safe_text` of everything, newlines and tabs kept."""

    def __init__(self, raw):
        self.raw = raw

    def write(self, text: str) -> int:
        if "\n" in text or "\t" in text:
            self.raw.write("\n".join("\t".join(safe_text(p) for p in line.split("\t")) for line in text.split("\n")))
        else:
            self.raw.write(safe_text(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):  # flush, isatty, fileno, encoding, buffer...
        return getattr(self.raw, name)


def install_safe_stdout():
    """Route sys.stdout through `SafeStream`; returns a function that puts the old stream back."""
    old = sys.stdout
    if isinstance(old, SafeStream) or old is None:
        return lambda: None
    sys.stdout = SafeStream(old)

    def restore() -> None:
        if isinstance(sys.stdout, SafeStream) and sys.stdout.raw is old:
            sys.stdout = old

    return restore


class PlainOut:
    """What the plain renderers (``report.scan.print_scan``) need of a console when stdout is not a
    terminal, without importing rich (~30 ms of a 0.1 s rescan): a file, no terminal (piped
    output has every column, so no width)."""

    is_terminal = False

    def __init__(self, file=None):
        self.file = file if file is not None else sys.stdout


def cell_len(text: str) -> int:
    """Terminal cells `text` takes: East Asian wide/fullwidth characters 2, combining marks 0."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _raw_stdout():
    out = sys.stdout
    return out.raw if isinstance(out, SafeStream) else out


def console():
    """A rich Console: colours on a terminal, plain and wide enough not to wrap keys when piped.

    A closed pipe (`gsvinspect ls F | head`) raises BrokenPipeError, which the CLI turns into exit 0;
    rich's own handler would exit 1. It escapes control characters in all text it renders (see the
    module docstring).
    """
    from rich.console import Console
    from rich.segment import Segment

    class SafeConsole(Console):
        def render(self, renderable, options=None):
            for seg in super().render(renderable, options):
                if seg.control or not _UNSAFE.search(seg.text):
                    yield seg
                else:
                    yield Segment(safe_text(seg.text), seg.style)

        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    if is_terminal():
        return SafeConsole(file=_raw_stdout())
    return SafeConsole(file=_raw_stdout(), force_terminal=False, no_color=True, width=200, soft_wrap=False,
                       highlight=False)


_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def json_text(data: Any) -> str:
    """JSON with every control character escaped (json escapes only C0 by itself)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def bounded_repr(v: Any, limit: int = 120) -> str:
    """repr of a value from a file, bounded whatever its size (a shared 8 MiB bytes object...)."""
    from ..load.allowlist import short_repr

    if isinstance(v, (bytes, bytearray)) and len(v) > 48:
        return f"{type(v).__name__} of {len(v)} bytes: {bytes(v[:32])!r}..."
    return short_repr(v, limit)


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
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("latin1") if len(obj) <= 256 else f"<{len(obj)} bytes: {bytes(obj[:32]).decode('latin1')}...>"
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def emit_json(data: Any) -> None:
    out = _raw_stdout()
    out.write(json_text(data))
    out.write("\n")


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
