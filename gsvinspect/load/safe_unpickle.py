"""A restricted unpickler: reads a checkpoint's pickle without ever running code from it.

Why: `torch.load(weights_only=False)` executes whatever callables a pickle names, and GPT-SoVITS
files legitimately reference classes (`utils.HParams`, `pathlib.PosixPath`) that
`weights_only=True` refuses. Here every global is resolved by us:

* harmless ones (containers, torch's tensor-rebuild helpers, dtypes, `torch.Size`) map to our own
  inert implementations, which build `TensorRef` metadata instead of tensors;
* callables that could run code (`os.system`, `subprocess.*`, `builtins.eval`, `runpy`, ...,
  and anything else from such modules) are refused with `RefusedGlobalError` naming them;
* any other class becomes an `Opaque` placeholder that records its name, arguments and state,
  can be shown to the user and written back unchanged, and never executes anything.

No torch import: listing keys stays fast.
"""

from __future__ import annotations

import _compat_pickle
import gc
import io
import pickle
import pickletools
import reprlib
import struct
from dataclasses import dataclass
from math import prod
from typing import Any

from ..errors import CheckpointError, RefusedGlobalError
from ..meta import DTYPE_SIZES, TensorInfo

# Storage classes torch pickles (GLOBAL 'torch FloatStorage' ...) -> dtype name
STORAGE_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
}
TORCH_DTYPES = {
    "float32", "float", "float16", "half", "bfloat16", "float64", "double", "int64", "long", "int32", "int",
    "int16", "short", "int8", "uint8", "bool", "complex64", "complex128", "cfloat", "cdouble",
    "float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64",
}
_DTYPE_ALIASES = {"float": "float32", "half": "float16", "double": "float64", "long": "int64",
                  "int": "int32", "short": "int16", "cfloat": "complex64", "cdouble": "complex128"}

# Module roots whose every member is refused: they can run code, spawn processes, touch files,
# import modules or reach the network.
DANGEROUS_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "runpy", "importlib",
    "imp", "webbrowser", "shutil", "socket", "ctypes", "code", "codeop", "pty", "pickle", "_pickle",
    "marshal", "types", "functools", "operator", "io", "_io", "tempfile", "multiprocessing",
    "threading", "_thread", "signal", "asyncio", "urllib", "http", "ftplib", "smtplib", "telnetlib",
    "pdb", "bdb", "timeit", "trace", "profile", "cProfile", "platform", "glob", "zipimport",
    "pkgutil", "inspect", "gc", "weakref", "copyreg", "dill", "cloudpickle", "joblib", "numpy",
    "torch", "pytorch_lightning", "lightning", "yaml", "codecs", "_codecs", "site", "sysconfig",
    "ensurepip", "venv", "distutils", "setuptools", "pip", "shelve", "dbm", "sqlite3", "logging",
    "fileinput", "linecache", "tokenize", "ast", "dis", "commands", "popen2", "spawn",
    "_posixsubprocess", "_winapi", "msvcrt", "winreg", "_winreg", "pydoc", "uuid", "mmap", "resource",
    "fcntl", "select", "selectors", "tarfile", "zipfile", "copy_reg", "cPickle", "antigravity", "this",
    "_frozen_importlib", "_frozen_importlib_external", "_imp", "xmlrpc", "socketserver",
)


class Opaque:
    """An inert stand-in for an instance of a class we do not import.

    Records how the pickle built it (`args`, `state`, `items`) so it can be shown and written
    back unchanged. Subclasses are created per global name by `SafeUnpickler`.
    """

    module: str = "?"
    qualname: str = "?"

    def __new__(cls, *args, **kwargs):  # NEWOBJ calls only this; REDUCE/INST/OBJ call both
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        obj.items = []
        obj.setitems = {}
        return obj

    def __init__(self, *args, **kwargs):  # record, never run anything
        self.args = args
        self.kwargs = kwargs

    def __setstate__(self, state):  # BUILD
        self.state = state

    def append(self, item):  # APPEND on a list subclass
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def __setitem__(self, key, value):  # SETITEM on a dict subclass
        self.setitems[key] = value

    @property
    def fullname(self) -> str:
        return f"{self.module}.{self.qualname}"

    def as_plain(self) -> Any:
        """Best-effort plain view: the attribute bag of an HParams-like object as nested dicts."""
        return _plain(self)

    def __repr__(self) -> str:
        bits = []
        if self.args:
            bits.append(", ".join(_short_repr(a) for a in self.args))
        if isinstance(self.state, dict):
            bits.append(", ".join(f"{k}={_short_repr(v)}" for k, v in list(self.state.items())[:6]))
            if len(self.state) > 6:
                bits.append("...")
        elif self.state is not None:
            bits.append(f"state={_short_repr(self.state)}")
        return f"<{self.fullname}({', '.join(b for b in bits if b)})>"


class OpaqueFunction(Opaque):
    """A global we do not recognise used as a plain value (not called)."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def _short_repr(v: Any, limit: int = 40) -> str:
    """repr bounded in depth and width: a crafted DAG or a deep list cannot make it hang."""
    try:
        r = _REPR.repr(v)
    except (RecursionError, ValueError):
        r = f"<{type(v).__name__}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


_PLAIN_BUDGET = 20_000  # nodes one as_plain() may visit: a crafted DAG can have 2**80 paths


def _plain(obj: Any, _depth: int = 0, _budget: list | None = None, _active: set | None = None) -> Any:
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
        return _plain(v, _depth + 1, _budget, _active)

    if isinstance(obj, Opaque):
        # pathlib paths: their args are the path parts
        if obj.module.startswith("pathlib") and obj.qualname.endswith("Path"):
            parts = [a for a in obj.args if isinstance(a, str)]
            if not parts and isinstance(obj.state, tuple):
                parts = [p for p in obj.state if isinstance(p, str)]
            return "/".join(parts).replace("//", "/") if parts else obj.fullname
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
            merged = dict(state[0]) if isinstance(state[0], dict) else {}
            merged.update(state[1])
            state = merged
        if isinstance(state, dict):
            out = {k: sub(v) for k, v in state.items()}
            if obj.setitems:
                out.update({k: sub(v) for k, v in obj.setitems.items()})
            return out
        if obj.setitems:
            return {k: sub(v) for k, v in obj.setitems.items()}
        if obj.items:
            return [sub(v) for v in obj.items]
        if len(obj.args) == 1 and not obj.kwargs:
            return sub(obj.args[0])
        return repr(obj)
    if isinstance(obj, dict):
        return {k: sub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sub(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(sub(v) for v in obj)
    return obj


@dataclass(frozen=True, slots=True)
class StorageRef:
    key: str           # record name under <archive>/data/
    dtype: str
    numel: int         # elements declared by the pickle


class TensorRef:
    """Metadata of a tensor in the file: where its bytes are, never the bytes themselves."""

    __slots__ = ("storage", "storage_offset", "shape", "stride", "requires_grad", "is_parameter")

    def __init__(self, storage: StorageRef, storage_offset: int, shape: tuple, stride: tuple,
                 requires_grad: bool = False):
        self.storage = storage
        self.storage_offset = storage_offset
        self.shape = shape
        self.stride = stride
        self.requires_grad = requires_grad
        self.is_parameter = False

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        return prod(self.shape) if self.shape else 1

    def info(self, key: str) -> TensorInfo:
        return TensorInfo(key, self.shape, self.dtype)

    def is_contiguous(self) -> bool:
        expected = 1
        for size, st in zip(reversed(self.shape), reversed(self.stride)):
            if size != 1 and st != expected:
                return False
            expected *= size
        return True

    def __repr__(self) -> str:
        return f"TensorRef({self.dtype}, {list(self.shape)})"


class DtypeRef(str):
    """A torch dtype appearing as a value (e.g. in a config): kept as its name."""


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    # Fast path for what torch.save writes (tuples of non-negative ints); anything else goes
    # through the careful checks below, which name the problem.
    if (type(storage) is StorageRef and type(storage_offset) is int and storage_offset >= 0
            and type(size) is tuple and type(stride) is tuple and len(size) == len(stride)):
        last = storage_offset
        empty = False
        for s, st in zip(size, stride):
            if type(s) is not int or type(st) is not int or s < 0 or st < 0:
                break
            if s == 0:
                empty = True
            last += (s - 1) * st
        else:
            if empty or last < storage.numel:
                return TensorRef(storage, storage_offset, size, stride, bool(requires_grad))
    return _rebuild_tensor_checked(storage, storage_offset, size, stride, requires_grad)


def _rebuild_tensor_checked(storage, storage_offset, size, stride, requires_grad=False):
    if not isinstance(storage, StorageRef):
        raise _Bad("tensor rebuilt from something that is not a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise _Bad("tensor with a negative or non-integer storage offset")
    size = _int_tuple(size, "shape")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise _Bad("tensor shape and stride differ in length")
    if any(s < 0 for s in size):
        raise _Bad(f"tensor with a negative dimension {list(size)}")
    if any(st < 0 for st in stride):
        raise _Bad(f"tensor with a negative stride {list(stride)}")
    if all(s > 0 for s in size):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= storage.numel:
            raise _Bad(
                f"tensor of shape {list(size)} (offset {storage_offset}, stride {list(stride)}) "
                f"runs past its storage of {storage.numel} elements"
            )
    return TensorRef(storage, storage_offset, size, stride, bool(requires_grad))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if isinstance(data, TensorRef):
        data.requires_grad = bool(requires_grad)
        data.is_parameter = True
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter):
        raise _Bad("tensor subclass rebuilt through an unexpected function")
    if not isinstance(args, tuple):
        raise _Bad("tensor subclass rebuilt with bad arguments")
    return func(*args)


def _size(*args):
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(_int_tuple(args[0], "size"))
    return tuple(_int_tuple(args, "size"))


def _device(*args):
    return DtypeRef(":".join(str(a) for a in args))


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1")
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise _Bad("_codecs.encode with unexpected arguments")
    return obj.encode(encoding, errors if errors in ("strict",) else "strict")


def _ordered_dict(*args, **kwargs):
    from collections import OrderedDict

    if len(args) > 1:
        raise _Bad("OrderedDict with bad arguments")
    if args and not isinstance(args[0], (list, tuple, dict)):
        raise _Bad("OrderedDict built from an unexpected object")
    return OrderedDict(*args, **kwargs)


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if isinstance(dtype, _NumpyDtype) and isinstance(data, (bytes, bytearray)):
        try:
            dt = np.dtype(dtype.code)
        except TypeError:
            raise _Bad("numpy scalar of an unknown dtype") from None
        if dt.hasobject or len(data) != dt.itemsize:
            raise _Bad("numpy scalar with bad data")
        return np.frombuffer(bytes(data), dtype=dt)[0].item()
    raise _Bad("numpy scalar with bad arguments")


class _NumpyDtype:
    def __init__(self, code, align=False, copy=False):
        if not isinstance(code, str) or len(code) > 8 or code.startswith("O"):
            raise _Bad("numpy dtype with bad arguments")
        self.code = code
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _Bad(Exception):
    """Raised inside the unpickler for inconsistent data; becomes a CheckpointError."""


def _int_tuple(v, what: str) -> tuple:
    if not isinstance(v, (tuple, list)):
        raise _Bad(f"tensor {what} is not a tuple")
    for x in v:
        if type(x) is not int:  # bool excluded on purpose
            raise _Bad(f"tensor {what} holds a non-integer")
    return tuple(v)


def _bytearray(*args):
    if len(args) > 2 or (args and not isinstance(args[0], (bytes, bytearray, str, list))):
        raise _Bad("bytearray with unexpected arguments")  # bytearray(10**12) would allocate
    if args and isinstance(args[0], str):
        return bytearray(args[0], *(args[1:] or ("latin1",)))
    return bytearray(*args[:1])


def _bounded(kind):
    def build(*args):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset, dict, str, bytes))):
            raise _Bad(f"{kind.__name__}() built from {type(args[0]).__name__ if args else 'nothing'}: "
                       "only literal containers are accepted (a range could be endless)")
        return kind(*args)
    return build


ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _size,
    ("torch", "device"): _device,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): _bounded(set),
    ("builtins", "frozenset"): _bounded(frozenset),
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("builtins", "bytearray"): _bytearray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _NumpyDtype,
}
for _name in STORAGE_DTYPES:
    ALLOWED[("torch", _name)] = ("storage", STORAGE_DTYPES[_name])
    ALLOWED[("torch.storage", _name)] = ("storage", STORAGE_DTYPES[_name])
ALLOWED[("torch.storage", "TypedStorage")] = ("storage", "float32")
ALLOWED[("torch.nn.parameter", "Parameter")] = ("parameter-type", None)
for _name in TORCH_DTYPES:
    ALLOWED[("torch", _name)] = DtypeRef("torch." + _DTYPE_ALIASES.get(_name, _name))

# names that look harmless but reach code: named explicitly so the error says why
_KNOWN_DANGEROUS = {
    "torch.load", "torch.serialization.load", "torch.storage._load_from_bytes", "torch.jit.load",
    "torch._C._jit_pass", "numpy.load", "numpy.lib.npyio.load", "functools.partial",
    "functools.reduce", "operator.attrgetter", "operator.methodcaller", "operator.itemgetter",
}


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """What pickle's fix_imports turns a Python 2 global into (protocol < 3 files)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _is_dangerous(module: str, name: str) -> bool:
    full = f"{module}.{name}"
    if full in _KNOWN_DANGEROUS:
        return True
    root = module.split(".", 1)[0]
    return root in DANGEROUS_MODULES or module in DANGEROUS_MODULES


class SafeUnpickler(pickle.Unpickler):
    """Unpickler whose find_class never imports and persistent_load never reads tensor data."""

    def __init__(self, data: bytes | memoryview, path, storage_sizes: dict[str, int] | None = None):
        super().__init__(io.BytesIO(data))
        self._path = path
        self.storage_sizes = storage_sizes  # record key -> bytes available, for bound checks
        self.globals_seen: list[str] = []
        self.opaque_seen: list[str] = []
        self._opaque_classes: dict[str, type] = {}
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str):
        if type(module) is not str or type(name) is not str:
            raise RefusedGlobalError(self._path, repr((module, name)), "non-string global name")
        full = f"{module}.{name}"
        if full not in self.globals_seen:
            self.globals_seen.append(full)
        # a real unpickler maps Python 2 names (`__builtin__`, `copy_reg`, ...) before importing:
        # judge the name it would really resolve, not only the spelling in the file
        candidates = [(module, name), _py3_name(module, name)]
        for m, n in candidates:
            allowed = ALLOWED.get((m, n))
            if allowed is not None:
                return allowed
        for m, n in candidates:
            if _is_dangerous(m, n):
                raise RefusedGlobalError(self._path, full)
        if "__" in name or "__" in module:
            # dunder lookups (`__reduce__`, `__builtins__`) are a classic route to code
            raise RefusedGlobalError(self._path, full, "dunder name")
        if "." in name and not all(part[:1].isupper() for part in name.split(".")):
            # protocol 4 resolves dotted names attribute by attribute: `pathlib` + `os.system`
            # reaches os.system, `Path.write_text` a method; nested classes are capitalised
            raise RefusedGlobalError(self._path, full, "attribute chain reaching a module or function")
        cls = self._opaque_classes.get(full)
        if cls is None:
            base = Opaque if (name[:1].isupper() or "." in name) else OpaqueFunction
            cls = type(name.rsplit(".", 1)[-1], (base,), {"module": module, "qualname": name})
            self._opaque_classes[full] = cls
            self.opaque_seen.append(full)
        return cls

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise _Bad(f"unexpected persistent id {_short_repr(pid)}")
        _, stype, key, _location, numel = pid
        if not (isinstance(stype, tuple) and stype[0] == "storage"):
            raise _Bad("persistent id names an unknown storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise _Bad("persistent id with a bad key or size")
        dtype = stype[1]
        existing = self.storages.get(key)
        if existing is not None:
            return existing
        itemsize = DTYPE_SIZES[dtype]
        if self.storage_sizes is not None:
            have = self.storage_sizes.get(key)
            if have is None:
                raise _Bad(f"storage record data/{key} is missing from the archive")
            if numel * itemsize > have:
                raise _Bad(f"storage data/{key} declares {numel} elements but its record holds only {have} bytes")
        ref = StorageRef(key, dtype, numel)
        self.storages[key] = ref
        return ref


# opcode byte -> how its argument is laid out (from pickletools' own opcode table):
# n >= 0 fixed size, _LINE / _TWO_LINES newline-terminated, -10 - k a k-byte length prefix
_LINE, _TWO_LINES, _UNKNOWN = -1, -2, -100
_ARG_LAYOUT = [_UNKNOWN] * 256
for _op in pickletools.opcodes:
    _a = _op.arg
    if _a is None:
        _lay = 0
    elif _a.n >= 0:
        _lay = _a.n
    elif _a.n == pickletools.UP_TO_NEWLINE:
        _lay = _TWO_LINES if _op.name in ("GLOBAL", "INST") else _LINE
    else:
        _lay = -10 - {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                      pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}[_a.n]
    _ARG_LAYOUT[ord(_op.code.encode("latin1"))] = _lay
_ARG_LAYOUT[ord(".")] = _UNKNOWN  # STOP ends the scan
_LONG_BINPUT, _PUT, _BINSTRING = ord("r"), ord("p"), ord("T")


def check_memo_indices(data: bytes) -> None:
    """Refuse memo indices no honest pickle has, before the C unpickler sees them.

    CPython's unpickler sizes its memo array to twice the largest PUT index: a 12-byte pickle
    with LONG_BINPUT 2**28 makes it allocate and zero 4 GiB. An index is honest when it is
    below the pickle's length (every memoised object costs at least one opcode byte).
    """
    n = len(data)
    pos = 0
    layout = _ARG_LAYOUT
    from_bytes = int.from_bytes
    find = data.find
    while pos < n:
        op = data[pos]
        lay = layout[op]
        pos += 1
        if lay >= 0:
            if op == _LONG_BINPUT and from_bytes(data[pos:pos + 4], "little") >= n:
                raise _Bad(f"pickle memo index {from_bytes(data[pos:pos + 4], 'little')} is larger than "
                           "the pickle (crafted)")
            pos += lay
        elif lay <= -11:
            size = -10 - lay
            if op == _BINSTRING:
                length = from_bytes(data[pos:pos + 4], "little", signed=True)
                if length < 0:
                    return
            else:
                length = from_bytes(data[pos:pos + size], "little")
            pos += size + length
        elif lay == _LINE:
            end = find(b"\n", pos)
            if end < 0:
                return
            if op == _PUT:
                digits = data[pos:end].strip()
                if len(digits) > 12 or (digits.isdigit() and int(digits) >= n):
                    raise _Bad("pickle memo index larger than the pickle (crafted)")
            pos = end + 1
        elif lay == _TWO_LINES:
            end = find(b"\n", pos)
            end = find(b"\n", end + 1) if end >= 0 else -1
            if end < 0:
                return
            pos = end + 1
        else:
            return  # STOP or an unknown opcode: the unpickler reports it


MAX_NESTING = 100             # honest checkpoints nest < 20 levels
MAX_EXPANDED_NODES = 20_000_000  # nodes a full walk of the object would visit (shared parts counted again)


def _children(o):
    if isinstance(o, dict):
        return iter(list(o.keys()) + list(o.values()))
    if isinstance(o, (list, tuple, set, frozenset)):
        return iter(o)
    if isinstance(o, Opaque):
        return iter((o.args, o.kwargs, o.state, o.items, o.setitems))
    return None


def check_structure(root: Any) -> None:
    """Refuse objects every walker would choke on: cycles, absurd nesting, exponential sharing.

    Memory stays small (shared references), but showing, walking or writing such an object
    back would recurse forever or visit 2**80 nodes; better one clear error up front.
    """
    end = object()
    it = _children(root)
    if it is None:
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
                    raise _Bad(f"pickle's object graph expands to more than {MAX_EXPANDED_NODES} nodes "
                               "(crafted sharing)")
            continue
        cit = _children(child)
        if cit is None:
            frame[2] += 1
            continue
        cid = id(child)
        if cid in memo:
            frame[2] += memo[cid]
            if frame[2] > MAX_EXPANDED_NODES:
                raise _Bad(f"pickle's object graph expands to more than {MAX_EXPANDED_NODES} nodes "
                           "(crafted sharing)")
            continue
        if cid in active:
            raise _Bad(f"pickle holds a container that contains itself ({type(child).__name__} reference cycle)")
        if len(stack) >= MAX_NESTING:
            raise _Bad(f"pickle nests containers more than {MAX_NESTING} levels deep")
        active.add(cid)
        stack.append([child, cit, 0])


def safe_loads(data: bytes | memoryview, path, storage_sizes: dict[str, int] | None) -> tuple[Any, SafeUnpickler]:
    """Unpickle `data` safely; returns (object, unpickler) or raises CheckpointError."""
    data = bytes(data)
    up = SafeUnpickler(data, path, storage_sizes)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the unpickler only allocates; collections during it cost ~2/3 of the time
    try:
        check_memo_indices(data)
        obj = up.load()
        check_structure(obj)
    except CheckpointError:  # RefusedGlobalError included: already says it all
        raise
    except _Bad as exc:
        raise CheckpointError(path, str(exc)) from None
    except RecursionError:
        raise CheckpointError(path, "pickle nests too deeply") from None
    except MemoryError:
        raise CheckpointError(path, "pickle needs too much memory") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            UnicodeDecodeError, OverflowError, struct.error) as exc:
        raise CheckpointError(path, f"corrupt pickle ({type(exc).__name__}: {_short_repr(str(exc), 80)})") from None
    finally:
        if gc_was_enabled:
            gc.enable()
    return obj, up

