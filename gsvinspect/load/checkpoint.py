"""One checkpoint model for every GPT-SoVITS file: open lazily, safely, and say what it is.

`open_checkpoint` maps the file, reads the zip directory (or safetensors header) and the pickle
with the restricted unpickler; tensors stay in the file until `array()`/`tensor()` asks for them.
Layout and version detection live in `detect.py`; this module is the container plumbing.

A little over 500 lines: opening (zip, bare pickle, safetensors, --trust), the hand-off to the app
(`preopen`) and the tensor accessors (`array`, `tensor`, `span`, `span_bytes`) share the Checkpoint's mapping and
file identity checks; split apart, each would need the private state of the others.
"""

from __future__ import annotations

import os

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import CheckpointError
from ..meta import DTYPE_SIZES, Layout, TensorInfo
from .safe_unpickle import Opaque, StorageRef, TensorRef, safe_loads
from .safetensors_reader import looks_like_safetensors, read_safetensors
from .zip_index import HEADER_DIGITS, ZipIndex, ascii_lower, check_torch_records, map_file

SCALER_KEYS = ("MixedPrecision", "MixedPrecisionPlugin", "native_amp_scaling_state",
               "scaler", "scaler_state_dict", "grad_scaler", "amp_scaler")
_SCALER_FIELDS = {"scale", "growth_factor", "backoff_factor", "growth_interval"}

_NUMPY_DTYPES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "int64": "<i8",
    "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1", "bool": "?", "complex64": "<c8",
    "complex128": "<c16", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
    "float8_e4m3fn": "u1", "float8_e5m2": "u1",
}

_MAX_DEPTH = 200
_CONVERTED = "converted"  # materialize's memo key (never an id) for the objects `convert` made
KNOWN_HEADERS = frozenset(f"0{i}".encode() for i in range(7))


@dataclass
class ScalerState:
    """AMP GradScaler state found in a checkpoint, and where."""

    path: tuple[str, ...]
    state: dict

    @property
    def where(self) -> str:
        return "/".join(self.path)


@dataclass
class Checkpoint:
    """A lazily opened checkpoint; see /tmp contract or README for the fields' meaning."""

    path: Path
    size: int
    container: str                      # torch-zip | torch-zip-headered | safetensors | trusted-pickle
    header: bytes
    root: Any
    weights: dict[str, TensorInfo]
    weights_path: tuple[str, ...]
    layout: Layout = Layout.UNKNOWN
    version: str = "unknown"
    evidence: list[str] = field(default_factory=list)
    layout_evidence: list[str] = field(default_factory=list)
    globals: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    scaler: ScalerState | None = None
    scaler_note: str = ""
    trusted: bool = False
    file_id: tuple[int, int, int, int] | None = None   # (dev, inode, size, mtime_ns) of the file mapped
    _refs: dict[str, TensorRef] = field(default_factory=dict, repr=False)
    _data_offsets: dict[str, int] = field(default_factory=dict, repr=False)  # safetensors: name -> file offset
    _mm: Any = field(default=None, repr=False)
    _zip: Any = field(default=None, repr=False)        # ZipIndex: reads (and caches) record data offsets
    _data_prefix: str = field(default="", repr=False)
    _head8k: bytes = field(default=b"", repr=False)

    # -- derived views ----------------------------------------------------------------------
    @property
    def extras(self) -> dict[str, Any]:
        """Top-level entries other than the weights container."""
        if not isinstance(self.root, dict):
            return {}
        if not self.weights_path:
            return {k: v for k, v in self.root.items() if not isinstance(v, TensorRef)}
        return {k: v for k, v in self.root.items() if k != self.weights_path[0]}

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.weights.values())

    @property
    def n_bytes(self) -> int:
        return sum(t.nbytes for t in self.weights.values())

    def bytes_by_dtype(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.weights.values():
            out[t.dtype] = out.get(t.dtype, 0) + t.nbytes
        return out

    @property
    def head8k_md5(self) -> str:
        import hashlib

        return hashlib.md5(self._head8k).hexdigest()

    def ref(self, key: str) -> TensorRef:
        try:
            return self._refs[key]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {key!r}") from None

    # -- data access ------------------------------------------------------------------------
    def _storage_array(self, storage: StorageRef):
        import numpy as np

        if self.trusted:
            raise AssertionError("trusted checkpoints hold tensors in memory")
        return np.frombuffer(self._mm, dtype=np.dtype(_NUMPY_DTYPES[storage.dtype]), count=storage.numel,
                             offset=self._storage_offset(storage))

    def _storage_offset(self, storage: StorageRef) -> int:
        """File offset of a storage's first byte (zip record data, or safetensors byte range)."""
        if self._zip is not None:
            return self._zip.data_offset(self._data_prefix + storage.key)
        return self._data_offsets[storage.key]

    def span(self, key: str) -> tuple[int, int] | None:
        """``(file offset, nbytes)`` of a contiguous tensor's bytes, for readers that ``pread``.

        Why: faulting a mapping in costs ~0.085 s/GB on the VMs measured, twice what a ``pread``
        into a reused buffer costs; the stats engine reads big tensors that way. None for
        tensors held in memory (trusted loads), strided or empty ones.
        """
        ref = self.ref(key)
        if self.trusted or isinstance(ref, _LoadedTensorRef) or ref.numel == 0 or not ref.is_contiguous():
            return None
        size = DTYPE_SIZES[ref.storage.dtype]
        return self._storage_offset(ref.storage) + ref.storage_offset * size, ref.numel * size

    def storage_range(self, key: str) -> tuple[int, int] | None:
        """``(file offset, nbytes)`` covering a tensor's storage record, zip local header included,
        found *without reading the file* (the header's length is guessed: read-ahead advice only)."""
        ref = self.ref(key)
        if self.trusted or isinstance(ref, _LoadedTensorRef):
            return None
        if self._zip is None:
            off = self._data_offsets.get(ref.storage.key)
            return None if off is None else (off, ref.storage.numel * DTYPE_SIZES[ref.storage.dtype])
        rec = self._zip.get(self._data_prefix + ref.storage.key)
        if rec is None:
            return None
        return rec.header_offset, min(30 + len(rec.name) + 128 + rec.compressed_size, self.size - rec.header_offset)

    def span_bytes(self, key: str) -> bytes | None:
        """A contiguous tensor's bytes copied straight from the mapping (no numpy import), or None
        where `span` is None (strided, empty, held in memory)."""
        sp = self.span(key)
        if sp is None or self._mm is None:
            return None
        if self._zip is not None:   # a file truncated in place since: one error, not SIGBUS
            self._zip._check_not_shrunk(sp[0] + sp[1])
        return self._mm[sp[0]:sp[0] + sp[1]]

    def array_of(self, ref: TensorRef):
        """Numpy view (read-only, mapped) of a TensorRef; bfloat16 comes back as uint16 bits."""
        import numpy as np

        if isinstance(ref, _LoadedTensorRef):
            t = ref.tensor
            if ref.dtype == "bfloat16":
                return t.contiguous().view(_torch().int16).numpy().view(np.uint16)
            return t.numpy()
        base = self._storage_array(ref.storage)
        itemsize = base.itemsize
        if ref.numel == 0:
            return np.empty(ref.shape, dtype=base.dtype)
        if ref.is_contiguous():
            arr = base[ref.storage_offset:ref.storage_offset + ref.numel].reshape(ref.shape)
        else:
            arr = np.lib.stride_tricks.as_strided(
                base[ref.storage_offset:], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride),
                writeable=False)
        arr.flags.writeable = False
        return arr

    def array(self, key: str):
        return self.array_of(self.ref(key))

    def tensor_of(self, ref: TensorRef):
        """torch.Tensor sharing the mapping.

        The mapping is private (ACCESS_COPY), so the view torch gets is writable without any
        write ever reaching the file; that also spares torch's non-writable-buffer warning.
        """
        torch = _torch()
        if isinstance(ref, _LoadedTensorRef):
            return ref.tensor
        import numpy as np

        if ref.numel == 0:
            return torch.empty(ref.shape, dtype=getattr(torch, ref.dtype))
        base = self._storage_array(ref.storage)
        view = np.lib.stride_tricks.as_strided(
            base[ref.storage_offset:], shape=ref.shape, strides=tuple(s * base.itemsize for s in ref.stride))
        t = torch.from_numpy(view)
        if ref.dtype == "bfloat16" or ref.dtype.startswith("float8"):
            t = t.view(getattr(torch, ref.dtype))
        return t

    def tensor(self, key: str):
        return self.tensor_of(self.ref(key))

    def raw_bytes(self, key: str) -> memoryview:
        """The bytes of a tensor (contiguous copy for strided ones)."""
        arr = self.array(key)
        import numpy as np

        return memoryview(np.ascontiguousarray(arr)).cast("B")

    def materialize(self, obj: Any, *, clone: bool = True, convert: Callable[[Any], Any] | None = None,
                    memo: dict[int, Any] | None = None) -> Any:
        """Deep copy of part of `root` with TensorRef replaced by torch tensors (imports torch).

        Dicts (OrderedDict stays OrderedDict), lists and tuples are rebuilt; an object reached
        twice is copied once. `clone=True` copies every tensor out of the file; `clone=False`
        keeps tensors as views of the mapping where they are exactly their own storage, and
        copies only the rest (strided views, slices of a larger storage: `exact_tensor`), which
        is what `torch.save` needs to write each tensor's bytes and no more. `convert(o)` is
        called on every other value (placeholders, strings, numbers...); when it returns a
        different object, that object is materialized in its place. Pass the same `memo` to
        several calls to keep objects shared between them shared in the copies.
        """
        if memo is None:
            memo = {}

        def go(o, depth):
            if depth > _MAX_DEPTH:
                raise CheckpointError(self.path, "object nests too deeply")
            i = id(o)
            if i in memo:
                return memo[i]
            if isinstance(o, TensorRef):
                t = self.tensor_of(o)
                memo[i] = t = t.clone() if clone else exact_tensor(t)
                return t
            if isinstance(o, dict):
                out = OrderedDict() if type(o) is OrderedDict else {}
                memo[i] = out
                for k, v in o.items():
                    out[k] = go(v, depth + 1)
                return out
            if isinstance(o, list):
                out_l: list = []
                memo[i] = out_l
                out_l.extend(go(v, depth + 1) for v in o)
                return out_l
            if isinstance(o, tuple):
                return tuple(go(v, depth + 1) for v in o)
            if convert is not None:
                new = convert(o)
                if new is not o:
                    # kept alive with the memo, so the ids memoized inside it are never reused
                    memo.setdefault(_CONVERTED, []).append(new)
                    return go(new, depth + 1)
            return o

        return go(obj, 0)

    def get(self, path: tuple[str, ...]) -> Any:
        node = self.root
        for p in path:
            node = node[p]
        return node

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # arrays still alive: the mapping goes with them
                pass
            self._mm = None

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LoadedTensorRef(TensorRef):
    """A tensor already in memory (trusted torch.load path)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        dtype = str(tensor.dtype).replace("torch.", "")
        super().__init__(StorageRef("mem", dtype, tensor.numel()), 0, tuple(tensor.shape),
                         tuple(tensor.stride()), bool(tensor.requires_grad))
        self.tensor = tensor


def exact_tensor(t):
    """`t` itself when its storage is exactly its bytes, else a compact copy (torch.save writes
    whole storages, so a view would drag its whole storage into the file)."""
    if not t.is_contiguous() or t.storage_offset() != 0 or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return t.contiguous().clone()
    return t


def _torch():
    import torch

    return torch


# ---------------------------------------------------------------------------------------------
def open_checkpoint(path: str | Path, *, trust: bool = False, weights_entry: str | None = None) -> Checkpoint:
    """Open `path` without executing code from it (unless `trust`), without reading tensor data.

    Raises CheckpointError (one line naming the file and the problem) for anything unreadable.
    `weights_entry` picks the container entry that holds the state dict when it is ambiguous.
    """
    path = Path(path)
    mm, size, file_id = map_file(path)
    try:
        ck = _open_mapped(path, mm, size, file_id, trust=trust, weights_entry=weights_entry)
        ck.file_id = file_id
    except BaseException:
        try:
            mm.close()
        except BufferError:
            pass
        raise
    from .detect import detect

    detect(ck)
    return ck


_PREOPENED: dict = {}


def _stat_key(path) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def preopen(path: str | Path, *, trust: bool = False) -> None:
    """Open `path` now (so a bad file is one line before an app starts) and keep it for the next
    :func:`open_with_entry` of the same unchanged file: the inspector does not open (or, with
    ``--trust``, run) a file twice."""
    ck = open_checkpoint(path, trust=trust)
    _PREOPENED[(_stat_key(path), trust)] = ck


def _take_preopened(path, trust: bool) -> "Checkpoint | None":
    if not _PREOPENED:
        return None
    try:
        return _PREOPENED.pop((_stat_key(path), trust), None)
    except OSError:
        return None


def open_with_entry(path: str | Path, *, trust: bool = False, weights_entry: str | None = None) -> Checkpoint:
    """Open a checkpoint the way a rules file asks: its ``weights_entry`` wins when the file has it.

    Why a second function: ``open_checkpoint(weights_entry=...)`` fails on a file without that
    entry, while a rules file is shared by both sides of a pair (the pretrained side usually
    has a single state dict). diff, rules check, export and the inspector all open through here
    so they look at the same state dict.
    """
    ck = _take_preopened(path, trust) or open_checkpoint(path, trust=trust)
    root = ck.root
    if weights_entry and isinstance(root, dict) and weights_entry in root and tuple(ck.weights_path) != (weights_entry,):
        ck.close()
        ck = open_checkpoint(path, trust=trust, weights_entry=weights_entry)
    return ck


def _open_mapped(path: Path, mm, size: int, file_id: tuple[int, int, int, int], *, trust: bool,
                 weights_entry: str | None) -> Checkpoint:
    head8k = bytes(mm[:8192])
    head = head8k[:8]
    if head[2:4] == b"\x03\x04" and head[:2] != b"PK" and head[:2] not in KNOWN_HEADERS:
        shown = head[:2].decode("latin1") if head[:2].isascii() and head[:2].decode("latin1").isprintable() else head[:2].hex()
        raise CheckpointError(path, f"unknown 2-byte header {shown!r} in place of 'PK' (GPT-SoVITS writes 00-06); "
                              "refusing to guess its version")
    if head[:2] == b"PK" or (head[:2] in HEADER_DIGITS and head[2:4] == b"\x03\x04"):
        container = "torch-zip" if head[:2] == b"PK" else "torch-zip-headered"
        if trust:
            return _open_trusted(path, mm, size, head8k, weights_entry)
        zi = ZipIndex.open(path, mm, size, file_id)
        return _open_zip(path, mm, size, zi, container, head8k, weights_entry)
    return _open_other(path, mm, size, head, head8k, trust=trust, weights_entry=weights_entry)


def _open_zip(path: Path, mm, size: int, zi: ZipIndex, container: str, head8k: bytes,
              weights_entry: str | None) -> Checkpoint:
    prefix = zi.prefix
    check_torch_records(path, zi)
    storage_sizes: dict[str, int] = {}
    compressed: set[str] = set()            # storage keys (folded) whose record is not stored as is
    data_prefix = ascii_lower(prefix + "data/")
    cut = len(data_prefix)
    for low, rec in zi._folded.items():      # names already ASCII-folded by the directory reader
        if low.startswith(data_prefix) and "/" not in low[cut:]:
            storage_sizes[low[cut:]] = rec.size
            if rec.method != 0:
                compressed.add(low[cut:])
    pkl = zi.data(prefix + "data.pkl")
    if len(pkl) > MAX_PICKLE_BYTES:
        raise CheckpointError(path, f"data.pkl is {len(pkl)} bytes (limit {MAX_PICKLE_BYTES}; "
                              f"a 20,000-tensor checkpoint's is ~1 MB)")
    root, up = safe_loads(pkl, path, storage_sizes)
    if compressed:      # refuse compressed storages now, not at first read (stored_record says which)
        for key in up.storages:
            zi.stored_record(prefix + "data/" + key)
    ck = _from_root(path, size, container, head8k[:2], root, up.globals_seen, up.opaque_seen, weights_entry)
    # Record data offsets come from each record's local header: ZipIndex.data_offset reads them
    # on first access (listing a 20k-key file then costs no 20k reads) and validates them.
    ck._zip = zi
    ck._data_prefix = prefix + "data/"
    ck._mm = mm
    ck._head8k = head8k
    return ck


def _open_other(path: Path, mm, size: int, head: bytes, head8k: bytes, *, trust: bool,
                weights_entry: str | None) -> Checkpoint:
    if len(head) >= 8 and looks_like_safetensors(mm, size):
        root, offsets, meta = read_safetensors(path, mm, size)
        ck = _from_root(path, size, "safetensors", head8k[:2], root, [], [], None)
        if meta:
            ck.layout_evidence.append(f"safetensors metadata: {json.dumps(meta)[:120]}")
        ck._data_offsets = offsets
        ck._mm = mm
        ck._head8k = head8k
        return ck
    if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
        if trust:
            return _open_trusted(path, mm, size, head8k, weights_entry)
        raise CheckpointError(path, "legacy (non-zip) pickle checkpoint; gsvinspect reads it only with --trust")
    if head[:2] in HEADER_DIGITS:
        raise CheckpointError(path, f"unknown 2-byte header {head[:2].decode()!r} and no zip archive behind it")
    if len(head) >= 2 and head[:2].isdigit():
        raise CheckpointError(path, f"unknown 2-byte header {head[:2]!r}")
    kind = _sniff_kind(head8k)
    raise CheckpointError(path, f"not a PyTorch checkpoint ({kind})")


def _sniff_kind(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith(b"GIF8"):
        return "a GIF image"
    if head.startswith(b"RIFF"):
        return "a RIFF/WAV file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer file: the real checkpoint was never downloaded"
    if head.lstrip().startswith((b"{", b"[")):
        return "looks like JSON text"
    if head.lstrip().startswith(b"<"):
        return "looks like HTML/XML text (a failed download?)"
    try:
        head.decode("utf-8")
        return "looks like a text file"
    except UnicodeDecodeError:
        return f"unrecognised bytes {head[:4].hex()}"


MAX_PICKLE_BYTES = 512 << 20
MAX_TENSORS = 2_000_000   # entries in the state dict (GPT-SoVITS models have < 3,000)
def _open_trusted(path: Path, mm, size: int, head8k: bytes, weights_entry: str | None) -> Checkpoint:
    root = _trusted_load(path, mm, head8k[:2])
    ck = _from_root(path, size, "trusted-pickle", head8k[:2], root, [], [], weights_entry)
    ck.trusted = True
    ck._mm = mm
    ck._head8k = head8k
    return ck


def _trusted_load(path: Path, mm, head2: bytes):
    """--trust: plain torch.load(weights_only=False), restoring a GPT-SoVITS 2-byte header."""
    import io

    torch = _torch()
    try:
        if head2 != b"PK" and head2 in HEADER_DIGITS:
            buf = io.BytesIO(b"PK" + bytes(mm[2:]))
            return torch.load(buf, map_location="cpu", weights_only=False)
        return torch.load(str(path), map_location="cpu", weights_only=False, mmap=head2 == b"PK")
    except Exception as exc:  # user asked for it; still one line
        raise CheckpointError(path, f"torch.load failed: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------
def _from_root(path, size, container, header, root, globals_seen, opaque_seen, weights_entry) -> Checkpoint:
    if container == "trusted-pickle":
        root = _wrap_loaded(root)
    wpath = _locate_weights(path, root, weights_entry)
    sd = root
    for p in wpath:
        sd = sd[p]
    weights: dict[str, TensorInfo] = {}
    refs: dict[str, TensorRef] = {}
    if isinstance(sd, dict) and len(sd) > MAX_TENSORS:
        raise CheckpointError(path, f"state dict of {len(sd)} entries; refusing (limit {MAX_TENSORS})")
    if isinstance(sd, dict):
        for k, v in sd.items():
            if isinstance(v, TensorRef) and isinstance(k, str):
                weights[k] = v.info(k)
                refs[k] = v
    ck = Checkpoint(path=path, size=size, container=container, header=header, root=root,
                    weights=weights, weights_path=wpath, globals=list(globals_seen), opaque=list(opaque_seen))
    ck._refs = refs
    ck.scaler = find_scaler(root, wpath)
    return ck


def _wrap_loaded(obj, depth=0):
    torch = _torch()
    if depth > _MAX_DEPTH:
        return obj
    if isinstance(obj, torch.Tensor):
        return _LoadedTensorRef(obj.detach())
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _wrap_loaded(v, depth + 1)
        return out
    if isinstance(obj, list):
        return [_wrap_loaded(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_wrap_loaded(v, depth + 1) for v in obj)
    return obj


# Entries that hold the state dict, in order of preference (FORMATS.md §1)
WEIGHT_ENTRIES = ("weight", "state_dict", "model", "generator", "module", "net_g", "params")


def _count_tensors(d) -> int:
    return sum(1 for v in d.values() if isinstance(v, TensorRef)) if isinstance(d, dict) else 0


def _locate_weights(path, root, weights_entry: str | None) -> tuple[str, ...]:
    if not isinstance(root, dict):
        if isinstance(root, TensorRef):
            raise CheckpointError(path, "file holds a single tensor, not a state dict")
        kind = type(root).__name__ if not isinstance(root, Opaque) else root.fullname
        raise CheckpointError(path, f"top-level object is {kind}, not a dict of tensors")
    if weights_entry:
        if weights_entry not in root:
            raise CheckpointError(path, f"no entry {weights_entry!r} (entries: {', '.join(map(str, root))})")
        if not isinstance(root[weights_entry], dict):
            raise CheckpointError(path, f"entry {weights_entry!r} is not a dict of tensors")
        return (weights_entry,)
    top = _count_tensors(root)
    best: tuple[str, ...] = ()
    best_n = top
    for name in WEIGHT_ENTRIES:
        n = _count_tensors(root.get(name)) if name in root else 0
        if n > best_n:
            best, best_n = (name,), n
    if not best and top == 0:
        # some other entry holding a dict of tensors
        for k, v in root.items():
            n = _count_tensors(v)
            if isinstance(k, str) and n > best_n:
                best, best_n = (k,), n
    if best_n == 0:
        raise CheckpointError(path, "no tensors found: not a model checkpoint")
    return best


def find_scaler(root, wpath: tuple[str, ...]) -> ScalerState | None:
    """GradScaler state: a known key at top level, or a dict with its fields anywhere (bounded)."""
    if not isinstance(root, dict):
        return None
    for k in SCALER_KEYS:
        v = root.get(k)
        if isinstance(v, dict) and ("scale" in v or _SCALER_FIELDS & set(v)):
            return ScalerState((k,), v)
    skip = wpath[0] if wpath else None
    for p, v in _walk_dicts(root, (), 0, skip):
        if isinstance(v, dict) and _SCALER_FIELDS <= set(k for k in v if isinstance(k, str)):
            return ScalerState(p, v)
    return None


def _walk_dicts(d, prefix, depth, skip) -> Iterator[tuple[tuple[str, ...], Any]]:
    if depth > 4 or not isinstance(d, dict):
        return
    for k, v in d.items():
        if depth == 0 and k == skip:
            continue
        if isinstance(v, dict) and isinstance(k, str):
            yield prefix + (k,), v
            yield from _walk_dicts(v, prefix + (k,), depth + 1, skip)
