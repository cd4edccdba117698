"""Write OUT so that, whatever happens, OUT is either absent/untouched or the complete, verified file.

Why each step: the temp file sits in OUT's own directory (a rename across filesystems is a copy);
it is fsynced before the rename and the directory after it (a crash can otherwise leave a renamed
but empty file); the caller verifies the temp file before it becomes OUT; inputs are compared by
device and inode, so a symlink, a ``..`` detour or a hard link to an input is refused; SIGTERM and
SIGINT remove the temp file. A ``kill -9`` cannot be caught: the temp file then stays, named
``.OUT.gsvinspect-tmp-<pid>`` so it is obvious, and the next export to the same OUT removes it.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from ..errors import ExportError

TEMP_TAG = ".gsvinspect-tmp-"


class Interrupted(ExportError):
    """SIGTERM/SIGINT arrived while writing; the temp file was removed."""

    exit_code = 130

    def __init__(self, path, signum: int):
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        super().__init__(path, f"interrupted by {name}; nothing was written")


def temp_path_for(out: Path, pid: int | None = None) -> Path:
    return out.parent / f".{out.name}{TEMP_TAG}{os.getpid() if pid is None else pid}"


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_dev == b.st_dev and a.st_ino == b.st_ino


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *,
                 force: bool = False) -> Path:
    """Refuse an OUT that is (or reaches) an input, or that exists without `force`; returns OUT."""
    out = Path(out)
    if str(out) in ("", "."):
        raise ExportError(out, "no output file given")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ExportError(out, f"directory {str(parent)!r} does not exist")
    in_stats = []
    for p in inputs:
        try:
            in_stats.append((Path(p), os.stat(p)))
        except OSError:
            continue
    real_out = os.path.realpath(out)
    for p, st in in_stats:
        if os.path.realpath(p) == real_out:
            raise ExportError(out, f"refusing to write onto an input file ({p})")
    if os.path.lexists(out):
        try:
            st_out = os.stat(out)
        except OSError:  # dangling symlink: replacing the link is harmless
            st_out = None
        if st_out is not None:
            for p, st in in_stats:
                if _same_file(st, st_out):
                    raise ExportError(out, f"refusing to write onto an input file ({p}, same file by "
                                           f"device/inode: a link to it)")
            if os.path.isdir(out):
                raise ExportError(out, "is a directory")
        if not force:
            raise ExportError(out, "already exists (use --force to replace it)")
    return out


def remove_stale_temps(out: Path) -> list[Path]:
    """Remove temp files of earlier runs for this OUT whose process is gone (e.g. after kill -9)."""
    removed = []
    pattern = re.compile(re.escape(f".{out.name}{TEMP_TAG}") + r"(\d+)$")
    try:
        names = os.listdir(out.parent if str(out.parent) else ".")
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        p = out.parent / name
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not supported here (e.g. Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicOutput:
    """Context manager: ``with AtomicOutput(out, inputs=..., force=...) as w: write(w.file); w.commit(verify)``.

    Leaving the block without `commit` (an exception, a signal) removes the temp file; OUT is untouched.
    """

    def __init__(self, out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                 force: bool = False):
        self.inputs = [Path(p) for p in inputs]
        self.force = force
        self.out = check_output(out, self.inputs, force=force)
        self.temp = temp_path_for(self.out)
        self.file: BinaryIO | None = None
        self.committed = False
        self._old_handlers: dict[int, object] = {}
        self._input_ids = []
        for p in self.inputs:
            try:
                self._input_ids.append(os.stat(p))
            except OSError:
                pass

    def __enter__(self) -> AtomicOutput:
        remove_stale_temps(self.out)
        self._install_signals()
        try:
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            os.unlink(self.temp)
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            self._restore_signals()
            raise ExportError(self.out, f"cannot create a temp file next to it: {exc.strerror}") from None
        st = os.fstat(fd)
        if any(_same_file(st, s) for s in self._input_ids):  # paranoia: never write into an input
            os.close(fd)
            self._restore_signals()
            raise ExportError(self.out, "temp file is an input file")
        self.file = os.fdopen(fd, "wb", buffering=1024 * 1024)
        return self

    def commit(self, verify: Callable[[Path], None] | None = None) -> Path:
        """fsync, run `verify(temp)` (raise to abort), rename onto OUT, fsync the directory."""
        assert self.file is not None
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if verify is not None:
            verify(self.temp)
        # re-check: something may have appeared at OUT while we were writing
        check_output(self.out, self.inputs, force=self.force)
        os.replace(self.temp, self.out)
        self.committed = True
        fsync_dir(self.out.parent if str(self.out.parent) else Path("."))
        return self.out

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.file is not None and not self.file.closed:
                try:
                    self.file.close()
                except OSError:
                    pass
            if not self.committed:
                try:
                    os.unlink(self.temp)
                except FileNotFoundError:
                    pass
        finally:
            self._restore_signals()

    # -- signals: only the main thread may install handlers (the TUI exports from a worker thread)
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except (ValueError, OSError):
                pass

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)  # type: ignore[arg-type]
            except (ValueError, OSError, TypeError):
                pass
        self._old_handlers.clear()

    def _on_signal(self, signum, frame) -> None:
        raise Interrupted(self.out, signum)
