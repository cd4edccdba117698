"""Find the checkpoints under some paths without following links out of the tree.

A file given by name is always taken. Under a folder (any depth), a file is taken when its name
ends in ``.pth``/``.ckpt``/``.safetensors`` or its first bytes look like a checkpoint (a zip
local header with ``PK`` or a GPT-SoVITS 2-byte version header, a pickle protocol mark, a
safetensors length + ``{``). Folder links are never followed; a file link is taken only when it
resolves inside the folder being walked (so a link to ``/etc`` or to another disk is skipped, and
said so). The same file reached twice (hard link, link inside the tree) is listed once. The
webui's feature folders (``3-bert``, ``4-cnhubert``, ``5-wav32k``, ``7-sv_cn``) are not entered and
audio/text files are not sniffed.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = (".pth", ".ckpt", ".safetensors")
SKIP_DIRS = {".git", "__pycache__", ".hg", ".svn", "node_modules",
             # the webui's per-utterance feature folders under logs/<exp>/ hold thousands of
             # torch.save'd tensors (.pt) that are not checkpoints
             "3-bert", "4-cnhubert", "5-wav32k", "7-sv_cn"}
# never sniffed (audio, text, tables): a run folder holds many of these
NOT_SNIFFED = (".wav", ".mp3", ".flac", ".ogg", ".txt", ".json", ".list", ".tsv", ".yaml", ".yml", ".log",
               ".md", ".csv", ".npy", ".png", ".jpg", ".py")


@dataclass
class Walked:
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)    # path, why
    missing: list[Path] = field(default_factory=list)                # named on the command line, absent


def looks_like_checkpoint(head: bytes) -> bool:
    """First bytes of a torch zip (plain or headered), a legacy pickle, or a safetensors file."""
    if len(head) >= 4 and head[2:4] == b"\x03\x04" and (head[:2] == b"PK" or head[:2].isdigit()):
        return True
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if len(head) >= 10:
        (n,) = struct.unpack("<Q", head[:8])
        return 2 <= n < 100_000_000 and head[8:10] in (b'{"', b"{ ", b"{\n")
    return False


def _sniff(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return looks_like_checkpoint(os.read(fd, 16))
    except OSError:
        return False
    finally:
        os.close(fd)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk(paths) -> Walked:
    """Checkpoint files under `paths` (files and folders), in a stable order (sorted per folder)."""
    out = Walked()
    seen: set[tuple[int, int]] = set()

    def take(p: Path, st: os.stat_result) -> None:
        ident = (st.st_dev, st.st_ino)
        if ident not in seen:
            seen.add(ident)
            out.files.append(p)

    for arg in paths:
        p = Path(arg)
        try:
            st = p.stat()
        except OSError:
            if p.is_symlink():
                out.skipped.append((p, "broken link"))
            else:
                out.missing.append(p)
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk_dir(p, out, take)
        else:
            take(p, st)
    return out


def _walk_dir(top: Path, out: Walked, take) -> None:
    root = os.path.realpath(top)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=None):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for d in dirnames:
            full = Path(dirpath, d)
            if full.is_symlink():
                out.skipped.append((full, "folder link not followed"))
        for name in sorted(filenames):
            full = Path(dirpath, name)
            try:
                lst = full.lstat()
                if stat.S_ISLNK(lst.st_mode):
                    real = os.path.realpath(full)
                    if not _inside(real, root):
                        if name.endswith(SUFFIXES):
                            out.skipped.append((full, f"link to {real}, outside {top}"))
                        continue
                    lst = os.stat(full)
                if not stat.S_ISREG(lst.st_mode):
                    continue
            except OSError:
                continue
            low = name.lower()
            if low.endswith(SUFFIXES) or (lst.st_size >= 16 and not low.endswith(NOT_SNIFFED) and _sniff(full)):
                take(full, lst)
