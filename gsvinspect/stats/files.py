"""Reading tensors for the engine: ``pread`` from a second fd of the mapped file, or the mapping.

:class:`_Files` holds read-only fds proven to be the files that were opened; :class:`_Src` is one
side of a piece of work (the flat mapped array and where to ``pread`` it from);
:func:`_sources` makes them for a planned target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CheckpointError
from .kernels import _FAST_KINDS, _flat

if TYPE_CHECKING:
    from .plan import _Target

def _sources(pre_ck, ft_ck, t: _Target, side: str, files: "_Files") -> tuple:
    """``(pre _Src | None, ft _Src | None)`` of a piece of `t` (both paths)."""
    sa = sb = None
    if side in ("pair", "pre"):
        sa = files.src(pre_ck, t.pre_key, _flat(pre_ck, t.pre_key), t.kind_pre)
    if side in ("pair", "ft"):
        sb = files.src(ft_ck, t.ft_key, _flat(ft_ck, t.ft_key), t.kind_ft)
    return sa, sb


@dataclass(slots=True, frozen=True)
class _Src:
    """One side of a CPU job: the mapped flat array, and where to ``pread`` it from if possible.

    Reading a block with ``pread`` into a reused buffer costs about half of faulting the same
    pages of the mapping in, and leaves the block in cache for the kernel.
    """

    arr: np.ndarray                  # flat view of the mapping (dtype, length; the fallback)
    fd: int | None = None            # an fd of the same file, when it can be read that way
    offset: int = 0                  # file offset of element 0
    path: str = ""

    def block(self, i: int, j: int, raw: np.ndarray) -> np.ndarray:
        """Elements [i, j) as an array of the source's dtype (a view of `raw` when read)."""
        if self.fd is None:
            return self.arr[i:j]
        size = self.arr.itemsize
        view = raw[:(j - i) * size]
        pread_exact(self.fd, view, self.offset + i * size, self.path)
        return view.view(self.arr.dtype)


def pread_exact(fd: int, view: np.ndarray, offset: int, path) -> None:
    """Fill `view` (a uint8 buffer) from `fd` at `offset`; a file that ends first (truncated by
    another program since it was opened) is a CheckpointError naming `path`."""
    got, want = 0, view.shape[0]
    while got < want:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            raise CheckpointError(path, "file shrank while being read (changed by another program?)")
        got += n


class _Files:
    """Read-only fds of the checkpoints' files for ``pread``, proven to be the files mapped.

    A path that now names another file (replaced since it was opened) is read through its
    mapping, which still holds the file that was opened. The same file changed in place reads
    the same either way, but ``pread`` turns a truncated file into a clean error where the
    mapping would die of SIGBUS.
    """

    def __init__(self, *cks):
        self.fds: dict[int, int | None] = {}
        for ck in cks:
            if id(ck) not in self.fds:
                self.fds[id(ck)] = self._open(ck)

    @staticmethod
    def _open(ck) -> int | None:
        ident = getattr(ck, "file_id", None)
        if ident is None or not hasattr(os, "preadv"):
            return None
        try:
            fd = os.open(ck.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != tuple(ident[:2]):
            os.close(fd)
            return None
        if st.st_size < ident[2]:     # touching the mapping past the new end would be a SIGBUS
            os.close(fd)
            raise CheckpointError(ck.path, "file shrank since it was opened (changed by another program?)")
        return fd

    def src(self, ck, key: str, arr: np.ndarray, kind: str) -> _Src:
        fd = self.fds.get(id(ck))
        span = ck.span(key) if fd is not None and kind in _FAST_KINDS else None
        if span is None or span[1] != arr.nbytes:
            return _Src(arr)
        return _Src(arr, fd, span[0], str(ck.path))

    def close(self) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)
        self.fds.clear()
