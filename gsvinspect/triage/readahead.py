"""Read-ahead advice for a cold disk: ask the kernel for the byte ranges a metadata scan is about
to touch, all at once, so they are read in parallel rather than one disk latency after another.

A metadata read of a torch zip touches its head (``data.pkl`` is the first record), its tail (the
central directory and end record) and the few small tensors the copy check samples. Without
advice each of these is a page fault served in turn (~10 of them per file); with
``POSIX_FADV_WILLNEED`` issued for every file first, the device queue holds them together.
Linux only (``os.posix_fadvise``); elsewhere, and on any OSError, nothing happens.
"""

from __future__ import annotations

import os
import stat

HEAD = 1 << 20     # data.pkl
TAIL = 1 << 20     # the zip's central directory and end record
_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def advise(path, ranges) -> None:
    """WILLNEED for `ranges` ((offset, nbytes); nbytes 0: to the end) of the file at `path`."""
    fadvise = getattr(os, "posix_fadvise", None)
    if fadvise is None or not ranges:
        return
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return
    try:
        for off, n in ranges:
            fadvise(fd, off, n, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def heads_and_tails(files) -> None:
    """Advise the head and tail of every regular file of `files` ((path, stat_result) pairs)."""
    if getattr(os, "posix_fadvise", None) is None:
        return
    for p, st in files:
        if stat.S_ISREG(st.st_mode):
            size = st.st_size
            advise(p, [(0, min(size, HEAD))] + ([(max(HEAD, size - TAIL), 0)] if size > HEAD else []))


def samples(ck, keys) -> None:
    """Advise the storage records of the tensors `keys` of an open Checkpoint."""
    if getattr(os, "posix_fadvise", None) is None:
        return
    ranges = []
    for k in keys:
        try:
            r = ck.storage_range(k)
        except Exception:       # advice only: a record the reader will refuse is its business
            r = None
        if r is not None:
            ranges.append(r)
    advise(ck.path, ranges)
