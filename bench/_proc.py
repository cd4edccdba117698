"""Run Python code as a whole fresh process; measure its wall time and its own peak RSS.

Peak RSS is read from the child's /proc/self/status VmHWM at exit: a child's ru_maxrss would
also count the parent's resident size at fork time.
"""

from __future__ import annotations

import subprocess
import sys
import time

# Code defining _peak_rss_kb() for a child to call (the fuzz worker after each case, the tests'
# child at its end). Also used by tests/hostile_corpus.py and fuzz/fuzz_loader.py.
PEAK_RSS_SNIPPET = r"""
def _peak_rss_kb():
    # VmHWM is this process's own high-water mark; ru_maxrss of a child on Linux also
    # carries the RSS of the (possibly torch-sized) parent it was forked from
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

# makes a `python -c` child report its own peak on stderr at exit (split_peak reads it back)
PEAK_PRELUDE = PEAK_RSS_SNIPPET + (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nGSV_PEAK_KB=%d\\n' % _peak_rss_kb()))\n"
)


def measure_code(code: str, *, repeat: int = 3, ok_codes=(0, 1)) -> tuple[float, float]:
    """Best-of-`repeat` wall seconds of `python -c code`, and that run's peak RSS in MiB."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", PEAK_PRELUDE + code], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        if p.returncode not in ok_codes:
            raise RuntimeError(f"{code!r} failed ({p.returncode}): {p.stderr[-400:]}")
        if wall < best[0]:
            best = (wall, split_peak(p.stderr)[1])
    return best


def split_peak(stderr: str) -> tuple[str, float]:
    """(the child's own stderr, its peak RSS in MiB: nan when it did not report one)."""
    head, marker, peak = stderr.rstrip().rpartition("GSV_PEAK_KB=")
    if not marker:
        return stderr.strip(), float("nan")
    return head.strip(), int(peak) / 1024


def gsvinspect_code(*argv: str) -> str:
    """Code that runs the gsvinspect CLI exactly like the console script does."""
    return f"from gsvinspect.cli.main import main; sys.exit(main({list(argv)!r}))"


def read_floor(paths) -> float:
    """Seconds of one pass that only reads the files' bytes (page cache warm: the machine's floor)."""
    buf = bytearray(8 << 20)
    mv = memoryview(buf)
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while fh.readinto(mv):
                pass
    return time.perf_counter() - t0
