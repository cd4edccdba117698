"""Run CPU-bound jobs on forked worker processes and on the calling thread together.

Why processes and not threads: numpy releases the GIL only inside each call, and a kernel made
of a dozen short calls per block spends its time handing the GIL between threads. Measured on
the 2-core VMs this project runs on: the stats kernel ran 0.9-1.3x as fast on two threads as on
one, and 1.8x on two processes. ``fork`` gives the children the job list and the open files at
no cost, and the results (a few float64 rows per job) are small.

Protocol: job indices go into a token pipe, 4 bytes each (a feeder thread writes them; pipe
reads of at most PIPE_BUF bytes are atomic, so each job goes to exactly one worker). Each child
has its own result pipe carrying records ``(job, n)`` + ``n x (id, width float64)``. The calling
thread takes jobs from the same token pipe and, between its own jobs, collects the children's
records, so every ``done`` callback runs on it. Nothing is lost when a child dies or fails: jobs
without a result are run in-process at the end, where their exception, if any, is raised.

Linux only (``fork`` without ``exec`` is unsafe on macOS); elsewhere, and for ``processes=1``,
the jobs simply run in order on the calling thread.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import struct
import sys
import threading
import warnings
from typing import Callable, Sequence

import numpy as np

_HEAD = struct.Struct("<qq")        # job index, number of rows (-1: the job failed in the child)
_TOKEN = struct.Struct("<i")
_POLL_S = 0.05                      # how often a waiting parent checks `cancel`

Rows = Sequence[tuple[int, np.ndarray]]


def can_fork() -> bool:
    """True where worker processes are used (Linux with ``os.fork``)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def run_jobs(n_jobs: int, work: Callable[[int], Rows], done: Callable[[int, Rows], None], *,
             processes: int, width: int, cancel: threading.Event | None = None) -> None:
    """Call ``done(i, work(i))`` on the calling thread for every job ``i`` in ``range(n_jobs)``.

    ``work(i)`` returns rows ``(id, float64 array of length width)``; it runs in one of
    ``processes - 1`` forked children or on the calling thread. ``done`` is called once per job,
    in completion order. When `cancel` is set the children are killed and the call returns
    early (jobs not done are simply not reported).
    """
    if processes <= 1 or n_jobs <= 1 or not can_fork():
        for i in range(n_jobs):
            if cancel is not None and cancel.is_set():
                return
            done(i, work(i))
        return
    _Pool(n_jobs, work, done, min(processes - 1, n_jobs - 1), width, cancel).run()


class _Pool:
    def __init__(self, n_jobs, work, done, n_children, width, cancel):
        self.n_jobs, self.work, self.done, self.width, self.cancel = n_jobs, work, done, width, cancel
        self.n_children = n_children
        self.row = struct.Struct(f"<q{width}d")
        self.got = bytearray(n_jobs)
        self.children: dict[int, tuple[int, bytearray]] = {}   # result fd -> (pid, unparsed bytes)
        self.pids: list[int] = []

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    # -- parent ---------------------------------------------------------------------------
    def run(self) -> None:
        tok_r, tok_w = os.pipe()
        feeder = None
        try:
            for _ in range(self.n_children):
                try:
                    self._fork(tok_r, tok_w)
                except OSError:                       # no more processes to be had: fewer workers
                    break
            feeder = threading.Thread(target=_feed, args=(tok_w, self.n_jobs), name="gsv-jobs-feeder",
                                      daemon=True)
            feeder.start()
            tok_w = -1                               # the feeder closes it when all tokens are in
            while not self.cancelled():
                self._collect(0.0)
                tok = _read_token(tok_r)
                if tok is None:
                    break
                self._finish(tok, self.work(tok))
            while self.children and not self.cancelled():
                self._collect(_POLL_S)
            for i in range(self.n_jobs):              # jobs a child lost (died, or failed: re-raise here)
                if self.cancelled():
                    break
                if not self.got[i]:
                    self._finish(i, self.work(i))
        finally:
            self._stop_children()
            if feeder is not None:                   # let a feeder still writing finish (no EPIPE,
                while os.read(tok_r, 1 << 16):       # which kills apps that restore SIGPIPE's default)
                    pass
                feeder.join()
            os.close(tok_r)
            if tok_w >= 0:
                os.close(tok_w)

    def _fork(self, tok_r: int, tok_w: int) -> None:
        res_r, res_w = os.pipe()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: "multi-threaded process"
                pid = os.fork()
        except OSError:
            os.close(res_r)
            os.close(res_w)
            raise
        if pid == 0:
            self._child(tok_r, tok_w, res_r, res_w)   # never returns
        os.close(res_w)
        self.pids.append(pid)
        self.children[res_r] = (pid, bytearray())

    def _finish(self, job: int, rows: Rows) -> None:
        if not self.got[job]:
            self.got[job] = 1
            self.done(job, rows)

    def _collect(self, timeout: float) -> None:
        """Read what the children have sent (waiting up to `timeout`) and report finished jobs."""
        if not self.children:
            return
        poller = select.poll()          # not select(): fd numbers past 1024 are possible in a big app
        for fd in self.children:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(timeout * 1000):
            buf = self.children[fd][1]
            data = os.read(fd, 1 << 16)
            if not data:                              # the child exited (or died)
                os.close(fd)
                del self.children[fd]
                continue
            buf += data
            self._parse(buf)

    def _parse(self, buf: bytearray) -> None:
        pos = 0
        while len(buf) - pos >= _HEAD.size:
            job, n = _HEAD.unpack_from(buf, pos)
            size = _HEAD.size + max(n, 0) * self.row.size
            if len(buf) - pos < size:
                break
            if n >= 0:
                rows = []
                for k in range(n):
                    vals = self.row.unpack_from(buf, pos + _HEAD.size + k * self.row.size)
                    rows.append((vals[0], np.array(vals[1:], dtype=np.float64)))
                self._finish(job, rows)
            pos += size
        del buf[:pos]

    def _stop_children(self) -> None:
        for pid, _ in self.children.values():         # still running: cancelled, or we failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for fd in self.children:
            os.close(fd)
        self.children.clear()
        self.pids.clear()

    # -- child ----------------------------------------------------------------------------
    def _child(self, tok_r: int, tok_w: int, res_r: int, res_w: int) -> None:
        try:
            gc.disable()      # no finalizer of the parent's objects may run here
            os.close(tok_w)
            os.close(res_r)
            for fd in self.children:                  # the other children's result pipes
                os.close(fd)
            _quiet_signals()
            while True:
                tok = _read_token(tok_r)
                if tok is None:
                    break
                try:
                    rows = self.work(tok)
                except BaseException:
                    _write_all(res_w, _HEAD.pack(tok, -1))   # the parent redoes it and raises
                    break
                out = bytearray(_HEAD.pack(tok, len(rows)))
                for ident, vals in rows:
                    out += self.row.pack(int(ident), *map(float, vals))
                _write_all(res_w, out)
        except BaseException:
            pass
        finally:
            os._exit(0)


def _quiet_signals() -> None:
    """In a child: no inherited Python signal handler may run here (an app's SIGWINCH handler
    would poke the parent's event loop through the shared wakeup fd); Ctrl-C is the parent's."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    import faulthandler

    if faulthandler.is_enabled():     # a worker that dies (SIGBUS on a file truncated under it)
        faulthandler.disable()        # must not dump a traceback: its job is redone by the parent
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _feed(tok_w: int, n_jobs: int) -> None:
    try:
        for lo in range(0, n_jobs, 1024):
            _write_all(tok_w, np.arange(lo, min(lo + 1024, n_jobs), dtype="<i4").tobytes())
    except OSError:            # nothing to report from here: the parent sees the missing jobs
        pass
    finally:
        os.close(tok_w)


def _read_token(fd: int) -> int | None:
    data = os.read(fd, _TOKEN.size)
    if not data:
        return None
    return _TOKEN.unpack(data)[0]


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
