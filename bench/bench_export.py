"""Benchmark `gsvinspect export` on a ~1 GB pair: wall time vs a plain torch.save, and memory.

Usage:  python bench/bench_export.py [--dir DIR] [--kind gpt|sovits-G] [--version v2] [--keep]

The pair is written once with gsvinspect.synth at full size (default: v2 GPT pretrained fp16 +
Lightning fine-tune fp32 with full ScaledAdam state, ~1.2 GB together). Each measurement runs in a
fresh subprocess so peaks do not mix:

* export    - plan_export + run_export (compute, write, fsync, reopen + bit-for-bit verify, sha256)
* torch.save - the same output dict, already in memory, written with torch.save + fsync

Memory: VmHWM is the kernel's peak RSS, which also counts pages of the *mapped inputs* that were
read; RssAnon (sampled every 5 ms) is the private memory the process allocated, the number the
target "no more than about one copy of the output beyond the mapped inputs" is about.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


class _AnonPeak:
    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _status().get("RssAnon", 0))
            time.sleep(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _status().get("RssAnon", 0))


def child_export(pre: str, ft: str, out: str) -> dict:
    from gsvinspect.load.checkpoint import open_checkpoint
    from gsvinspect.export.plan import plan_export
    from gsvinspect.export.writer import run_export

    import torch  # noqa: F401  (import cost outside the timing)

    base = _status()
    phases: dict[str, float] = {}
    t0 = time.perf_counter()

    def progress(phase, done, total):
        phases.setdefault(phase, time.perf_counter() - t0)

    with _AnonPeak() as anon:
        with open_checkpoint(pre) as p, open_checkpoint(ft) as f:
            plan = plan_export(p, f)
            t_plan = time.perf_counter() - t0
            rep = run_export(plan, out, force=True, progress=progress)
    total = time.perf_counter() - t0
    st = _status()
    return {"seconds": total, "plan_s": t_plan, "phases": phases, "size": rep.size,
            "peak_rss": st["VmHWM"], "peak_anon": anon.peak, "base_anon": base.get("RssAnon", 0),
            "verdict": rep.verdict.summary()}


def child_save(src: str, out: str) -> dict:
    import torch

    obj = torch.load(src, map_location="cpu", weights_only=True)  # the same dict, in memory
    base = _status()
    with _AnonPeak() as anon:
        t0 = time.perf_counter()
        with open(out, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        total = time.perf_counter() - t0
    return {"seconds": total, "size": os.path.getsize(out), "peak_rss": _status()["VmHWM"],
            "peak_anon": anon.peak, "base_anon": base.get("RssAnon", 0)}


def _run_child(*args) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/gsvinspect-bench-export")
    ap.add_argument("--kind", default="gpt", choices=["gpt", "sovits-G"])
    ap.add_argument("--version", default="v2")
    ap.add_argument("--keep", action="store_true", help="keep the output files")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        what, *rest = a.child
        res = child_export(*rest) if what == "export" else child_save(*rest)
        print(json.dumps(res))
        return

    from gsvinspect import synth

    root = Path(a.dir) / f"{a.kind}-{a.version}"
    marker = root / "pair.json"
    if marker.exists():
        pre, ft = (Path(p) for p in json.loads(marker.read_text()))
    else:
        t = time.perf_counter()
        pre, ft = synth.write_pair(root, a.kind, a.version, scale=1, optimizer="full")
        marker.write_text(json.dumps([str(pre), str(ft)]))
        print(f"wrote the pair in {time.perf_counter() - t:.1f} s")
    pair_bytes = pre.stat().st_size + ft.stat().st_size
    out1, out2 = root / "out_export.pth", root / "out_torch_save.pth"

    ex = _run_child("export", str(pre), str(ft), str(out1))
    sv = _run_child("save", str(out1), str(out2))
    out_size = ex["size"]
    rows = [
        ("pair (pre + ft)", f"{_mb(pre.stat().st_size)} + {_mb(ft.stat().st_size)} = {_mb(pair_bytes)}"),
        ("output", _mb(out_size)),
        ("export wall time", f"{ex['seconds']:.2f} s (plan {ex['plan_s']:.2f} s; phase starts "
                             + ", ".join(f"{k} {v:.2f}" for k, v in ex["phases"].items()) + ")"),
        ("torch.save of the same dict", f"{sv['seconds']:.2f} s"),
        ("ratio", f"{ex['seconds'] / max(sv['seconds'], 1e-9):.2f}x (export also verifies + hashes)"),
        ("export peak RSS (incl. mapped input pages)", _mb(ex["peak_rss"])),
        ("export peak private memory", f"{_mb(ex['peak_anon'])} ({_mb(ex['peak_anon'] - ex['base_anon'])} above "
                                       f"start = {(ex['peak_anon'] - ex['base_anon']) / out_size:.2f}x output)"),
        ("torch.save peak private memory", f"{_mb(sv['peak_anon'])} (dict already loaded)"),
        ("verdict", ex["verdict"]),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"\n{'gsvinspect export benchmark':^{w + 40}}")
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    if not a.keep:
        for p in (out1, out2):
            p.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
