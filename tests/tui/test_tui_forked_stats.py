"""The inspector's statistics with the engine's worker processes forced on (forked from a Textual
worker thread): the same numbers, and no process left behind when the user quits mid-run."""

from __future__ import annotations

import os
import time

import pytest
from test_tui_support import PAIRS, demo_files, make_app, settle, wait_until

from gsvinspect.stats import cpu as stats_cpu
from gsvinspect.stats.engine import compute_stats
from gsvinspect.align.alignment import align
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.stats.pool import can_fork

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes are Linux-only")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_files(tmp_path_factory.getbasetemp() / "tui-demo")


@pytest.fixture
def forked(monkeypatch):
    forks = []
    real_fork = os.fork

    def counting_fork():
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(stats_cpu, "_FORK_MIN_BYTES", 0)
    monkeypatch.setattr(stats_cpu, "_cpu_workers", lambda: 3)
    monkeypatch.setattr(os, "fork", counting_fork)
    return forks


def _no_children_left(timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        time.sleep(0.05)
    return False


async def test_forked_stats_in_the_tui_match_the_library(demo, forked):
    app = make_app(demo, "gpt", stats=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: not app.stats_running)
        assert app.model.n_with_stats == 295
        shown = {k: leaf.stats for k, leaf in app.model.leaves.items() if leaf.stats is not None}
    assert len(forked) == 2                     # two children: the work really was shared
    pre_p, ft_p = (demo[n] for n in PAIRS["gpt"])
    with open_checkpoint(pre_p) as pc, open_checkpoint(ft_p) as fc:
        monkey_free = compute_stats(pc, fc, align(pc.weights, fc.weights).triples(), device="cpu")
    for k, ts in monkey_free.per_key.items():
        if ts.paired:
            assert shown[k].sumsq_diff == ts.sumsq_diff and shown[k].changed == ts.changed, k
    assert _no_children_left()


async def test_quitting_mid_run_leaves_no_worker_process(demo, forked, monkeypatch):
    slow_pair = stats_cpu._cpu_pair

    def slow(*args):
        time.sleep(0.05)                        # in the children too: they are forks of this process
        return slow_pair(*args)

    monkeypatch.setattr(stats_cpu, "_cpu_pair", slow)
    app = make_app(demo, "gpt", stats=True)
    async with app.run_test(size=(160, 50)) as pilot:
        for _ in range(200):                    # not settle(): that would wait for the stats
            if len(forked) == 2:
                break
            await pilot.pause(0.02)
        assert app.stats_running and len(forked) == 2
        await pilot.press("q")
    assert _no_children_left(timeout=1.0)       # killed, not left to finish ~2 s of slowed jobs
