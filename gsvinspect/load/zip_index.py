"""Read a PyTorch zip checkpoint's directory ourselves, over a read-only memory map.

Why not `zipfile`: GPT-SoVITS's headered SoVITS exports overwrite the first two bytes of the
archive (`PK` becomes `05`, `06`, ...), so `zipfile` and `torch.load` refuse the first record,
and we never want to copy a multi-GB file just to put two bytes back. Parsing the central directory
(ZIP64 included) gives every record's data offset; tensors are then views of the mapping and
listing keys touches only the directory and the pickle.

Everything read from the file is bounds-checked against the file size before use.

Which bytes are the pickle and each tensor is decided exactly as torch's reader decides it
(``caffe2/serialize/inline_container.cc`` over miniz), or the file is refused as ambiguous:

* the end record is the last ``PK\\5\\6`` with 22 bytes after it in the last 64 KiB; a ZIP64
  locator in front of it always wins (miniz, like Python's zipfile, follows ZIP64 whenever it is
  there), and a classic record that names another directory than the ZIP64 one is refused;
* offsets are absolute (no adjustment for prepended bytes), data starts after the *local* header's
  name and extra field, sizes come from the central directory;
* names are looked up ASCII-case-insensitively (miniz's default): two records whose names differ
  only in case, or are equal, are refused, since which one torch reads depends on the record count;
* every record must sit in the folder named by the first record (``archive/``), as torch requires.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CDIR_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_MAX_COMMENT = 65535
_MAX_RECORDS = 2_000_000

# first two bytes GPT-SoVITS's my_save2 writes instead of "PK" (FORMATS.md §2.2)
HEADER_DIGITS = frozenset(f"0{i}".encode() for i in range(10))


_LOWER_TABLE = {ord(u): ord(l) for u, l in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")}


def ascii_lower(name: str) -> str:
    """How miniz compares names: ASCII letters folded, every other byte as is.

    (``str.lower`` folds exactly the ASCII letters of an ASCII string, 10x faster than translate.)
    """
    return name.lower() if name.isascii() else name.translate(_LOWER_TABLE)


@dataclass(frozen=True, slots=True)
class ZipRecord:
    name: str
    method: int          # 0 stored, 8 deflated, ...
    compressed_size: int
    size: int
    header_offset: int


class ZipIndex:
    """The records of a zip archive mapped read-only; `data(name)` is a zero-copy memoryview."""

    def __init__(self, path: Path, mm: mmap.mmap, file_size: int, records: dict[str, ZipRecord], prefix: str = "",
                 folded: dict[str, ZipRecord] | None = None):
        self.path = path
        self.mm = mm
        self.file_size = file_size
        self.records = records                      # exact name -> record, in directory order
        self.prefix = prefix                        # "archive/": the folder torch reads records from
        # ASCII-folded name -> record (`folded`: the same, already made by the directory reader)
        self._folded = folded if folded is not None else {ascii_lower(n): r for n, r in records.items()}
        self._data_offsets: dict[str, int] = {}
        # (st_dev, st_ino) of the file mapped, and when/what size `_check_not_shrunk` last saw
        self._ident: tuple[int, int] | None = None
        self._checked_at, self._checked_size = 0.0, 0

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, mm: mmap.mmap, file_size: int,
             file_id: tuple[int, ...] | None = None) -> "ZipIndex":
        """`file_id`: ``(st_dev, st_ino, ...)`` of the file mapped (`map_file`'s), which arms
        `_check_not_shrunk`; without it that check is off."""
        folded: dict[str, ZipRecord] = {}
        records = _read_central_directory(path, mm, file_size, folded)
        zi = cls(path, mm, file_size, records, _archive_prefix(path, records), folded)
        if file_id is not None:
            zi._ident = (file_id[0], file_id[1])
            zi._checked_at, zi._checked_size = time.monotonic(), file_size
        return zi

    # -- access -----------------------------------------------------------------------------
    def get(self, name: str) -> ZipRecord | None:
        """The record torch finds under `name` (ASCII case folded), or None."""
        return self._folded.get(ascii_lower(name))

    def record(self, name: str) -> ZipRecord:
        rec = self.get(name)
        if rec is None:
            raise CheckpointError(self.path, f"record {name!r} is missing from the archive")
        return rec

    def stored_record(self, name: str) -> ZipRecord:
        """The record, refused unless stored uncompressed (as torch.save writes every record)."""
        rec = self.record(name)
        if rec.method != 0:
            raise CheckpointError(
                self.path,
                f"record {name!r} is compressed (zip method {rec.method}); PyTorch checkpoints store records "
                "uncompressed, so this file was re-zipped or crafted",
            )
        return rec

    def data_offset(self, name: str) -> int:
        """Offset of the record's data, from its local header (validated; cached)."""
        off = self._data_offsets.get(name)
        if off is not None:
            return off
        rec = self.record(name)
        name = rec.name
        h = rec.header_offset
        if h + 30 > self.file_size:
            raise CheckpointError(self.path, f"record {name!r}: local header beyond end of file (truncated?)")
        self._check_not_shrunk(h + 30)
        local = bytes(self.mm[h:h + 30])
        sig = local[:4]
        if sig != _LOCAL_SIG and not (h == 0 and sig[:2] in HEADER_DIGITS and sig[2:] == b"\x03\x04"):
            raise CheckpointError(self.path, f"record {name!r}: bad local header signature (corrupt archive)")
        name_len, extra_len = struct.unpack_from("<HH", local, 26)
        off = h + 30 + name_len + extra_len
        if off + rec.compressed_size > self.file_size:
            raise CheckpointError(self.path, f"record {name!r} runs past the end of the file (truncated?)")
        self._data_offsets[name] = off
        return off

    def _check_not_shrunk(self, end: int) -> None:
        """Refuse to touch the mapping past the end of a file truncated in place since it was
        mapped (a trainer rewriting ``G_233333333333.pth`` under a running scan or drift pass):
        that would be SIGBUS, the interpreter dead. A path now naming another file is fine: the
        mapping holds the one opened. Local headers are read lazily, long after ``open``.

        One ``stat`` (2.7 µs) per 10 ms at most: a drift pass or a 20k-key diff reads thousands
        of headers, and a file checked 10 ms ago is checked again by the next read after that.
        """
        ident = self._ident
        if ident is None:
            return
        now = time.monotonic()
        if now - self._checked_at < 0.01 and end <= self._checked_size:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            return
        self._checked_at, self._checked_size = now, st.st_size
        if (st.st_dev, st.st_ino) == ident and st.st_size < end:
            raise CheckpointError(self.path, "file shrank since it was opened (changed by another program?)")

    def data(self, name: str) -> memoryview:
        """The stored bytes of an uncompressed record, without copying."""
        rec = self.stored_record(name)  # (stored records' sizes agree: checked with the directory)
        off = self.data_offset(rec.name)
        return memoryview(self.mm)[off:off + rec.size]


def _archive_prefix(path: Path, records: dict[str, ZipRecord]) -> str:
    """torch reads every record from the folder of the first one and refuses records elsewhere."""
    if not records:
        raise CheckpointError(path, "zip archive without any record: not a PyTorch checkpoint")
    first = next(iter(records))
    if "/" not in first:
        raise CheckpointError(path, f"first record {first!r} is not in a folder: not a PyTorch checkpoint "
                              "(torch refuses it)")
    prefix = first[: first.index("/") + 1]
    for name in records:
        if not name.startswith(prefix):
            raise CheckpointError(path, f"record {name!r} lies outside the archive folder {prefix!r} "
                                  "(torch refuses such a file)")
    return prefix


def _end_record(path: Path, mm: mmap.mmap, size: int) -> tuple[int, int, int]:
    """(number of records, directory size, directory offset), chosen as miniz chooses them."""
    tail_start = max(0, size - (22 + _MAX_COMMENT))
    eocd = mm.rfind(_EOCD_SIG, tail_start, max(0, size - 18))  # the last one with 22 bytes after it
    if eocd < 0:
        raise CheckpointError(path, "not a zip archive: no end-of-central-directory record (truncated or not a PyTorch checkpoint)")
    (_, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _comment_len) = struct.unpack_from("<4sHHHHIIH", mm, eocd)
    loc = eocd - 20
    if loc >= 56 and bytes(mm[loc:loc + 4]) == _ZIP64_LOCATOR_SIG:
        (z64_off, n_disks) = struct.unpack_from("<QI", mm, loc + 8)
        if z64_off > size - 56 or bytes(mm[z64_off:z64_off + 4]) != _ZIP64_EOCD_SIG:
            raise CheckpointError(path, "bad ZIP64 end-of-central-directory record (corrupt archive)")
        if n_disks != 1:
            raise CheckpointError(path, "multi-disk zip archives are not supported")
        (z_disk, z_cd_disk, z_n_disk, z_n_total, z_cd_size, z_cd_offset) = struct.unpack_from("<IIQQQQ", mm, z64_off + 16)
        # torch follows the ZIP64 record; a classic record that says otherwise makes the file mean
        # two things (another reader would see another pickle): refuse it
        for classic, z64, marker in ((n_total, z_n_total, 0xFFFF), (n_disk, z_n_disk, 0xFFFF),
                                     (cd_size, z_cd_size, 0xFFFFFFFF), (cd_offset, z_cd_offset, 0xFFFFFFFF)):
            if classic != marker and classic != z64:
                raise CheckpointError(path, "ambiguous zip archive: its ZIP64 and classic end records name "
                                      "different central directories (crafted)")
        disk, cd_disk, n_disk, n_total, cd_size, cd_offset = z_disk, z_cd_disk, z_n_disk, z_n_total, z_cd_size, z_cd_offset
    elif n_total == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
        raise CheckpointError(path, "ZIP64 archive without a ZIP64 locator (corrupt archive)")
    if disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise CheckpointError(path, "multi-disk zip archives are not supported")
    if n_total > _MAX_RECORDS:
        raise CheckpointError(path, f"archive declares {n_total} records; refusing (limit {_MAX_RECORDS})")
    if cd_offset + cd_size > size:
        raise CheckpointError(path, "central directory lies beyond the end of the file (truncated download?)")
    return n_total, cd_size, cd_offset


def _read_central_directory(path: Path, mm: mmap.mmap, size: int,
                            folded: dict[str, ZipRecord] | None = None) -> dict[str, ZipRecord]:
    """Records by exact name; `folded` (when given) is filled with the same by ASCII-folded name."""
    n_total, cd_size, cd_offset = _end_record(path, mm, size)
    records: dict[str, ZipRecord] = {}
    if folded is None:
        folded = {}
    # parsed through a view (no copy, no per-entry mmap slicing), released before returning:
    # a live export would block mm.close()
    with memoryview(mm) as view, view[cd_offset:cd_offset + cd_size] as cdir:
        return _read_records(path, cdir, n_total, cd_offset, size, records, folded)


def _read_records(path: Path, cdir: memoryview, n_total: int, cd_offset: int, size: int,
                  records: dict[str, ZipRecord], folded: dict[str, ZipRecord]) -> dict[str, ZipRecord]:
    pos = cd_offset
    end = cd_offset + len(cdir)
    unpack = struct.Struct("<4s6xH8xIIHHH8xI").unpack_from
    for _ in range(n_total):
        rel = pos - cd_offset
        if pos + 46 > end:
            raise CheckpointError(path, "corrupt central directory entry")
        (sig, method, csize, usize, nlen, elen, clen, hoff) = unpack(cdir, rel)
        if sig != _CDIR_SIG:
            raise CheckpointError(path, "corrupt central directory entry")
        name_bytes = bytes(cdir[rel + 46:rel + 46 + nlen])
        pos += 46 + nlen + elen + clen
        if pos > end:
            raise CheckpointError(path, "corrupt central directory entry (runs past the directory)")
        if 0xFFFFFFFF in (csize, usize, hoff):
            extra = bytes(cdir[rel + 46 + nlen:rel + 46 + nlen + elen])
            usize, csize, hoff = _zip64_extra(path, extra, usize, csize, hoff)
        name = name_bytes.decode("utf-8", "surrogateescape")  # one string per byte sequence, like miniz
        if name in records:
            raise CheckpointError(path, f"archive holds the record {name!r} twice (crafted or corrupt)")
        low = ascii_lower(name)
        if low in folded:
            raise CheckpointError(path, f"ambiguous zip archive: record {name!r} differs from another only in "
                                  "letter case, and torch looks names up ignoring case (crafted)")
        if hoff >= size or hoff + csize > size:
            raise CheckpointError(path, f"record {name!r} lies beyond the end of the file (truncated?)")
        if method == 0 and csize != usize:
            raise CheckpointError(path, f"record {name!r}: stored record with inconsistent sizes")
        folded[low] = records[name] = ZipRecord(name, method, csize, usize, hoff)
    return records


def _zip64_extra(path: Path, extra: bytes, usize: int, csize: int, hoff: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, ln = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4:i + 4 + ln]
        if tag == 0x0001:
            vals = []
            j = 0
            for present in (usize == 0xFFFFFFFF, csize == 0xFFFFFFFF, hoff == 0xFFFFFFFF):
                if present:
                    if j + 8 > len(body):
                        raise CheckpointError(path, "truncated ZIP64 extra field")
                    vals.append(struct.unpack_from("<Q", body, j)[0])
                    j += 8
                else:
                    vals.append(None)
            return (vals[0] if vals[0] is not None else usize,
                    vals[1] if vals[1] is not None else csize,
                    vals[2] if vals[2] is not None else hoff)
        i += 4 + ln
    raise CheckpointError(path, "ZIP64 sizes without a ZIP64 extra field (corrupt archive)")


# a folder given where a file is expected: `scan` is the command that reads folders
_IS_DIR = "is a directory, not a checkpoint file (`gsvinspect scan DIR` lists the checkpoints under it)"


def map_file(path: Path) -> tuple[mmap.mmap, int, tuple[int, int, int, int]]:
    """Open `path` read-only and map it copy-on-write (writes, if any, never reach the file).

    Returns ``(mapping, size, file_id)``, file_id being ``(st_dev, st_ino, st_size, st_mtime_ns)``
    of the file mapped, so a reader that reopens the path can prove it reads the same file.
    Raises CheckpointError for what the user can fix (an empty file included: it cannot be mapped).
    """
    try:
        # O_NONBLOCK: opening a FIFO (or a device) for reading would otherwise wait forever
        # before fstat could tell us it is not a regular file
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except IsADirectoryError:
        raise CheckpointError(path, _IS_DIR) from None
    except PermissionError:
        raise CheckpointError(path, "permission denied") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise CheckpointError(path, _IS_DIR)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(path, "is not a regular file")
        if st.st_size == 0:
            raise CheckpointError(path, "empty file (0 bytes)")
        try:
            mm = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            raise CheckpointError(path, f"cannot map the file: {exc}") from None
        return mm, st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# what torch.load itself checks before reading the pickle

MIN_VERSION, MAX_VERSION = 1, 10   # the file format versions torch 2.x reads (inline_container.h)


def check_torch_records(path: Path, zi: "ZipIndex") -> None:
    """Refuse what torch.load refuses, or reads differently, before reading the pickle.

    torch reads ``data.pkl``, ``version`` (``.data/version`` first), ``byteorder`` and
    ``.storage_alignment`` from the archive folder, names compared ignoring case; a
    ``constants.pkl`` makes it a TorchScript archive, which torch.load hands to ``torch.jit.load``.
    """
    prefix = zi.prefix
    if zi.get(prefix + "data.pkl") is None:
        raise CheckpointError(path, "zip archive without data.pkl: not a PyTorch checkpoint")
    if zi.get(prefix + "constants.pkl") is not None:
        raise CheckpointError(path, "TorchScript archive (constants.pkl): torch.load would pass it to torch.jit.load, "
                              "which runs its code; gsvinspect reads only torch.save checkpoints")
    name = prefix + ".data/version" if zi.get(prefix + ".data/version") is not None else prefix + "version"
    if zi.get(name) is None:
        raise CheckpointError(path, "archive without a version record: torch refuses it")
    version = _small_record(path, zi, name)
    num = _stoull(version)
    if num is None or not MIN_VERSION <= num <= MAX_VERSION:
        raise CheckpointError(path, f"archive format version {version[:20]!r} is not one torch reads "
                              f"({MIN_VERSION}..{MAX_VERSION}); torch refuses the file")
    if zi.get(prefix + "byteorder") is not None:
        order = _small_record(path, zi, prefix + "byteorder")
        if order == b"big":
            raise CheckpointError(path, "big-endian checkpoint; not supported (torch would byteswap every tensor)")
        if order != b"little":
            raise CheckpointError(path, f"byteorder record {order[:20]!r} is neither 'little' nor 'big'; torch refuses it")
    if zi.get(prefix + ".storage_alignment") is not None:
        raw = _small_record(path, zi, prefix + ".storage_alignment")
        try:
            int(raw)
        except ValueError:
            raise CheckpointError(path, f".storage_alignment {raw[:20]!r} is not a number; torch refuses it") from None


def _small_record(path: Path, zi: "ZipIndex", name: str) -> bytes:
    rec = zi.stored_record(name)
    if rec.size > 64:
        raise CheckpointError(path, f"record {rec.name!r} is {rec.size} bytes; torch writes a few")
    return bytes(zi.data(name))


def _stoull(raw: bytes) -> int | None:
    """The number C++'s std::stoull reads from `raw` (None where it throws; negatives wrap)."""
    text = raw.decode("latin1").lstrip(" \t\n\v\f\r")
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = len(text) - len(text.lstrip("0123456789"))
    if digits == 0:
        return None
    value = int(text[:digits])
    return value if sign > 0 or value == 0 else (1 << 64) - value


