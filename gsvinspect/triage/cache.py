"""The scan cache: ``scan`` remembers what it read of files that have not changed since.

What is kept, per file: the row ``read_entry`` made of it *before* relations (base and copies are
worked out again on every scan, from all the files of that scan) and the keys, shapes and copy
fingerprints relations need (``FileMeta``). An unreadable or refused file is kept as such: the
same bytes get the same verdict. Failures that may pass (permission denied, no such file, an
internal error, out of memory) are not kept.

Key: the absolute path (``os.path.abspath``, not the real path: the experiment is read from the
path) and the file's identity ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``; a hit
needs all five equal. Rewriting a file in place with the same size and its mtime set back still
moves its ctime, which nobody can set. A file changed within ``RACY_NS`` of being read is not
kept (a second write within the file system's timestamp tick would look unchanged), nor one
whose identity moved while it was read. Every cache file also names the code that wrote it
(``code_stamp``: the version and the name, size and mtime of every ``.py`` and ``.json`` of the package), so
any code change, an editable install's included, starts afresh.

Where: ``$GSVINSPECT_CACHE_DIR``, else ``$XDG_CACHE_HOME/gsvinspect``, else
``~/.cache/gsvinspect``; one JSON file per folder of checkpoints (never pickle: a cache file is
data, and only read when it belongs to this user and nobody else can write it or its folder).
Written atomically (temp file in the same folder, fsync, rename), mode 0600 in a 0700 folder.
Best effort throughout: an OSError, a corrupt or foreign file, means "no cache", silently.
Entries of files this scan did not see are kept (another scan may name them); a folder's file
keeps its ``MAX_PER_FOLDER`` most recently seen entries and the cache its ``MAX_FOLDERS`` most
recently used folder files. Off: ``scan --no-cache`` or ``GSVINSPECT_NO_CACHE=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path

from .entry import ScanEntry
from .relations import FileMeta

FORMAT = "gsvinspect.scancache/2"
MAX_PER_FOLDER = 1000
MAX_FOLDERS = 256
RACY_NS = 2_000_000_000          # FAT's mtime tick is 2 s; ext4's is a few ms
# errors that say nothing about the bytes (they may not happen next time): never kept
TRANSIENT = ("no such file", "permission denied", "cannot open:", "cannot map the file", "internal error",
             "cannot be read (")
RELATION_FIELDS = ("base", "base_rule", "copy_of", "copy_note")
# the cached fields of a ScanEntry and the JSON types each may hold
_TYPES = {
    "size": (int,), "layout": (str, type(None)), "version": (str, type(None)), "container": (str, type(None)),
    "model": (str, type(None)), "stage": (str,), "experiment": (str,), "epoch": (int, type(None)),
    "step": (int, type(None)), "epoch_from": (str, type(None)), "step_from": (str, type(None)),
    "dtypes": (dict,), "n_tensors": (int,), "scaler": (bool, type(None)), "base_use": (str,),
    "missing": (list,), "config_base": (str, type(None)), "error": (str, type(None)), "refused": (bool,),
}


def enabled() -> bool:
    return os.environ.get("GSVINSPECT_NO_CACHE", "").strip() in ("", "0")


def cache_dir() -> Path:
    d = os.environ.get("GSVINSPECT_CACHE_DIR")
    if d:
        return Path(d)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "gsvinspect"


@lru_cache(maxsize=1)
def code_stamp() -> str:
    """This code's stamp: its version and every .py and .json file of the package (``stamp_of``;
    the key manifests under data/ decide a row's ``missing``)."""
    from .. import __version__

    return stamp_of(Path(__file__).resolve().parents[1], __version__)


def stamp_of(root: Path, version: str) -> str:
    """`version` and a digest of (relative name, size, mtime_ns) of every .py and .json file under
    `root` (not in __pycache__)."""
    h = hashlib.blake2b(digest_size=12)
    stack = [str(root)]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for ent in sorted(it, key=lambda x: x.name):
                if ent.is_dir(follow_symlinks=False):
                    if ent.name != "__pycache__":
                        stack.append(ent.path)
                elif ent.name.endswith((".py", ".json")):
                    st = ent.stat()
                    h.update(f"{os.path.relpath(ent.path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"{version}:{h.hexdigest()}"


def identity(st: os.stat_result) -> list:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _mine(st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else (a cache others can write could hide a
    hostile file behind a benign row)."""
    return (not hasattr(os, "getuid") or st.st_uid == os.getuid()) and not st.st_mode & 0o022


def _entry_ok(d) -> bool:
    if not isinstance(d, dict) or len(d) != len(_TYPES):
        return False
    for k, types in _TYPES.items():
        v = d.get(k, ...)
        if type(v) not in types:
            return False
    return True


def _digest(shapes: dict) -> str:
    return hashlib.blake2b(json.dumps(shapes, separators=(",", ":")).encode(), digest_size=16).hexdigest()


class _Folder:
    """One folder's cache file: files (abspath -> [identity, last seen, entry, meta]) and the key
    tables their metas name (digest -> {key: shape}: the files of one run share a few, so each
    is stored, loaded and checked once)."""

    __slots__ = ("files", "tables", "checked")

    def __init__(self, files: dict | None = None, tables: dict | None = None):
        self.files = {} if files is None else files
        self.tables = {} if tables is None else tables
        self.checked: dict[str, bool] = {}

    def meta(self, m) -> "FileMeta | None | bool":
        """The FileMeta a record's [table digest, fingerprint] names; False when malformed."""
        if m is None:
            return None
        if not (isinstance(m, list) and len(m) == 2 and type(m[0]) is str and isinstance(m[1], dict)
                and all(type(v) is str for v in m[1].values())):
            return False
        ok = self.checked.get(m[0])
        if ok is None:
            t = self.tables.get(m[0])
            ok = self.checked[m[0]] = isinstance(t, dict) and all(type(v) is str for v in t.values())
        return FileMeta(self.tables[m[0]], m[1]) if ok else False


class ScanCache:
    """The cache files of the folders one scan reads: ``get`` before reading a file, ``put``
    after, ``save`` once at the end."""

    def __init__(self, root: Path, stamp: str):
        self.root = root
        self.stamp = stamp
        self.folders: dict[str, _Folder] = {}
        self.dirty: set[str] = set()
        self.used: set[str] = set()
        self.now = int(time.time())

    @classmethod
    def open(cls) -> "ScanCache | None":
        if not enabled():
            return None
        try:
            return cls(cache_dir(), code_stamp())
        except (OSError, ValueError, RuntimeError):
            return None

    def _name(self, folder: str) -> Path:
        return self.root / (hashlib.blake2b(folder.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
                            + ".json")

    def _folder(self, folder: str) -> _Folder:
        f = self.folders.get(folder)
        if f is None:
            f = self.folders[folder] = self._load(folder)
        return f

    def _load(self, folder: str) -> _Folder:
        try:
            if not _mine(os.stat(self.root)):
                return _Folder()
            with open(self._name(folder), "rb") as fh:
                if not _mine(os.fstat(fh.fileno())):
                    return _Folder()
                doc = json.loads(fh.read())
        except (OSError, ValueError, UnicodeError, RecursionError):
            self.dirty.add(folder)       # missing or corrupt: written afresh
            return _Folder()
        if not (isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("stamp") == self.stamp
                and doc.get("folder") == folder and isinstance(doc.get("files"), dict)
                and isinstance(doc.get("tables"), dict)):
            self.dirty.add(folder)
            return _Folder()
        self.used.add(folder)
        return _Folder(doc["files"], doc["tables"])

    def get(self, path: str, st: os.stat_result):
        """(ScanEntry, FileMeta or None) of `path` (absolute) when kept for this identity, else None."""
        f = self._folder(os.path.dirname(path))
        rec = f.files.get(path)
        if not (isinstance(rec, list) and len(rec) == 4 and rec[0] == identity(st) and _entry_ok(rec[2])):
            return None
        meta = f.meta(rec[3])
        if meta is False:
            return None
        rec[1] = self.now
        return ScanEntry(path=Path(path), **rec[2]), meta

    def put(self, path: str, before: os.stat_result, after: os.stat_result | None, e: ScanEntry,
            meta: FileMeta | None) -> None:
        """Keep what was read of `path` (identity `before` the read, `after` it), unless it may
        not hold next time."""
        ident = identity(before)
        if after is None or identity(after) != ident:
            return
        if max(before.st_mtime_ns, before.st_ctime_ns) > time.time_ns() - RACY_NS:
            return
        if e.error is not None and e.error.startswith(TRANSIENT):
            return
        d = e.as_dict()
        for k in ("path", *RELATION_FIELDS):
            del d[k]
        folder = os.path.dirname(path)
        f = self._folder(folder)
        m = None
        if meta is not None:
            digest = _digest(meta.shapes)
            f.tables.setdefault(digest, meta.shapes)
            f.checked[digest] = True
            m = [digest, meta.fingerprint]
        f.files[path] = [ident, self.now, d, m]
        self.dirty.add(folder)

    def save(self) -> None:
        """Write the folders that changed, mark the others used; never raises an OSError."""
        try:
            if self.dirty:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
            if not _mine(os.stat(self.root)):
                return
            for folder in self.dirty:
                self._write(folder, self.folders.get(folder) or _Folder())
            for folder in self.used - self.dirty:
                try:
                    os.utime(self._name(folder))     # least recently used folders go first
                except OSError:
                    pass
            if self.dirty:
                self._trim()
        except OSError:
            pass

    def _write(self, folder: str, f: _Folder) -> None:
        files = {p: r for p, r in f.files.items() if isinstance(r, list) and len(r) == 4}
        if len(files) > MAX_PER_FOLDER:
            keep = sorted(files, key=lambda p: files[p][1] if isinstance(files[p][1], int) else 0)[-MAX_PER_FOLDER:]
            files = {p: files[p] for p in keep}
        named = {r[3][0] for r in files.values() if isinstance(r[3], list) and r[3] and type(r[3][0]) is str}
        tables = {k: t for k, t in f.tables.items() if k in named}
        data = json.dumps({"format": FORMAT, "stamp": self.stamp, "folder": folder, "tables": tables,
                           "files": files}, separators=(",", ":")).encode()
        import tempfile     # (a 7 ms import; a scan that only hits never writes)

        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")    # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._name(folder))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _trim(self) -> None:
        """Drop the least recently used folder files beyond MAX_FOLDERS (never one of this scan)."""
        mine = {self._name(f).name for f in self.folders}
        olds, stale = [], []
        with os.scandir(self.root) as it:
            for ent in it:
                if not ent.name.endswith(".json") or ent.name in mine:
                    continue
                mtime = ent.stat().st_mtime_ns
                if not ent.name.startswith("."):
                    olds.append((mtime, ent.path))
                elif ent.name.startswith(".tmp-") and mtime < time.time_ns() - 3600 * 10**9:
                    stale.append(ent.path)            # left by a scan killed mid-write
        extra = len(olds) + len(mine) - MAX_FOLDERS
        for p in stale + [p for _, p in sorted(olds)[:max(0, extra)]]:
            try:
                os.unlink(p)
            except OSError:
                pass
