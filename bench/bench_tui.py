"""Benchmark: the inspector app at 20,000+ keys (issue #6 point 2 and the report it asks for).

Writes a pretrained-style file with ``synth.wide_state_dict(N)`` and a DDP-style fine-tune
(every key prefixed ``module.``, values nudged), then measures:

* **open → first paint**, as a whole process in a pseudo-terminal: wall time from spawning
  ``python -m gsvinspect open PRE FT --no-stats`` to the first frame holding the key tree, and
  whether torch was imported by then (it must not be; checked in a headless run);
* **rule edit → updated counts** (typing ``strip_prefix = 'module.'`` lines up all N keys):
  library parse+align+model build (worker thread), main-thread swap, and the whole round trip
  through the app without the 150 ms debounce;
* **scrolling and structure** on the fully expanded tree: cursor key, page down (render of a
  full screen of lines), expand all, filter, toggle a group, sort by change.

    python bench/bench_tui.py [--keys 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_pair(directory: Path, n_keys: int) -> tuple[Path, Path]:
    import torch

    from gsvinspect.synth import wide_state_dict

    pre = wide_state_dict(n_keys, seed=0)
    gen = torch.Generator().manual_seed(1)
    ft = {"module." + k: v + torch.randn(v.shape, generator=gen) * 0.001 * (1 + (i % 7)) for i, (k, v)
          in enumerate(pre.items())}
    p, f = directory / "pre.pth", directory / "G_ft.pth"
    torch.save({"weight": pre, "config": {"n": n_keys}}, p)
    torch.save({"model": ft, "iteration": 1}, f)
    return p, f


# -- 1. open to first paint in a real pseudo-terminal ---------------------------------------------

def first_paint_pty(pre: Path, ft: Path, marker: bytes, size=(50, 160), timeout=20.0) -> float:
    """Seconds from spawn until `marker` (a group name of the key tree) has been written."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        env = dict(os.environ, TERM="xterm-256color", TEXTUAL_ANIMATIONS="none")
        os.execvpe(sys.executable, [sys.executable, "-m", "gsvinspect", "open", str(pre), str(ft), "--no-stats"],
                   env)
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    t0 = time.perf_counter()
    buf = b""
    try:
        while time.perf_counter() - t0 < timeout:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                buf += chunk
                if marker in buf:
                    return time.perf_counter() - t0
        raise RuntimeError(f"no first paint within {timeout}s; output tail: {buf[-300:]!r}")
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        except OSError:
            pass
        os.close(fd)


def torch_at_first_paint(pre: Path, ft: Path) -> bool:
    """Whether torch is in sys.modules when the keys are first on screen (headless run)."""
    code = f"""
import asyncio, sys
from gsvinspect_tui.app import GsvInspectApp
async def main():
    app = GsvInspectApp({str(pre)!r}, {str(ft)!r}, stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        while app.model is None and app.load_error is None:
            await pilot.pause(0.01)
        await pilot.pause()
        print('torch' in sys.modules, len(app.model.leaves))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True"


# -- 2 and 3. in-process measurements ------------------------------------------------------------

async def interactive(pre: Path, ft: Path, repeat: int) -> dict[str, float]:
    from gsvinspect_tui.app import GsvInspectApp

    res: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        res.setdefault(name, []).append(value * 1000)

    app = GsvInspectApp(pre, ft, stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        while app.model is None:
            await pilot.pause(0.01)
        await pilot.pause()
        view = app.diff
        session = app.session
        for i in range(repeat):
            text = "[[rule]]\nstrip_prefix = 'module.'\n" + "#" * i
            t0 = time.perf_counter()
            result = session.realign(text, 0)
            add("rule edit: parse + align + model build (worker)", time.perf_counter() - t0)
            old = app.model
            t0 = time.perf_counter()
            view.set_model(result.model)
            add("rule edit: swap model + re-flatten (UI thread)", time.perf_counter() - t0)
            view.set_model(old)
            # whole round trip through the app (RulesEditor.Edited -> worker -> counts shown)
            before = app.model
            t0 = time.perf_counter()
            app.rules_editor.set_text(text, notify=False)
            app.rules_editor.post_message(app.rules_editor.Edited(text))
            while app.model is before:
                await pilot.pause(0.002)
            add("rule edit -> counts updated (round trip, no debounce)", time.perf_counter() - t0)
            assert app.counts() == {"MATCHED": len(app.model.leaves)}, app.counts()
            app.rules_editor.set_text("", notify=False)
            before = app.model
            app.rules_editor.post_message(app.rules_editor.Edited(""))
            while app.model is before:
                await pilot.pause(0.002)

        model = app.model
        for _ in range(repeat):
            t0 = time.perf_counter()
            model.expand_all()
            view.rebuild()
            add("expand all + flatten", time.perf_counter() - t0)
        n_lines = len(view.lines)
        height = view.size.height

        def render_screen() -> None:
            for y in range(height):
                view.render_line(y)

        view.cursor = n_lines // 2
        await pilot.pause()
        for _ in range(repeat * 10):
            t0 = time.perf_counter()
            view.action_cursor_down()
            render_screen()
            add("cursor down + render visible lines", time.perf_counter() - t0)
        for _ in range(repeat * 5):
            t0 = time.perf_counter()
            view.action_page_down()
            render_screen()
            add("page down + render a full screen", time.perf_counter() - t0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            model.set_filter("layers.7.attn")
            view.rebuild()
            add("filter (substring) + flatten", time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.set_filter(r"re:groups\.1\d?\.layers\.(3|4)\.mlp")
            view.rebuild()
            add("filter (regex) + flatten", time.perf_counter() - t0)
            model.set_filter("")
            view.rebuild()
        group_line = next(i for i, ln in enumerate(view.lines) if ln.is_group and ln.depth == 2)
        for _ in range(repeat):
            view.cursor = group_line
            t0 = time.perf_counter()
            view.action_toggle()
            add("toggle one group", time.perf_counter() - t0)
            view.action_toggle()
        for _ in range(repeat):
            t0 = time.perf_counter()
            model.sort_by_change = not model.sort_by_change
            view.rebuild()
            add("sort by change on/off + flatten", time.perf_counter() - t0)
        res["_lines"] = [n_lines]

    # statistics filling in while the UI runs: total time and the event loop's worst stall
    app = GsvInspectApp(pre, ft, rules=None, stats=True)
    async with app.run_test(size=(160, 50)) as pilot:
        while app.model is None:
            await pilot.pause(0.01)
        app.rules_editor.set_text("[[rule]]\nstrip_prefix = 'module.'\n", notify=False)
        before = app.model
        app.rules_editor.post_message(app.rules_editor.Edited(app.rules_editor.text))
        while app.model is before:
            await pilot.pause(0.002)
        lags: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            lags.append(now - last[0] - 0.01)
            last[0] = now

        timer = app.set_interval(0.01, tick)
        t0 = time.perf_counter()
        while not app.stats_running:
            await pilot.pause(0.005)
        while app.stats_running:
            await pilot.pause(0.02)
        add("statistics for every key, filling in live (wall)", time.perf_counter() - t0)
        timer.stop()
        lags.sort()
        add("  event-loop stall while they fill in: p50", lags[len(lags) // 2])
        add("  event-loop stall while they fill in: max", lags[-1])
        assert app.model.n_with_stats == len(app.model.leaves)
    return {k: statistics.median(v) for k, v in res.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="keep the generated files here")
    args = ap.parse_args()
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="gsv-bench-tui-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        pre, ft = write_pair(tmp, args.keys)
        print(f"wrote {args.keys:,} keys per file in {time.perf_counter() - t0:.1f} s "
              f"({pre.stat().st_size / 1e6:.1f} MB + {ft.stat().st_size / 1e6:.1f} MB)")
        from gsvinspect.synth import write_demo

        demo = write_demo(tmp / "demo")
        demo_paints = [first_paint_pty(demo["sovits_pretrained"], demo["sovits_finetune"], b"ref_enc")
                       for _ in range(args.repeat)]
        paints = [first_paint_pty(pre, ft, b"postnet") for _ in range(args.repeat)]
        torch_loaded = torch_at_first_paint(pre, ft)
        rows = [("open -> first paint, demo SoVITS G pair (776 keys; pty, best)", min(demo_paints) * 1000),
                ("open -> first paint of both trees (pty, whole process, best)", min(paints) * 1000),
                ("open -> first paint (median)", statistics.median(paints) * 1000)]
        inter = asyncio.run(interactive(pre, ft, args.repeat))
        n_lines = int(inter.pop("_lines"))
        rows += list(inter.items())
        print(f"\n{'measurement at %s keys (%s lines expanded)' % (f'{args.keys:,}', f'{n_lines:,}'):70} {'ms':>9}")
        print("-" * 80)
        for name, ms in rows:
            print(f"{name:70} {ms:9.1f}")
        print(f"\ntorch imported at first paint: {torch_loaded}")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
