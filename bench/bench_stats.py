"""Benchmark of the stats engine against the naive script and the machine's limits (one table).

A synthetic pretrained/fine-tuned pair is written with torch.save: an fp16 file pair and an fp32
file pair (default 2x150 MB fp16 + 2x250 MB fp32 for a quick run; ``--full`` gives the issue's
2x600 MB fp16 + 2x1 GB fp32; ``--fp16-mb`` / ``--fp32-mb`` set any size). Measured, each as a
whole process except the floors, after one warm-up read so every row reads from the page cache:

  (a) naive: ``torch.load`` both files, then per key ``.float()``, subtract, norms, cosine, max;
  (b) engine: ``open_checkpoint`` + ``align`` + ``compute_stats(device=...)`` in a subprocess,
      best of 3 (alternating with the read floor, best of 3 too); peak RSS of that child (its own VmHWM: a child's ru_maxrss would also count the
      parent's resident size at fork) and private RSS (RssAnon: heap, not the mapped file pages);
  (c) floors: one pass that only reads the same bytes from the page cache (``readinto`` a reused
      buffer), and ``numpy.sum`` over one contiguous in-memory buffer of the same size.

Targets (CPU): engine >= 8x faster than naive as a whole process, its compute (``compute_stats``)
within 3x of the page-cache floor, peak RSS a small fraction of the naive script's. The engine's
in-process time is also split into import, open + align and compute_stats. Usage: ``python bench/bench_stats.py [--full]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import read_floor  # noqa: E402

RSS_ANON = r"""
def rss_anon(field="RssAnon:"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    return -1
"""

# the loop a user writes over two loaded state dicts (bench_diff runs it too)
NAIVE_LOOP = r"""
import torch
def naive(a, b):
    out = {}
    for k in a:
        if k not in b or not a[k].is_floating_point():
            continue
        x = a[k].float(); y = b[k].float(); d = y - x
        out[k] = (x.norm().item(), y.norm().item(), d.norm().item(), (d.norm() / x.norm()).item(),
                  torch.nn.functional.cosine_similarity(x.reshape(-1), y.reshape(-1), 0).item(),
                  d.abs().max().item())
    return out
"""

NAIVE = RSS_ANON + NAIVE_LOOP + r"""
import sys, time
t0 = time.perf_counter()
for pre_p, ft_p in zip(sys.argv[1::2], sys.argv[2::2]):
    a = torch.load(pre_p, map_location="cpu")
    b = torch.load(ft_p, map_location="cpu")
    naive(a, b)
    anon = rss_anon()
    del a, b
print(time.perf_counter() - t0, anon, rss_anon("VmHWM:"))
"""

ENGINE = RSS_ANON + r"""
import sys, time
t0 = time.perf_counter()
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.align.alignment import align
from gsvinspect.stats.engine import compute_stats
t_import = time.perf_counter() - t0
dev = sys.argv[1]
t_open = t_compute = 0.0
for pre_p, ft_p in zip(sys.argv[2::2], sys.argv[3::2]):
    t1 = time.perf_counter()
    with open_checkpoint(pre_p) as pc, open_checkpoint(ft_p) as fc:
        triples = align(pc.weights, fc.weights).triples()
        t2 = time.perf_counter()
        r = compute_stats(pc, fc, triples, device=dev)
        t_compute += time.perf_counter() - t2
        t_open += t2 - t1
        anon = rss_anon()   # while both files are still mapped
print(time.perf_counter() - t0, r.device_used, "torch" in sys.modules, anon, rss_anon("VmHWM:"),
      t_import, t_open, t_compute)
"""


def write_pair(dirpath: Path, name: str, dtype: str, mbytes: float, seed: int) -> tuple[Path, Path]:
    """A state dict of ~mbytes per file: a few big matrices plus many small tensors, like a model."""
    import torch

    torch.manual_seed(seed)
    dt = getattr(torch, dtype)
    itemsize = torch.empty(0, dtype=dt).element_size()
    total = int(mbytes * 1e6 / itemsize)
    pre, ft = {}, {}
    i = 0
    left = total
    while left > 0:
        # mostly 1024x1024 weights, each followed by two small vectors (bias / norm)
        n = min(left, 1 << 20)
        w = torch.randn(n) * 0.02
        pre[f"layers.{i}.weight"] = w.to(dt)
        ft[f"layers.{i}.weight"] = (w + 2e-4 * torch.randn(n)).to(dt)
        for s in ("bias", "norm.weight"):
            v = torch.randn(1024) * 0.02
            pre[f"layers.{i}.{s}"] = v.to(dt)
            ft[f"layers.{i}.{s}"] = (v + 2e-4 * torch.randn(1024)).to(dt)
        left -= n + 2048
        i += 1
    p, f = dirpath / f"{name}_pre.pth", dirpath / f"{name}_ft.pth"
    torch.save(pre, p)
    torch.save(ft, f)
    return p, f


def run_child(code: str, args: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of `python -c code args` as a whole process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return wall, proc.stdout.strip()


def sum_floor(nbytes: int) -> float:
    import numpy as np

    a = np.ones(nbytes // 4, dtype=np.float32)
    a.sum()   # warm the pages
    t0 = time.perf_counter()
    a.sum()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="2x600 MB fp16 + 2x1 GB fp32 (the issue's sizes)")
    ap.add_argument("--fp16-mb", type=float, default=150.0)
    ap.add_argument("--fp32-mb", type=float, default=250.0)
    ap.add_argument("--device", default="cpu", help="engine device (cpu, auto, cuda)")
    ap.add_argument("--dir", help="where to write the synthetic files (default: a temp dir)")
    args = ap.parse_args()
    if args.full:
        args.fp16_mb, args.fp32_mb = 600.0, 1000.0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        print(f"writing synthetic pairs: 2x{args.fp16_mb:.0f} MB fp16, 2x{args.fp32_mb:.0f} MB fp32 ...", flush=True)
        pairs = [write_pair(d, "f16", "float16", args.fp16_mb, 0), write_pair(d, "f32", "float32", args.fp32_mb, 1)]
        files = [p for pair in pairs for p in pair]
        total = sum(p.stat().st_size for p in files)
        read_floor(files)                       # warm the page cache
        t_sum = sum_floor(total)
        pargs = [str(p) for p in files]
        # floor and engine alternate, so a change in the machine's state hits both; best of 3 each
        t_read, t_eng, out_eng = 1e9, 1e9, ""
        for _ in range(3):
            t_read = min(t_read, read_floor(files))
            t, out = run_child(ENGINE, [args.device, *pargs])
            if t < t_eng:
                t_eng, out_eng = t, out
        t_naive, out_naive = run_child(NAIVE, pargs)
        t_inproc, dev_used, torch_loaded, anon_eng, hwm_eng, t_imp, t_open, t_comp = out_eng.split()
        t_inproc, t_imp, t_open, t_comp = map(float, (t_inproc, t_imp, t_open, t_comp))
        anon_naive, hwm_naive = out_naive.split()[1:3]
        rss_eng, rss_naive = float(hwm_eng), float(hwm_naive)   # each child's own VmHWM

    gb = total / 1e9
    rows = [
        ("(a) naive torch.load + per-key .float() loop, process", t_naive, f"{rss_naive:,.0f}", anon_naive),
        (f"(b) gsvinspect engine ({dev_used}), process", t_eng, f"{rss_eng:,.0f}", anon_eng),
        ("    of which import + open + align + compute (in-process)", t_inproc, "-", "-"),
        ("      import (numpy, gsvinspect)", t_imp, "-", "-"),
        ("      open + align", t_open, "-", "-"),
        ("      compute_stats", t_comp, "-", "-"),
        ("(c) page-cache read of the same bytes (floor)", t_read, "-", "-"),
        ("(c) numpy sum over one buffer of the same size", t_sum, "-", "-"),
    ]
    print(f"\n{gb:.2f} GB in 4 files, {os.cpu_count()} CPUs; engine imported torch: {torch_loaded}")
    print(f"{'measurement':58} {'seconds':>8} {'GB/s':>7} {'peak RSS MB':>12} {'private MB':>11}")
    for name, t, rss, anon in rows:
        print(f"{name:58} {t:8.2f} {gb / t:7.2f} {rss:>12} {anon:>11}")
    print()
    print(f"engine vs naive:      {t_naive / t_eng:5.1f}x faster   (target >= 8x)")
    print(f"engine vs read floor: {t_comp / t_read:5.1f}x for compute_stats (target <= 3x); "
          f"{t_inproc / t_read:.1f}x with import, open and align; {t_eng / t_read:.1f}x as a whole process")
    print(f"engine vs sum floor:  {t_eng / t_sum:5.1f}x slower")
    print(f"private RSS:          engine {anon_eng} MB vs naive {anon_naive} MB "
          f"({int(anon_eng) / max(1, int(anon_naive)):.1%})")
    print("peak RSS is the child's own VmHWM (the engine preads big tensors, so few file pages are "
          "mapped); 'private' is RssAnon (heap), measured at the end of each run with the data live. "
          "Engine: best of 3 runs.")


if __name__ == "__main__":
    main()
