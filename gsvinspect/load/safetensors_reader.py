"""Read a safetensors file's header into TensorRefs (no tensor bytes read).

Hostile headers are refused in one line: deep nesting (json's C parser stops it with a
RecursionError), non-string dtypes, absurd shapes, offsets outside the file, and
more entries than `MAX_ENTRIES`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..meta import DTYPE_SIZES
from .allowlist import Bad, StorageRef, TensorRef, validate_ref

_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "U16": "uint16",
    "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
MAX_HEADER_BYTES = 100_000_000    # the safetensors library's own limit
MAX_ENTRIES = 2_000_000


def looks_like_safetensors(mm, size: int) -> bool:
    (n,) = struct.unpack_from("<Q", mm, 0)
    return 2 <= n <= min(size - 8, MAX_HEADER_BYTES) and mm[8:9] == b"{"


def read_safetensors(path: Path, mm, size: int) -> tuple[dict[str, TensorRef], dict[str, int], Any]:
    """(tensors by name, file offset of each tensor's bytes, the __metadata__ entry)."""
    (n,) = struct.unpack_from("<Q", mm, 0)
    try:
        text = bytes(mm[8:8 + n]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(path, f"bad safetensors header ({exc})") from None
    try:
        header = json.loads(text)
    except RecursionError:
        raise CheckpointError(path, "bad safetensors header (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError included
        raise CheckpointError(path, f"bad safetensors header ({str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "bad safetensors header (not an object)")
    if len(header) > MAX_ENTRIES:
        raise CheckpointError(path, f"safetensors header with {len(header)} entries; refusing (limit {MAX_ENTRIES})")
    base = 8 + n
    root: dict[str, TensorRef] = {}
    offsets: dict[str, int] = {}
    meta = header.pop("__metadata__", None)
    for name, ent in header.items():
        root[name], offsets[name] = _entry(path, name, ent, base, size)
    return root, offsets, meta


def _entry(path: Path, name: str, ent: Any, base: int, size: int) -> tuple[TensorRef, int]:
    if not isinstance(ent, dict):
        raise CheckpointError(path, f"safetensors entry {name!r} is malformed")
    code = ent.get("dtype")
    dtype = _SAFETENSORS_DTYPES.get(code) if isinstance(code, str) else None
    shape = ent.get("shape")
    offs = ent.get("data_offsets")
    if dtype is None:
        raise CheckpointError(path, f"safetensors entry {name!r}: unknown dtype {str(code)[:40]!r}")
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
        raise CheckpointError(path, f"safetensors entry {name!r}: bad shape")
    if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
            and 0 <= offs[0] <= offs[1] and base + offs[1] <= size):
        raise CheckpointError(path, f"safetensors entry {name!r}: data offsets outside the file")
    numel = 1
    for s in shape:
        numel *= s
    if numel * DTYPE_SIZES[dtype] != offs[1] - offs[0]:
        raise CheckpointError(path, f"safetensors entry {name!r}: shape does not match its byte range")
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= s
    ref = TensorRef(StorageRef(name, dtype, numel), 0, tuple(shape), tuple(reversed(stride)))
    try:
        validate_ref(ref)
    except Bad as exc:
        raise CheckpointError(path, f"safetensors entry {name!r}: {exc}") from None
    return ref, base + offs[0]
