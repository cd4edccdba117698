"""Run a command as a whole process and measure wall time and its own peak RSS (os.wait4)."""

from __future__ import annotations

import os
import subprocess
import time


def measure(cmd: list[str], *, env: dict | None = None, repeat: int = 3) -> tuple[float, float]:
    """Best-of-`repeat` wall seconds and the peak RSS (MiB) of that run; raises on failure."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode not in (0, 1):
            raise RuntimeError(f"{cmd} failed ({p.returncode}): {p.stderr.read().decode()[-400:]}")
        p.stderr.close()
        if wall < best[0]:
            best = (wall, ru.ru_maxrss / 1024)
    return best
