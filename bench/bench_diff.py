"""The issue's target case, end to end: ``gsvinspect diff`` on a full-size v4 SoVITS pair.

The pair is what a user has after fine-tuning: the pretrained ``s2Gv4.pth`` (fp16, 0.77 GB) and a
training ``G_*.pth`` (fp32 weights under ``model``, 1.54 GB), both written by ``gsvinspect.synth``
at full size with the real key names. Measured as whole processes, page cache warm, best of 3:

  (a) naive: the script a user writes (``torch.load`` both, then per key ``.float()``, subtract,
      norms, cosine, max), in a child process; its peak RSS is the child's own VmHWM;
  (b) ``gsvinspect diff PRE FT --json`` (keys, findings, stats, roll-ups, embedding rows) in a
      child process; the stats engine's own time is read from the JSON;
  (c) the page-cache floor: one pass that only reads the same bytes (``readinto``).

Targets (CPU): (b) at least 8x faster than (a), its stats within 3x of (c), its private memory
a small fraction of (a)'s. Usage: ``python bench/bench_diff.py [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import PEAK_PRELUDE, gsvinspect_code, read_floor, split_peak  # noqa: E402
from bench_stats import NAIVE_LOOP  # noqa: E402

NAIVE = NAIVE_LOOP + r"""
import sys, time
t0 = time.perf_counter()
def weights(obj):
    # the dict entry holding the tensors: "weight" in the pretrained file, "model" in G_*.pth
    return max((v for v in obj.values() if isinstance(v, dict)), key=len)
a = weights(torch.load(sys.argv[1], map_location="cpu", weights_only=False))
b = weights(torch.load(sys.argv[2], map_location="cpu", weights_only=False))
print(time.perf_counter() - t0, len(naive(a, b)))
"""


def timed(code: str, *argv: str) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak RSS MiB) of ``python -c code argv...`` as a whole process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_PRELUDE + code, *argv], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    err, peak = split_peak(proc.stderr)
    if proc.returncode not in (0, 1):       # diff exits 1 when keys differ: a result, not a failure
        raise SystemExit(err)
    return wall, proc.stdout, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the synthetic pair (default: a temp dir)")
    args = ap.parse_args()
    from gsvinspect import synth

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print("writing a full-size v4 SoVITS pair (0.77 GB fp16 + 1.54 GB fp32) ...", flush=True)
        pre, ft = synth.write_pair(Path(tmp), "sovits-G", "v4", scale=1, optimizer="light")
        total = pre.stat().st_size + ft.stat().st_size
        read_floor([pre, ft])                                   # warm the page cache
        t_floor, diff = 1e9, None
        for _ in range(3):                                      # floor and diff alternate
            t_floor = min(t_floor, read_floor([pre, ft]))
            run = timed("import sys\n" + gsvinspect_code("diff", str(pre), str(ft), "--json"))
            if diff is None or run[0] < diff[0]:
                diff = run
        naive = timed(NAIVE, str(pre), str(ft))
    t_diff, out_diff, rss_diff = diff
    report = json.loads(out_diff)
    t_stats = report["stats"]["seconds"]
    t_naive, rss_naive = naive[0], naive[2]
    gb = total / 1e9
    print(f"\n{gb:.2f} GB in 2 files, {os.cpu_count()} CPUs, stats device {report['stats']['device']}")
    print(f"{'measurement':52} {'seconds':>8} {'GB/s':>7} {'peak RSS MB':>12}")
    for name, t, rss in (("(a) naive torch.load + per-key loop, process", t_naive, f"{rss_naive:,.0f}"),
                         ("(b) gsvinspect diff --json, process", t_diff, f"{rss_diff:,.0f}"),
                         ("    of which the stats engine", t_stats, "-"),
                         ("(c) page-cache read of the same bytes (floor)", t_floor, "-")):
        print(f"{name:52} {t:8.2f} {gb / t:7.2f} {rss:>12}")
    print()
    print(f"diff vs naive:        {t_naive / t_diff:5.1f}x faster   (target >= 8x)")
    print(f"stats vs read floor:  {t_stats / t_floor:5.1f}x          (target <= 3x)")
    print(f"peak RSS:             diff {rss_diff:,.0f} MB vs naive {rss_naive:,.0f} MB ({rss_diff / rss_naive:.1%})")


if __name__ == "__main__":
    main()
