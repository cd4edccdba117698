#!/usr/bin/env python
"""Peak memory of `info`, `ls` and `diff` versus file size: tensors are mapped, never loaded.

Writes realistic pairs with gsvinspect.synth (a pretrained fp16 SoVITS G and a fp32 G_*.pth
training checkpoint of the same version), runs each command in its own process and reports:

* peak RSS: the child's own VmHWM (its ru_maxrss would include the parent's RSS at fork time),
* peak anonymous memory, sampled from /proc every 5 ms (what the process really allocated;
  file-backed pages of a mapping are counted in RSS when touched but the kernel can drop them).

Bound stated (and asserted by tests/test_hostile_metadata.py on a ~300 MB pair): `info` and `ls`
stay under 60 MiB peak RSS whatever the file size; `diff` keeps anonymous memory bounded by
its statistics buffers, not by the file size.

    python bench/bench_memory.py                    # ~300 MB and ~2.3 GB pairs
    python bench/bench_memory.py --sizes small      # only the ~300 MB pair
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proc import PEAK_PRELUDE, gsvinspect_code, split_peak  # noqa: E402

INFO_LS_BOUND_MIB = 60

# name -> (version, what): v2 G is ~53 M params (~106 MB fp16 + ~210 MB fp32), v3 ~385 M (~2.3 GB pair)
PAIRS = {"small": "v2", "large": "v3"}

def write_pair(folder: Path, version: str) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO))
    from gsvinspect.meta import Layout
    from gsvinspect.synth import state_dict, write_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    pre, ft = folder / f"s2G_{version}.pth", folder / f"G_{version}_1000.pth"
    if not (pre.exists() and ft.exists()):
        sd = state_dict("sovits-G", version, seed=0)
        write_checkpoint(pre, Layout.SOVITS_G_PRETRAINED, version, weights=sd)
        write_checkpoint(ft, Layout.SOVITS_G_TRAIN, version, weights=sd, optimizer="light")
        del sd
    return pre, ft


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(argv: list[str], cwd: Path | None = None, timeout: float = 1800) -> dict:
    """Run `gsvinspect ARGV` in a child: exit code, wall s, peak RSS MiB, peak anon MiB (sampled)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", PEAK_PRELUDE + gsvinspect_code(*argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    peak_anon = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], _status_kb(proc.pid, "RssAnon:"))
            done.wait(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    head, peak_mib = split_peak(err)
    return {"rc": proc.returncode, "wall": wall, "peak_mib": peak_mib, "anon_mib": peak_anon[0] / 1024,
            "stderr": head}


COMMANDS = {
    "info": lambda pre, ft: ["info", str(ft)],
    "ls": lambda pre, ft: ["ls", str(ft)],
    "diff --no-stats": lambda pre, ft: ["diff", str(pre), str(ft), "--no-stats"],
    "diff (stats, cpu)": lambda pre, ft: ["diff", str(pre), str(ft), "--device", "cpu"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", choices=("small", "large", "all"), default="all")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the pairs (kept for reuse)")
    args = ap.parse_args(argv)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="gsvmem-"))
    names = ["small", "large"] if args.sizes == "all" else [args.sizes]
    print(f"{'pair':<8} {'PRE + FT size':>14} {'command':<20} {'exit':>4} {'wall s':>7} {'peak RSS MiB':>13} "
          f"{'peak anon MiB':>14}")
    worst_info_ls = 0.0
    for name in names:
        t0 = time.time()
        pre, ft = write_pair(folder / name, PAIRS[name])
        size = pre.stat().st_size + ft.stat().st_size
        print(f"# {name}: wrote {pre.name} + {ft.name} ({size / 1e6:,.0f} MB) in {time.time() - t0:.0f}s",
              flush=True)
        for label, make in COMMANDS.items():
            r = measure(make(pre, ft))
            if label in ("info", "ls"):
                worst_info_ls = max(worst_info_ls, r["peak_mib"])
            print(f"{name:<8} {size / 1e6:>11,.0f} MB {label:<20} {r['rc']:>4} {r['wall']:>7.2f} "
                  f"{r['peak_mib']:>13.0f} {r['anon_mib']:>14.0f}", flush=True)
            if r["rc"] not in (0, 1):
                print("   " + r["stderr"][-300:])
    ok = worst_info_ls < INFO_LS_BOUND_MIB
    print(f"\nbound: info/ls peak RSS < {INFO_LS_BOUND_MIB} MiB whatever the file size -> "
          f"{'holds' if ok else 'VIOLATED'} (worst {worst_info_ls:.0f} MiB)")
    print("diff with statistics reads big tensors with pread into a few MB of reused buffers per worker "
          "process (children not counted here: each holds about as much again); small tensors and "
          "fallbacks go through the mapping, whose pages the kernel may drop")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
