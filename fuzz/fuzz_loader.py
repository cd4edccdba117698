#!/usr/bin/env python
"""Mutation fuzzer for gsvinspect's loader: byte flips, truncation, splices, zip-directory field
edits and pickle-opcode mutations over valid checkpoints of every layout.

Contract checked per case: `open_checkpoint` either works (and then every tensor can be read
with ck.array and `info`'s summary can be built) or raises a gsvinspect.errors.GsvError;
never another exception, never a hang (per-case timeout), never a dead interpreter. Cases run
in worker processes, so a segfault or an OOM kill is caught and reported with the input saved.

    python fuzz/fuzz_loader.py --cases 20000 --jobs 2       # prints the count and outcome table

The same mutation engine drives tests/test_fuzz_loader.py (with hypothesis choosing the ops).
"""

from __future__ import annotations

import argparse
import json
import os
import pickletools
import random
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _proc import PEAK_RSS_SNIPPET  # noqa: E402  (the benchmarks' own peak-RSS reader)

# ---------------------------------------------------------------------------------------------
# seeds


def write_seeds(folder: Path, *, all_versions: bool = True, scale: int = 256) -> list[Path]:
    """Valid checkpoints of every layout (gsvinspect.synth, the containers upstream writes)."""
    sys.path.insert(0, str(REPO))
    from gsvinspect.meta import Layout
    from gsvinspect.synth import layout_versions, write_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for layout in Layout:
        versions = layout_versions(layout)
        picks = list(dict.fromkeys([versions[0], versions[-1]])) if all_versions else [versions[-1]]
        if layout == Layout.SOVITS_WEIGHTS:
            picks.append("v2Pro")  # the "05" header
        for v in picks:
            kw = {"optimizer": "light"} if layout in (Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN,
                                                      Layout.SOVITS_G_LORA_TRAIN, Layout.GPT_LIGHTNING) else {}
            ext = ".safetensors" if layout == Layout.SAFETENSORS else ".pth"
            out.append(write_checkpoint(folder / f"{layout.name}_{v}{ext}", layout, v, scale=scale, **kw))
    return out


@dataclass
class Seed:
    """A valid file and the byte ranges worth mutating."""

    name: str
    data: bytes
    kind: str                                  # zip | safetensors
    pickle_range: tuple[int, int] = (0, 0)     # data offset, length of data.pkl
    cd_entries: list[int] = field(default_factory=list)       # central-directory entry offsets
    local_headers: list[int] = field(default_factory=list)
    eocd: int = -1
    opcodes: list[tuple[int, int, str]] = field(default_factory=list)  # (pos in pickle, length, code)
    hot: list[tuple[int, int]] = field(default_factory=list)  # (start, end) ranges to favour

    @classmethod
    def load(cls, path: Path) -> "Seed":
        data = path.read_bytes()
        if data[2:4] == b"\x03\x04":
            return cls._zip(path.name, data)
        return cls._safetensors(path.name, data)

    @classmethod
    def _zip(cls, name: str, data: bytes) -> "Seed":
        eocd = data.rfind(b"PK\x05\x06")
        n, cd_size, cd_off = struct.unpack_from("<HII", data, eocd + 10)
        entries, local, pos = [], [], cd_off
        pickle_range = (0, 0)
        for _ in range(n):
            entries.append(pos)
            csize, nlen, elen, clen, hoff = (struct.unpack_from("<I", data, pos + 20)[0],
                                             *struct.unpack_from("<HHH", data, pos + 28),
                                             struct.unpack_from("<I", data, pos + 42)[0])
            rec = data[pos + 46:pos + 46 + nlen].decode()
            local.append(hoff)
            ln, le = struct.unpack_from("<HH", data, hoff + 26)
            if rec.endswith("data.pkl"):
                pickle_range = (hoff + 30 + ln + le, csize)
            pos += 46 + nlen + elen + clen
        start, length = pickle_range
        ops = []
        for op, _arg, p in pickletools.genops(data[start:start + length]):
            ops.append([p, 0, op.code])
        for j in range(len(ops)):
            ops[j][1] = (ops[j + 1][0] if j + 1 < len(ops) else length) - ops[j][0]
        hot = [(start, start + length), (cd_off, len(data)), (0, 64)] + [(h, h + 30) for h in local]
        return cls(name, data, "zip", pickle_range, entries, local, eocd, [tuple(o) for o in ops], hot)

    @classmethod
    def _safetensors(cls, name: str, data: bytes) -> "Seed":
        (n,) = struct.unpack_from("<Q", data, 0)
        return cls(name, data, "safetensors", hot=[(0, 8 + n)])


# ---------------------------------------------------------------------------------------------
# mutations: each op is (kind, a, b, c) with 32-bit ints, interpreted modulo the file's sizes,
# so hypothesis can draw and shrink them and the random fuzzer can produce them alike

KINDS = ("flip", "flip_hot", "truncate", "splice", "zip_field", "pickle_op", "pickle_arg", "pickle_cut",
         "header", "safetensors_json")

INTERESTING_32 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
                  0xFFFFFFFE, 0xFFFFFFFF)
# (offset in the structure, width) of the fields worth corrupting
CD_FIELDS = ((8, 2), (10, 2), (20, 4), (24, 4), (28, 2), (30, 2), (32, 2), (42, 4))
LOCAL_FIELDS = ((0, 4), (8, 2), (18, 4), (22, 4), (26, 2), (28, 2))
EOCD_FIELDS = ((8, 2), (10, 2), (12, 4), (16, 4), (20, 2))


def _interesting(c: int, current: int, width: int) -> int:
    mask = (1 << (8 * width)) - 1
    choice = c % 6
    if choice == 0:
        return INTERESTING_32[(c >> 3) % len(INTERESTING_32)] & mask
    if choice == 1:
        return (current + 1 + (c >> 3) % 64) & mask
    if choice == 2:
        return (current - 1 - (c >> 3) % 64) & mask
    if choice == 3:
        return current ^ (1 << ((c >> 3) % (8 * width)))
    if choice == 4:
        return (current * 2 + 1) & mask
    return (c >> 3) & mask


def mutate(seed: Seed, ops, others: list[Seed]) -> bytes:
    """Apply the ops to the seed's bytes; never raises (ops are interpreted modulo sizes)."""
    data = bytearray(seed.data)
    for kind, a, b, c in ops:
        n = len(data)
        if n == 0:
            break
        if kind == "flip":
            data[a % n] ^= 1 << (b % 8)
        elif kind == "flip_hot":
            lo, hi = seed.hot[b % len(seed.hot)]
            hi = min(hi, n)
            if lo < hi:
                pos = lo + a % (hi - lo)
                data[pos] = (data[pos] ^ (1 << (c % 8))) if c & 0x100 else c & 0xFF
        elif kind == "truncate":
            keep = a % n if b % 3 else max(0, n - 1 - a % 256)  # anywhere, or a few bytes off the end
            del data[keep:]
        elif kind == "splice":
            src = others[c % len(others)].data if others else seed.data
            start, length = a % len(src), 1 + b % 512
            chunk = src[start:start + length]
            pos = (a >> 7) % n
            if c & 1:
                data[pos:pos] = chunk
            else:
                data[pos:pos + len(chunk)] = chunk
        elif kind == "zip_field" and seed.kind == "zip":
            which = b % 3
            if which == 0 and seed.cd_entries:
                base, (off, w) = seed.cd_entries[a % len(seed.cd_entries)], CD_FIELDS[(a >> 8) % len(CD_FIELDS)]
            elif which == 1 and seed.local_headers:
                base, (off, w) = seed.local_headers[a % len(seed.local_headers)], \
                    LOCAL_FIELDS[(a >> 8) % len(LOCAL_FIELDS)]
            else:
                base, (off, w) = seed.eocd, EOCD_FIELDS[a % len(EOCD_FIELDS)]
            pos = base + off
            if 0 <= pos and pos + w <= n:
                cur = int.from_bytes(data[pos:pos + w], "little")
                data[pos:pos + w] = _interesting(c, cur, w).to_bytes(w, "little")
        elif kind in ("pickle_op", "pickle_arg", "pickle_cut") and seed.opcodes:
            start = seed.pickle_range[0]
            p, length, _code = seed.opcodes[a % len(seed.opcodes)]
            pos = start + p
            if pos + length > n:
                continue
            if kind == "pickle_op":  # replace the opcode byte (same length: the zip stays valid)
                data[pos] = _OPCODE_BYTES[b % len(_OPCODE_BYTES)] if c & 1 else (data[pos] ^ (1 << (b % 8)))
            elif kind == "pickle_arg" and length > 1:  # corrupt the argument bytes
                w = min(length - 1, 4 if c & 1 else 8)
                at = pos + 1 + (b % max(1, length - w))
                cur = int.from_bytes(data[at:at + w], "little")
                data[at:at + w] = _interesting(c >> 1, cur, w).to_bytes(w, "little")
            else:  # pickle_cut: overwrite an opcode run with STOP/MARK/POP or a copy of another op
                q, qlen, _ = seed.opcodes[b % len(seed.opcodes)]
                if c % 3 == 0:
                    data[pos:pos + length] = b"." * length
                elif c % 3 == 1:
                    data[pos:pos + length] = b"0" * length  # POP: unbalances the stack
                else:
                    other = seed.data[start + q:start + q + qlen]
                    chunk = (other * (length // max(1, len(other)) + 1))[:length]
                    data[pos:pos + length] = chunk
        elif kind == "header":
            data[0:2] = (b"PK", b"05", b"03", b"06", b"09", b"99", b"\x80\x02", b"\x00\x00")[a % 8]
        elif kind == "safetensors_json" and seed.kind == "safetensors":
            (hn,) = struct.unpack_from("<Q", seed.data, 0)
            try:
                header = json.loads(seed.data[8:8 + hn])
            except ValueError:
                continue
            keys = [k for k in header if k != "__metadata__"]
            if not keys:
                continue
            ent = header[keys[a % len(keys)]]
            choice = b % 5
            big = INTERESTING_32[c % len(INTERESTING_32)] * (1 if c & 0x10 else 1 << 20)
            if choice == 0:
                ent["data_offsets"] = [ent["data_offsets"][0], ent["data_offsets"][1] + big]
            elif choice == 1:
                ent["shape"] = [big] + list(ent["shape"])[1:]
            elif choice == 2:
                ent["dtype"] = ("F32", "F16", "BF16", "I64", "XX", 7)[c % 6]
            elif choice == 3:
                ent["data_offsets"] = [-(c % 9), ent["data_offsets"][1]]
            else:
                ent["shape"] = [-1] if c & 1 else "4x4"
            raw = json.dumps(header).encode()
            data = bytearray(struct.pack("<Q", len(raw)) + raw + seed.data[8 + hn:])
    return bytes(data)


_OPCODE_BYTES = sorted({op.code.encode("latin1")[0] for op in pickletools.opcodes} | {0x00, 0xFF, 0x2E})


def random_ops(rng: random.Random) -> list[tuple]:
    weights = (3, 6, 2, 2, 5, 5, 5, 3, 1, 2)
    return [(rng.choices(KINDS, weights)[0], rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32))
            for _ in range(1 + min(3, int(rng.expovariate(1.0))))]


# ---------------------------------------------------------------------------------------------
# worker: opens cases, one JSON line per case

WORKER = PEAK_RSS_SNIPPET + r"""
import json, sys, traceback
sys.setrecursionlimit(3000)
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import GsvError
from gsvinspect.report.output import to_jsonable
from gsvinspect.report.summary import info_dict

for line in sys.stdin:
    path = line.strip()
    try:
        with open_checkpoint(path) as ck:
            for key in ck.weights:
                arr = ck.array(key)
                if arr.size:
                    arr.reshape(-1)[[0, -1]].tobytes()   # first and last element: the bounds
                    bytes(ck.raw_bytes(key)[:64])
            json.dumps(to_jsonable(info_dict(ck, with_globals=True)))
        outcome = "ok"
    except GsvError as exc:
        msg = str(exc)
        outcome = "error:" + type(exc).__name__ + (":multiline" if "\n" in msg else "")
    except BaseException as exc:
        outcome = "BUG:" + type(exc).__name__ + ": " + traceback.format_exc()[-1500:]
    sys.stdout.write(json.dumps([outcome, _peak_rss_kb()]) + "\n")
    sys.stdout.flush()
"""


class Worker:
    """A child interpreter that opens cases; detects hangs (timeout) and deaths (crash)."""

    def __init__(self, case_timeout: float = 10.0, mem_limit_gb: float = 4.0):
        self.case_timeout = case_timeout
        self.mem_limit = int(mem_limit_gb * (1 << 30))
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        limit = self.mem_limit

        def pre():
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, preexec_fn=pre, bufsize=0)

    def run(self, path: Path) -> tuple[str, int]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write((str(path) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self._died()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.case_timeout)
        if not ready:
            self.close()
            return "hang", 0
        line = self.proc.stdout.readline()
        if not line:
            return self._died()
        outcome, peak = json.loads(line)
        return outcome, peak

    def _died(self) -> tuple[str, int]:
        code = self.proc.wait()
        self.proc = None
        return f"crash:exit {code}", 0

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def is_failure(outcome: str) -> bool:
    return outcome.startswith(("BUG", "hang", "crash")) or outcome.endswith(":multiline")


# ---------------------------------------------------------------------------------------------
# standalone driver


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--out", type=Path, default=None, help="folder for failing inputs (default: a temp dir)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="gsvfuzz-"))
    crash_dir = args.out or (work / "failures")
    crash_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seeds = [Seed.load(p) for p in write_seeds(work / "seeds")]
    print(f"{len(seeds)} seed files of every layout ({sum(len(s.data) for s in seeds) / 1e6:.1f} MB) "
          f"in {time.time() - t0:.1f}s; {args.cases} cases on {args.jobs} workers", flush=True)

    workers = [Worker(args.timeout) for _ in range(args.jobs)]
    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    failures: list[str] = []
    peak = 0
    rng = random.Random(args.seed)
    t0 = time.time()
    # several workers: a thread per worker keeps them busy while the main thread mutates
    import queue
    import threading

    todo: queue.Queue = queue.Queue(maxsize=64)
    lock = threading.Lock()

    def consume(wk: Worker, slot: int) -> None:
        nonlocal peak
        path = work / f"case_{slot}.pth"
        while True:
            item = todo.get()
            if item is None:
                return
            idx, seed_name, ops, data = item
            path.write_bytes(data)
            outcome, pk = wk.run(path)
            key = outcome.split(":", 2)[0] + (":" + outcome.split(":", 2)[1] if outcome.startswith("error") else "")
            with lock:
                outcomes[key] += 1
                by_kind.setdefault(ops[0][0], Counter())[key] += 1
                peak = max(peak, pk)
                if is_failure(outcome):
                    bad = crash_dir / f"case{idx}_{seed_name}"
                    bad.write_bytes(data)
                    failures.append(f"{bad}: {ops}: {outcome[:600]}")
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    threads = [threading.Thread(target=consume, args=(w, i), daemon=True) for i, w in enumerate(workers)]
    for th in threads:
        th.start()
    for idx in range(args.cases):
        seed = rng.choice(seeds)
        ops = random_ops(rng)
        todo.put((idx, seed.name, ops, mutate(seed, ops, seeds)))
        if idx and idx % 2000 == 0:
            with lock:
                done = sum(outcomes.values())
            print(f"  {done} cases, {len(failures)} failures, {time.time() - t0:.0f}s", flush=True)
    for _ in threads:
        todo.put(None)
    for th in threads:
        th.join()
    for w in workers:
        w.close()
    elapsed = time.time() - t0

    total = sum(outcomes.values())
    print(f"\n{total} cases in {elapsed:.0f}s ({total / elapsed:.0f}/s); worker peak RSS {peak / 1024:.0f} MiB")
    print(f"{'outcome':<40} {'count':>7} {'share':>7}")
    for k, v in outcomes.most_common():
        print(f"{k:<40} {v:>7} {100 * v / total:>6.1f}%")
    print(f"\n{'first mutation':<18} " + " ".join(f"{k:>8}" for k in ("ok", "refused", "FAIL")))
    for kind in KINDS:
        c = by_kind.get(kind, Counter())
        ok = c.get("ok", 0)
        fail = sum(v for k, v in c.items() if is_failure(k))
        print(f"{kind:<18} {ok:>8} {sum(c.values()) - ok - fail:>8} {fail:>8}")
    if failures:
        print(f"\n{len(failures)} FAILURES (inputs saved under {crash_dir}):")
        for f in failures[:50]:
            print("  " + f)
        return 1
    print("\nno failures: every case opened cleanly or raised a GsvError")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
