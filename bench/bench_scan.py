"""``gsvinspect scan`` on a whole run tree, as whole processes, best of 3 (cold runs: best of 2).

The tree is ``gsvinspect.synth.write_run`` at full size (``--scale 1``): v2, 10 save points, so
3 pretrained files + 10 Lightning ckpts + 10 G_ + 10 D_ + 10 GPT exports + 10 SoVITS exports =
53 checkpoints with the real key names and containers.

Part 1, metadata only: ``gsvinspect scan TREE`` against a script that ``torch.load``s each file to
print its keys (with ``utils.HParams`` importable, as inside GPT-SoVITS). Target: at least 50x
faster, under 1.5 s whole-process on a 2-core machine. Measured with the page cache warm and cold
(the tree's pages dropped with ``posix_fadvise(DONTNEED)`` before each run: the first look at a run
on a box), each for a first scan (the scan cache off) and a repeat scan (every file in the cache,
which lives in a temp dir here, never the user's).

Part 2, drift of one trajectory (the pretrained G + its 10 ``G_*.pth``), against
(a) the naive script that diffs each against the base with ``torch.load`` (base loaded per pair,
    as such scripts do), (b) ten separate ``gsvinspect diff --json`` processes, (c) the page-cache
read floor of the 11 files. Target: the drift pass (timed inside the process, ``timing.drift_s``
of the JSON) within 2x of (c).

Usage: ``python bench/bench_scan.py [--dir DIR] [--scale N] [--keep] [--quick] [--no-cold]``; ``--quick`` leaves out
the two slow references of part 2, (a) and (b) (about 2.5 minutes on 2 cores), keeping the floor. On a shared machine the
numbers move by tens of percent between runs: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(ROOT))     # the gsvinspect beside this bench, installed or not

from _proc import read_floor  # noqa: E402
from bench_stats import NAIVE_LOOP  # noqa: E402

# GPT-SoVITS's own scripts run inside its repo, where `utils.HParams` (pickled in SoVITS exports'
# "config") is importable; these scripts define it the same way, or torch.load stops at the first export
UTILS_SHIM = r"""
import sys, types
utils = types.ModuleType("utils")
class HParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)
utils.HParams = HParams
sys.modules["utils"] = utils
"""

KEYS_SCRIPT = UTILS_SHIM + r"""
import sys, torch
for p in sys.argv[1:]:
    obj = torch.load(p, map_location="cpu", weights_only=False)
    sd = max((v for v in obj.values() if isinstance(v, dict)), key=len) if isinstance(obj, dict) else obj
    print(p, len(sd), list(sd)[:3])
"""

NAIVE_DRIFT = UTILS_SHIM + NAIVE_LOOP + r"""
import sys
base = sys.argv[1]
for ft in sys.argv[2:]:
    a = torch.load(base, map_location="cpu", weights_only=False)["weight"]
    b = torch.load(ft, map_location="cpu", weights_only=False)["model"]
    b = {k.removeprefix("module."): v for k, v in b.items()}
    naive(a, b)
"""


def _env() -> dict:
    """The processes run as an installed program does: bytecode cached (pip compiles it at install;
    a ``PYTHONDONTWRITEBYTECODE`` shell would make every gsvinspect process compile its ~80 modules
    again, ~35 ms here, while torch's come precompiled from its wheel)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(argv: list[str], ok=(0, 1), env: dict | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env={**_env(), **(env or {})})
    wall = time.perf_counter() - t0
    if p.returncode not in ok:
        raise SystemExit(f"{argv[:3]} failed ({p.returncode}): {p.stderr[-600:]}")
    return wall, p.stdout


def best(n: int, argv: list[str], ok=(0, 1), env: dict | None = None) -> tuple[float, str]:
    runs = [timed(argv, ok, env) for _ in range(n)]
    return min(runs, key=lambda r: r[0])


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".pth", ".ckpt"))


def evict(paths) -> bool:
    """Drop the files' pages from the page cache (``POSIX_FADV_DONTNEED``: clean pages of files we
    only read; no root needed). False where the platform has no fadvise."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def part1(root: Path, tmp: Path, cold: bool = True) -> list[tuple[str, float]]:
    """Page cache warm, then cold (every file of the tree evicted before each run): the torch.load
    script, a first scan (scan cache off) and a repeat scan (scan cache filled by a first run)."""
    files = _files(root)
    cache = tmp / "scan-cache"            # never the user's own cache
    shutil.rmtree(cache, ignore_errors=True)
    first_env = {"GSVINSPECT_NO_CACHE": "1"}
    repeat_env = {"GSVINSPECT_CACHE_DIR": str(cache)}
    scan_argv = ["-m", "gsvinspect", "scan", str(root)]
    read_floor(files)
    rows = []
    first_t, _ = best(3, scan_argv, env=first_env)
    timed(scan_argv, env=repeat_env)      # fills the cache
    repeat_t, _ = best(3, scan_argv, env=repeat_env)
    keys_t, out = best(1, ["-c", KEYS_SCRIPT, *map(str, files)], ok=(0,))
    if len(out.splitlines()) != len(files):   # the script must have loaded every file
        raise SystemExit(f"the torch.load script printed {len(out.splitlines())} of {len(files)} files")
    rows += [("warm", keys_t, first_t, repeat_t)]
    if cold and evict(files):
        def cold_run(argv, env=None, ok=(0, 1)):
            evict(files)
            return timed(argv, ok, env=env)[0]
        c_first = min(cold_run(scan_argv, first_env) for _ in range(2))
        c_repeat = min(cold_run(scan_argv, repeat_env) for _ in range(2))
        c_keys = cold_run(["-c", KEYS_SCRIPT, *map(str, files)], ok=(0,))
        read_floor(files)                 # leave the cache warm for part 2
        rows += [("cold", c_keys, c_first, c_repeat)]
    gb = sum(p.stat().st_size for p in files) / 1e9
    print(f"\npart 1: {len(files)} checkpoints, {gb:.1f} GB, {os.cpu_count()} CPUs")
    print(f"{'page cache':10} {'torch.load script':>18} {'scan, first':>12} {'scan, repeat':>13} "
          f"{'first: x faster':>16} {'repeat: x faster':>17}")
    for name, k, f, r in rows:
        print(f"{name:10} {k:17.2f}s {f:11.2f}s {r:12.2f}s {k / f:15.1f}x {k / r:16.1f}x")
    print("first = no scan cache (GSVINSPECT_NO_CACHE=1); repeat = the files already in the scan cache. "
          "Targets: >= 50x faster, under 1.5 s.")
    return rows


def part2(root: Path, base: Path, cks: list[Path], tmp: Path, quick: bool = False) -> None:
    sub = tmp / "drift"
    if sub.exists():
        shutil.rmtree(sub)
    links = []
    for p in [base, *cks]:      # a tree holding just this trajectory (hard links: no copy)
        dst = sub / p.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(p, dst)
        links.append(dst)
    read_floor(links)
    floor = min(read_floor(links) for _ in range(3))
    scan_t, out = best(3, ["-m", "gsvinspect", "scan", "--drift", "--json", str(sub)])
    drift_s = json.loads(out)["timing"]["drift_s"]
    diffs_t = naive_t = float("nan")
    if not quick:
        diffs_t = 0.0
        for ck in cks:
            diffs_t += timed(["-m", "gsvinspect", "diff", "--json", str(base), str(ck)])[0]
        naive_t, _ = timed(["-c", NAIVE_DRIFT, str(base), *map(str, cks)], ok=(0,))
    gb = sum(p.stat().st_size for p in links) / 1e9
    print(f"\npart 2: drift of a base + {len(cks)} G checkpoints, {gb:.1f} GB in {len(links)} files")
    print(f"{'measurement':58} {'seconds':>8}")
    for name, t in (("(a) naive: torch.load base + each, per-key loop, process", naive_t),
                    (f"(b) {len(cks)} separate `gsvinspect diff --json` processes", diffs_t),
                    ("gsvinspect scan --drift --json, process", scan_t),
                    ("    of which the drift pass", drift_s),
                    ("(c) page-cache read of the same 11 files (floor)", floor)):
        print(f"{name:58} {t:8.2f}")
    print(f"scan --drift vs (a): {naive_t / scan_t:.1f}x faster; vs (b): {diffs_t / scan_t:.1f}x faster")
    print(f"drift pass vs read floor: {drift_s / floor:.2f}x (target <= 2x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where to write the tree (default: a temp dir)")
    ap.add_argument("--scale", type=int, default=1, help="1 = full size (default); k divides wide dims by k")
    ap.add_argument("--keep", action="store_true", help="keep the tree (and reuse it next time with --dir)")
    ap.add_argument("--quick", action="store_true", help="part 2 without the slow references (a) and (b)")
    ap.add_argument("--no-cold", action="store_true", help="part 1 without the cold page cache runs (~40 s)")
    args = ap.parse_args()
    from gsvinspect.synth import write_run

    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_scan_"))
    root = tmp / f"GPT-SoVITS-scale{args.scale}"
    try:
        marker = root / "gsvinspect-run.json"
        if not marker.is_file():
            print(f"writing a v2 run tree (scale {args.scale}, 53 checkpoints) under {root} ...", flush=True)
            t0 = time.perf_counter()
            run = write_run(root, "v2", epochs=range(1, 11), scale=args.scale)
            print(f"  written in {time.perf_counter() - t0:.0f} s")
            base, cks = run.pretrained["sovits-G"], run.training["sovits-G"]
        else:
            base = next(root.rglob("s2G2333k.pth"))
            cks = sorted(root.rglob("G_*.pth"), key=lambda p: int(p.stem[2:]))
        part1(root, tmp, cold=not args.no_cold)
        part2(root, base, cks, tmp, args.quick)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
