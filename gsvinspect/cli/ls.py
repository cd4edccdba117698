"""`gsvinspect ls FILE [--filter RE]`: the state dict's keys with shapes and dtypes."""

from __future__ import annotations

import re

from .main import COMMON


def add_parser(sub) -> None:
    p = sub.add_parser("ls", parents=[COMMON], help="list keys, shapes and dtypes",
                       description="List the tensors of a checkpoint's state dict in file order.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--filter", "-f", metavar="RE", help="only keys matching this regular expression")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="also list tensors outside the state dict (optimizer...)")
    p.add_argument("--trust", action="store_true", help="load with plain torch.load (runs code from the file!)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..load.checkpoint import open_checkpoint
    from ..errors import UsageError
    from ..meta import DTYPE_SHORT, fmt_shape
    from ..report.output import console, emit_json, human_count, is_terminal

    try:
        rx = re.compile(args.filter) if args.filter else None
    except re.error as exc:
        raise UsageError(f"--filter: invalid regular expression: {exc}") from None
    with open_checkpoint(args.file, trust=args.trust) as ck:
        rows = list(ck.weights.values()) + (_other_tensors(ck) if args.all else [])
        if rx is not None:
            rows = [t for t in rows if rx.search(t.key)]
        if args.json:
            emit_json({"path": str(ck.path), "weights_path": list(ck.weights_path),
                       "keys": [{"key": t.key, "shape": list(t.shape), "dtype": t.dtype, "numel": t.numel,
                                 "bytes": t.nbytes} for t in rows]})
            return 0
        cells = [(t.key, fmt_shape(t.shape), DTYPE_SHORT.get(t.dtype, t.dtype),
                  human_count(t.numel)) for t in rows]
        footer = f"{len(rows)} of {len(ck.weights)} tensors"
        if not is_terminal() or len(rows) > PLAIN_ABOVE:
            _write_plain(cells, footer)  # rich lays out 100,000 rows in minutes; this in a second
            return 0
        con = console()
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("key", no_wrap=True, overflow="ignore")
        table.add_column("shape", no_wrap=True)
        table.add_column("dtype", no_wrap=True)
        table.add_column("numel", justify="right", no_wrap=True)
        for key, shape, dtype, numel in cells:
            table.add_row(Text(key), shape, dtype, numel)  # Text: a key is never parsed as markup
        con.print(table)
        con.print(footer, style="dim")
    return 0


PLAIN_ABOVE = 5000  # rows: above this even a terminal gets the plain table


def _write_plain(cells, footer: str) -> None:
    """The same table as plain aligned text (stdout escapes control characters itself)."""
    import sys

    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(("key", "shape", "dtype", "numel"))]
    widths[0] = min(widths[0], 120)
    kw, sw, dw, nw = widths
    out = sys.stdout
    out.write(f"{'key':<{kw}}  {'shape':<{sw}}  {'dtype':<{dw}}  {'numel':>{nw}}\n")
    out.writelines(f"{k:<{kw}}  {s:<{sw}}  {d:<{dw}}  {n:>{nw}}\n" for k, s, d, n in cells)
    out.write(footer + "\n")


def _other_tensors(ck):
    from ..load.safe_unpickle import TensorRef

    out = []

    def walk(o, prefix, depth):
        if depth > 12:
            return
        if isinstance(o, TensorRef):
            out.append(o.info(prefix))
        elif isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k), depth + 1)
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, f"{prefix}/{i}", depth + 1)

    for k, v in ck.extras.items():
        walk(v, str(k), 0)
    return out
