"""A restricted unpickler: reads a checkpoint's pickle without ever running code from it.

Why: `torch.load(weights_only=False)` executes whatever callables a pickle names, and GPT-SoVITS
files legitimately reference classes (`utils.HParams`, `pathlib.PosixPath`) that
`weights_only=True` refuses. Here every global is resolved by us, against an allow-list
(`allowlist.py`): allowed globals map to our own inert implementations, which accept only the
opcodes an honest file uses them with; every other global becomes an inert stand-in that is
recorded, and once the pickle has been read the file is refused as unsafe, naming the first such
global (`RefusedGlobalError`, whose `globals` lists them all for `info --globals`).

Before the unpickler runs, `pickle_scan` refuses memo, string and integer bombs; after it,
`check_structure` walks the object once, iteratively: nesting, cycles, exponential sharing,
object kinds that must not remain (a bare function or class), string lengths, and the bounds of
every tensor, on the final metadata.

No torch import: listing keys stays fast.
"""

from __future__ import annotations

import _compat_pickle
import gc
import io
import pickle
import struct
import threading
from collections import OrderedDict
from typing import Any

from ..errors import CheckpointError, RefusedGlobalError
from ..meta import DTYPE_SIZES
from .allowlist import (ALLOWED, Bad, DtypeRef, Opaque, StorageRef, TensorRef, Unsafe, _GlobalValue,
                        short_repr, validate_ref)
from .pickle_scan import scan_pickle
from .zip_index import ascii_lower

__all__ = ["Opaque", "TensorRef", "StorageRef", "DtypeRef", "SafeUnpickler", "safe_loads", "check_structure",
           "plain_view", "MAX_NESTING", "MAX_KEY_CHARS"]

class _UnsafeGlobal:
    """What a global off the allow-list resolves to: inert whatever the pickle does with it."""

    name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __call__(self, *args, **kwargs):
        return None


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """What pickle's fix_imports turns a Python 2 global into (protocol < 3 files)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class SafeUnpickler(pickle.Unpickler):
    """Unpickler whose find_class never imports and persistent_load never reads tensor data."""

    def __init__(self, data: bytes | memoryview, path, storage_sizes: dict[str, int] | None = None):
        super().__init__(io.BytesIO(data))
        self._path = path
        self.storage_sizes = storage_sizes  # record key -> bytes available, for bound checks
        self.globals_seen: list[str] = []
        self._seen: set[str] = set()
        self.unsafe: list[tuple[str, str]] = []   # (global, why) off the allow-list, in order
        self._unsafe_classes: dict[str, type] = {}
        self.storages: dict[str, StorageRef] = {}

    @property
    def opaque_seen(self) -> list[str]:
        """The allow-listed placeholder classes (utils.HParams, pathlib paths...) the pickle uses."""
        return [g for g in self.globals_seen if _is_placeholder(_lookup(*g.rsplit(".", 1)))]

    def find_class(self, module: str, name: str):
        if type(module) is not str or type(name) is not str:
            raise Unsafe(short_repr((module, name)), "non-string global name")
        full = f"{module}.{name}"
        if full not in self._seen:
            self._seen.add(full)
            self.globals_seen.append(full)
        # a real unpickler maps Python 2 names (`__builtin__`, `copy_reg`, ...) before importing:
        # judge the name it would really resolve, not only the spelling in the file
        found = _lookup(module, name)
        if found is None:
            found = _lookup(*_py3_name(module, name))
        if found is not None:
            return found
        cls = self._unsafe_classes.get(full)
        if cls is None:
            cls = type("Unsafe", (_UnsafeGlobal,), {"name": full})
            self._unsafe_classes[full] = cls
            self.unsafe.append((full, "not on the allow-list of safe globals"))
        return cls

    def persistent_load(self, pid):
        if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
            raise Bad(f"unexpected persistent id {short_repr(pid)}")
        _, stype, key, _location, numel = pid
        if not (isinstance(stype, _GlobalValue) and isinstance(stype.payload, str)):
            raise Bad("persistent id names an unknown storage type")
        if type(key) is not str or type(numel) is not int or numel < 0:
            raise Bad("persistent id with a bad key or size")
        dtype = stype.payload
        existing = self.storages.get(key)
        if existing is not None:
            if existing.dtype != dtype or existing.numel != numel:
                raise Bad(f"storage data/{key} declared twice with different types or sizes")
            return existing
        itemsize = DTYPE_SIZES[dtype]
        if self.storage_sizes is not None:
            have = self.storage_sizes.get(ascii_lower(key))  # torch looks data/KEY up ignoring case
            if have is None:
                raise Bad(f"storage record data/{key} is missing from the archive")
            if numel * itemsize > have:
                raise Bad(f"storage data/{key} declares {numel} elements but its record holds only {have} bytes")
        ref = StorageRef(key, dtype, numel)
        self.storages[key] = ref
        return ref


def _is_placeholder(found) -> bool:
    """An allow-listed class we never import (HParams...) or a path factory."""
    return hasattr(found, "placeholder") or (isinstance(found, type) and issubclass(found, Opaque))


def _lookup(module: str, name: str):
    return ALLOWED.get((module, name))


# ---------------------------------------------------------------------------------------------
# after unpickling: one iterative walk over the object

MAX_NESTING = 100                # honest checkpoints nest < 20 levels
MAX_EXPANDED_NODES = 20_000_000  # nodes a full walk of the object would visit (shared parts counted again)
MAX_KEY_CHARS = 4096             # a dict key (a tensor name is < 200 characters)
_LEAVES = frozenset({str, bytes, bytearray, int, float, complex, bool, type(None), DtypeRef})


def _children(o):
    t = type(o)
    if t is dict or t is OrderedDict:
        extra = []
        if t is OrderedDict and o.__dict__:
            # nn.Module.state_dict() sets `_metadata` (per-module versions) on the OrderedDict it returns,
            # so every real training checkpoint BUILDs it; any other attribute is refused
            if set(o.__dict__) != {"_metadata"}:
                raise Bad("an OrderedDict with attributes other than torch's _metadata set on it by BUILD: "
                          + short_repr(sorted(o.__dict__)))
            extra.append(o.__dict__["_metadata"])
        keys = list(o.keys())
        for k in keys:
            if type(k) is str and len(k) > MAX_KEY_CHARS:
                raise Bad(f"a key of {len(k)} characters (limit {MAX_KEY_CHARS}): {short_repr(k)}")
        return iter(keys + list(o.values()) + extra)
    if t in (list, tuple, set, frozenset):
        return iter(o)
    if isinstance(o, Opaque):
        return iter((o.args, o.state, o.items, o.setitems))
    return None


def _leaf(o) -> None:
    """Check a node without children: allowed kinds only, bounded strings, tensors in bounds."""
    t = type(o)
    if t in _LEAVES:
        return
    if t is TensorRef:
        validate_ref(o)
        return
    if isinstance(o, _GlobalValue):
        raise Unsafe(o.name, "left in the data as a bare value (only storages and tensor types may appear, "
                     "inside tensors)")
    if isinstance(o, type) or callable(o):
        name = getattr(o, "name", None) or getattr(o, "__qualname__", type(o).__name__)
        raise Unsafe(str(name), "left in the data as a bare global (a class or function, not data)")
    if t is StorageRef:
        raise Bad("a bare storage outside any tensor (torch.save of a storage; not a model checkpoint)")
    raise Bad(f"unexpected object {t.__name__} in the pickle")


def check_structure(root: Any) -> None:
    """Refuse objects every walker would choke on, and anything that must not remain.

    Cycles, nesting deeper than MAX_NESTING, exponential sharing (2**80 paths in a small DAG),
    dict keys longer than MAX_KEY_CHARS, bare globals, and tensors whose final metadata runs
    outside their storage. Memory stays small: shared parts are walked once.
    """
    end = object()
    it = _children(root)
    if it is None:
        _leaf(root)
        return
    memo: dict[int, int] = {}
    active = {id(root)}
    stack = [[root, it, 0]]
    while stack:
        frame = stack[-1]
        child = next(frame[1], end)
        if child is end:
            stack.pop()
            active.discard(id(frame[0]))
            size = frame[2] + 1
            memo[id(frame[0])] = size
            if stack:
                stack[-1][2] += size
                if stack[-1][2] > MAX_EXPANDED_NODES:
                    raise Bad(f"pickle's object graph expands to more than {MAX_EXPANDED_NODES} nodes "
                              "(crafted sharing)")
            continue
        tc = type(child)
        if tc in _LEAVES:            # the common leaves first: same checks as _leaf, fewer calls
            frame[2] += 1
            continue
        if tc is TensorRef:
            validate_ref(child)
            frame[2] += 1
            continue
        cit = _children(child)
        if cit is None:
            _leaf(child)
            frame[2] += 1
            continue
        cid = id(child)
        if cid in memo:
            frame[2] += memo[cid]
            if frame[2] > MAX_EXPANDED_NODES:
                raise Bad(f"pickle's object graph expands to more than {MAX_EXPANDED_NODES} nodes "
                          "(crafted sharing)")
            continue
        if cid in active:
            raise Bad(f"pickle holds a container that contains itself ({type(child).__name__} reference cycle)")
        if len(stack) >= MAX_NESTING:
            raise Bad(f"pickle nests containers more than {MAX_NESTING} levels deep")
        active.add(cid)
        stack.append([child, cit, 0])


# ---------------------------------------------------------------------------------------------
# plain views of placeholders (what info shows, what export writes when asked for plain dicts)

_PLAIN_BUDGET = 20_000  # nodes one plain view may visit: a crafted DAG can have 2**80 paths


def plain_view(obj: Any, _depth: int = 0, _budget: list | None = None, _active: set | None = None) -> Any:
    """Plain view of `obj`, bounded: depth <= 64, at most _PLAIN_BUDGET nodes, cycles cut."""
    if _budget is None:
        _budget, _active = [_PLAIN_BUDGET], set()
    _budget[0] -= 1
    if _depth > 64 or _budget[0] < 0:
        return "..."
    if isinstance(obj, (Opaque, dict, list, tuple)):
        if id(obj) in _active:
            return "<cycle>"
        _active.add(id(obj))
        try:
            return _plain_node(obj, _depth, _budget, _active)
        finally:
            _active.discard(id(obj))
    return obj


def _plain_node(obj: Any, _depth: int, _budget: list, _active: set) -> Any:
    def sub(v):
        return plain_view(v, _depth + 1, _budget, _active)

    if isinstance(obj, Opaque):
        if obj.kind == "path":  # pathlib paths: their args are the path parts
            parts = [a for a in obj.args if isinstance(a, str)]
            return "/".join(parts).replace("//", "/") if parts else obj.fullname
        out = {k: sub(v) for k, v in obj.state.items()} if isinstance(obj.state, dict) else {}
        out.update({k: sub(v) for k, v in obj.setitems.items()})
        return out
    if isinstance(obj, dict):
        return {k: sub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sub(v) for v in obj]
    return tuple(sub(v) for v in obj)


# ---------------------------------------------------------------------------------------------

SAFE_TUPLE_OPS = 20_000   # tuples nested this deep hash within ~1 MB of C stack
_STACK_BYTES_PER_LEVEL = 256   # C stack one level of tuple hashing takes, with a 3x margin (measured ~80)
_MAX_STACK = 2 << 30
_stack_lock = threading.Lock()


def _run_with_stack(fn, levels: int):
    """Run `fn()` where the C stack holds `levels` nested tuple hashes (a thread of that size)."""
    if levels <= SAFE_TUPLE_OPS:
        return fn()
    size = max(32 << 20, levels * _STACK_BYTES_PER_LEVEL)
    if size > _MAX_STACK:
        raise Bad(f"pickle has {levels} tuple opcodes (limit {_MAX_STACK // _STACK_BYTES_PER_LEVEL})")
    out: dict[str, Any] = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the caller's thread
            out["error"] = exc

    with _stack_lock:
        old = threading.stack_size(size)
        try:
            t = threading.Thread(target=target, name="gsvinspect-unpickle", daemon=True)
            t.start()
        finally:
            threading.stack_size(old)
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def safe_loads(data: bytes | memoryview, path, storage_sizes: dict[str, int] | None) -> tuple[Any, SafeUnpickler]:
    """Unpickle `data` safely; returns (object, unpickler) or raises CheckpointError.

    A file referencing any global off the allow-list raises RefusedGlobalError naming the first
    one, even when the pickle is also broken further on (the global is what the user must know).
    """
    data = bytes(data)
    up = SafeUnpickler(data, path, storage_sizes)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the unpickler only allocates; collections during it cost ~2/3 of the time
    try:
        try:
            tuples = scan_pickle(data)
            obj = _run_with_stack(up.load, tuples)
            if not up.unsafe:
                check_structure(obj)
        except Exception as exc:
            if up.unsafe:
                raise _refusal(path, up) from None
            raise _as_checkpoint_error(path, exc) from None
        if up.unsafe:
            raise _refusal(path, up)
    finally:
        if gc_was_enabled:
            gc.enable()
    return obj, up


def _refusal(path, up: SafeUnpickler) -> RefusedGlobalError:
    name, why = up.unsafe[0]
    err = RefusedGlobalError(path, name, why)
    err.globals = list(up.globals_seen)
    return err


def _as_checkpoint_error(path, exc: BaseException) -> BaseException:
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, Unsafe):
        return RefusedGlobalError(path, exc.name, exc.why)
    if isinstance(exc, Bad):
        return CheckpointError(path, str(exc))
    if isinstance(exc, RecursionError):
        return CheckpointError(path, "pickle nests too deeply")
    if isinstance(exc, MemoryError):
        return CheckpointError(path, "pickle needs too much memory")
    if isinstance(exc, (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
                        AttributeError, UnicodeDecodeError, OverflowError, struct.error)):
        return CheckpointError(path, f"corrupt pickle ({type(exc).__name__}: {short_repr(str(exc), 80)})")
    return exc
