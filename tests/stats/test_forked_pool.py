"""The forked worker pool: every job reported once, on the calling thread, whatever the children do."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from gsvinspect.stats.pool import can_fork, run_jobs

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes are Linux-only")

WIDTH = 11


def _rows(i: int) -> list[tuple[int, np.ndarray]]:
    """Job i's rows: i % 3 rows (0 too), values that survive the pipe only if sent bit-exactly."""
    return [(i * 10 + k, np.array([i, k, 1 / 3, -0.0, np.inf, np.nan, 2.0 ** -1074, 1e308, 7, 8, os.getpid()],
                                  dtype=np.float64)) for k in range(i % 3)]


def _no_children_left() -> bool:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_every_job_once_on_the_calling_thread_with_exact_rows():
    seen: dict[int, list] = {}
    threads = set()

    def done(i, rows):
        assert i not in seen
        seen[i] = rows
        threads.add(threading.get_ident())

    def work(i):
        time.sleep(0.002)               # long enough for the children to take their share
        return _rows(i)

    run_jobs(60, work, done, processes=3, width=WIDTH)
    assert sorted(seen) == list(range(60))
    assert threads == {threading.get_ident()}
    pids = set()
    for i, rows in seen.items():
        want = _rows(i)
        assert [r[0] for r in rows] == [r[0] for r in want]
        for (_, got), (_, exp) in zip(rows, want):
            assert got[:10].tobytes() == exp[:10].tobytes()     # bit-exact: -0.0, inf, nan, subnormal
            pids.add(int(got[10]))
    assert len(pids) >= 2, "the work was not spread over processes"
    assert _no_children_left()


def test_children_that_die_lose_nothing(tmp_path):
    parent = os.getpid()

    def work(i):
        if os.getpid() != parent:
            (tmp_path / f"lost-{i}").touch()
            os._exit(9)                 # killed mid-job: no result, no goodbye
        time.sleep(0.005)
        return _rows(i)

    seen = []
    run_jobs(30, work, lambda i, rows: seen.append(i), processes=3, width=WIDTH)
    lost = sorted(int(p.name.split("-")[1]) for p in tmp_path.iterdir())
    assert lost, "no child took a job"
    assert sorted(seen) == list(range(30))
    assert _no_children_left()


def test_an_error_is_raised_in_the_caller_and_children_are_reaped():
    def work(i):
        if i == 5:
            raise ValueError("bad block 5")
        return _rows(i)

    with pytest.raises(ValueError, match="bad block 5"):
        run_jobs(40, work, lambda i, rows: None, processes=3, width=WIDTH)
    assert _no_children_left()


def test_cancel_stops_early_and_kills_the_children():
    cancel = threading.Event()
    seen = []

    def work(i):
        time.sleep(0.02)
        return _rows(i)

    def done(i, rows):
        seen.append(i)
        if len(seen) == 3:
            cancel.set()

    t0 = time.perf_counter()
    run_jobs(500, work, done, processes=3, width=WIDTH, cancel=cancel)
    assert time.perf_counter() - t0 < 2.0          # 500 x 20 ms would take 3+ s on 3 workers
    assert 3 <= len(seen) < 500
    assert _no_children_left()


def test_an_exception_in_done_propagates_and_reaps():
    def done(i, rows):
        if i >= 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_jobs(20, _rows, done, processes=3, width=WIDTH)
    assert _no_children_left()


def test_one_process_runs_in_order_here():
    order = []
    run_jobs(5, lambda i: [(i, np.full(WIDTH, os.getpid(), np.float64))],
             lambda i, rows: order.append((i, int(rows[0][1][0]))), processes=1, width=WIDTH)
    assert order == [(i, os.getpid()) for i in range(5)]


def test_children_work_when_forked_from_a_non_main_thread():
    """The TUI runs the engine in a worker thread: the children must still take jobs there."""
    pids = set()

    def work(i):
        time.sleep(0.002)
        return [(i, np.full(WIDTH, os.getpid(), np.float64))]

    def go():
        run_jobs(60, work, lambda i, rows: pids.add(int(rows[0][1][0])), processes=3, width=WIDTH)

    t = threading.Thread(target=go)
    t.start()
    t.join()
    assert len(pids) >= 2 and os.getpid() in pids
    assert _no_children_left()


def test_children_do_not_run_the_parents_signal_handlers(tmp_path):
    """An app's handler (Textual's SIGWINCH, say) must not run in a child: the terminal sends
    a resize to the whole process group."""
    import signal

    marks = tmp_path / "handled"

    def handler(signum, frame):
        with open(marks, "a") as fh:
            fh.write(f"{os.getpid()}\n")

    def work(i):
        os.kill(os.getpid(), signal.SIGWINCH)
        time.sleep(0.005)
        return _rows(i)

    old = signal.signal(signal.SIGWINCH, handler)
    try:
        run_jobs(20, work, lambda i, rows: None, processes=3, width=WIDTH)
    finally:
        signal.signal(signal.SIGWINCH, old)
    pids = set(marks.read_text().split()) if marks.exists() else set()
    assert pids == {str(os.getpid())}


def test_cancel_with_more_jobs_than_the_token_pipe_holds():
    """50,000 jobs (200 KB of tokens, more than a pipe holds): the feeder is still writing when
    the run is cancelled; stopping must neither hang nor break the pipe."""
    cancel = threading.Event()
    seen = []

    def done(i, rows):
        seen.append(i)
        if len(seen) == 5:
            cancel.set()

    t0 = time.perf_counter()
    run_jobs(50_000, lambda i: (time.sleep(0.001), _rows(i))[1], done, processes=3, width=WIDTH, cancel=cancel)
    assert time.perf_counter() - t0 < 3.0 and 5 <= len(seen) < 50_000
    assert _no_children_left()
