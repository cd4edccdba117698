"""`gsvinspect scan PATH... [--drift]`: every checkpoint of a training run in one table.

Exit codes: 0 every file read (and, with --drift, every checkpoint healthy); 1 some file has a
problem (unreadable, refused, NaN/Inf, fp16 overflow, a jump); 2 usage; 3 nothing could be read.
"""

from __future__ import annotations

import sys

from .main import COMMON


def add_parser(sub) -> None:
    p = sub.add_parser(
        "scan", parents=[COMMON], help="triage a whole training run (tables, relations, drift)",
        description="Walk files and folders for GPT-SoVITS checkpoints and print one table grouped by "
                    "experiment and stage: layout, version, epoch/step, dtypes, scaler state, whether each "
                    "can serve as a training base, its base and which exports are copies of which "
                    "checkpoint. --drift adds every checkpoint's change from its base and from the previous "
                    "one, per module and phoneme language, with NaN/Inf and jumps. Exit 0: all read and "
                    "healthy; 1: some file has a problem; 2: usage; 3: nothing could be read.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files and folders (walked at any depth)")
    p.add_argument("--drift", action="store_true",
                   help="read the tensors: change from the base and from the previous checkpoint, health")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output (schema gsvinspect.scan/1)")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown report")
    fmt.add_argument("--csv", action="store_true",
                     help="CSV: one row per file, or with --drift one row per checkpoint and module/language")
    p.add_argument("--trust", action="store_true", help="load with plain torch.load (runs code from the files!)")
    p.add_argument("--no-cache", action="store_true",
                   help="read every file again and keep nothing (by default files unchanged since an earlier "
                        "scan are not reopened; also GSVINSPECT_NO_CACHE=1)")
    p.set_defaults(run=run)


def exit_code(result, drift) -> int:
    readable = [e for e in result.entries if e.ok]
    if not readable:
        return 3
    if result.problems or result.missing:
        return 1
    if drift and not all(g.healthy for g in drift):
        return 1
    return 0


def run(args) -> int:
    from ..errors import CheckpointError
    from ..report import scan as rep
    from ..report.output import PlainOut, console, emit_json, is_terminal
    from ..triage.scan import scan

    import time

    t0 = time.perf_counter()
    result = scan(args.paths, trust=args.trust, keep_open=args.drift, cache=not args.no_cache)
    timing = {"scan_s": time.perf_counter() - t0, "drift_s": None}
    try:
        for p in result.missing:
            print(f"gsvinspect: error: {p}: no such file or folder", file=sys.stderr)
        if not result.entries:
            if not result.missing:
                raise CheckpointError(" ".join(args.paths), "no checkpoint files found")
            return 3
        drift = None
        if args.drift:
            from ..triage.drift import compute_drift

            t1 = time.perf_counter()
            drift = compute_drift(result, progress=_progress_printer())
            timing["drift_s"] = time.perf_counter() - t1
        root = rep.common_root([e.path for e in result.entries])
        if args.json:
            emit_json(rep.scan_dict(result, drift, root, timing))
        elif args.markdown:
            sys.stdout.write(rep.scan_markdown(result, drift, root))
        elif args.csv:
            (rep.drift_csv(drift, sys.stdout) if drift is not None else rep.files_csv(result, sys.stdout))
        else:
            con = console() if drift is not None or is_terminal() else PlainOut()
            rep.print_scan(con, result, root)
            if drift is not None:
                rep.print_drift(con, drift, root)
        return exit_code(result, drift)
    finally:
        result.close()


def _progress_printer():
    """A one-line progress on stderr when it is a terminal (nothing in pipes and logs)."""
    if not sys.stderr.isatty():
        return None
    import time

    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.1 and done < total:
            return
        last[0] = now
        frac = done / total if total else 1.0
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\rdrift: {frac * 100:5.1f}% of {total / 2**20:.0f} MiB{end}")
        sys.stderr.flush()
    return show
