"""Benchmark: `gsvinspect info` vs torch.load scripts, as whole processes (issue #2 point 9).

Writes a ~600 MB pretrained-style SoVITS v3 G (fp16, real key names) and a ~3 GB Lightning-style
checkpoint (fp32 state dict + fp32 optimizer moments), then times, best of 3, each as a fresh
process: `gsvinspect info FILE`, a script doing `torch.load(map_location="cpu")`, and one doing
`torch.load(mmap=True)`. Prints wall time, peak RSS and ratios. Targets: info < 150 ms and < 60 MB
RSS whatever the size; >= 20x faster than the full torch.load script.

    python bench/bench_open.py [--dir DIR] [--small]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import gsvinspect_code, measure_code  # noqa: E402


def _manifest(name):
    with resources.files("gsvinspect.data.manifests").joinpath(name).open() as f:
        return json.load(f)["keys"]


def write_files(d: Path, small: bool) -> tuple[Path, Path]:
    import torch

    keys = _manifest("sovits_G_v3.json")
    div = 8 if small else 1
    pre = d / "s2Gv3.pth"
    if not pre.exists():
        sd = collections.OrderedDict(
            (e["key"], torch.ones([max(1, s // div) if i == 0 else s for i, s in enumerate(e["shape"])],
                                  dtype=torch.float16)) for e in keys)
        torch.save({"weight": sd, "config": {"model": {"version": "v3"}}, "info": "pretrained_s2G_v3"}, pre)
    big = d / "epoch=14-step=45.ckpt"
    if not big.exists():
        sd = collections.OrderedDict(
            (e["key"], torch.ones([max(1, s // div) if i == 0 else s for i, s in enumerate(e["shape"])]))
            for e in keys)
        state = {i: {"exp_avg": torch.zeros_like(v)} for i, v in enumerate(sd.values())}
        torch.save({"epoch": 14, "global_step": 45, "state_dict": sd, "loops": {},
                    "optimizer_states": [{"state": state, "param_groups": [{"params": list(state)}]}],
                    "MixedPrecision": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                       "growth_interval": 2000, "_growth_tracker": 0}}, big)
    return pre, big


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="where to write the files (default: a temp dir, removed)")
    ap.add_argument("--small", action="store_true", help="8x smaller files (quick check)")
    ap.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write_only:
        write_files(a.dir, a.small)
        return
    tmp = None
    if a.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gsv-bench-")
        a.dir = Path(tmp.name)
    a.dir.mkdir(parents=True, exist_ok=True)
    # Write in a child process: this parent must stay small, because a forked child starts
    # its peak-RSS count from the parent's resident size.
    import subprocess

    subprocess.run([sys.executable, __file__, "--write-only", "--dir", str(a.dir)] + (["--small"] if a.small else []),
                   check=True)
    files = (a.dir / "s2Gv3.pth", a.dir / "epoch=14-step=45.ckpt")
    rows = []
    for f in files:
        size = f.stat().st_size
        ours = measure_code(gsvinspect_code("info", str(f)), repeat=5)
        full = measure_code(f"import torch; torch.load({str(f)!r}, map_location='cpu', weights_only=False)", repeat=2)
        mm = measure_code(f"import torch; torch.load({str(f)!r}, mmap=True, weights_only=False)", repeat=2)
        rows.append((f.name, size, ours, full, mm))
    print(f"\nmachine: {os.cpu_count()} cores; times are best-of-N wall seconds of whole processes\n")
    hdr = f"{'file':<24}{'size':>9} | {'gsvinspect info':>18} | {'torch.load':>18} | {'torch.load mmap':>18} | {'x vs load':>9} | {'x vs mmap':>9}"
    print(hdr)
    print("-" * len(hdr))
    for name, size, ours, full, mm in rows:
        cell = lambda m: f"{m[0]*1000:7.0f} ms {m[1]:5.0f} MB"  # noqa: E731
        print(f"{name:<24}{size/1e9:>7.2f}GB | {cell(ours):>18} | {cell(full):>18} | {cell(mm):>18} | "
              f"{full[0]/ours[0]:>8.1f}x | {mm[0]/ours[0]:>8.1f}x")
    ok = all(o[0] < 0.150 and o[1] < 60 and f[0] / o[0] >= 20 for _, _, o, f, _ in rows)
    print(f"\ntargets (info < 150 ms, < 60 MB RSS, >= 20x vs torch.load): {'met' if ok else 'NOT met'}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
