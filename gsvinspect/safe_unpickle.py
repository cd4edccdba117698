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

import io
import pickle
import struct
from dataclasses import dataclass
from math import prod
from typing import Any

from .errors import CheckpointError, RefusedGlobalError
from .meta import DTYPE_SIZES, TensorInfo

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


def _short_repr(v: Any, limit: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _plain(obj: Any, _depth: int = 0) -> Any:
    if _depth > 64:
        return "..."
    if isinstance(obj, Opaque):
        # pathlib paths: their args are the path parts
        if obj.module.startswith("pathlib") and obj.qualname.endswith("Path"):
            parts = [a for a in obj.args if isinstance(a, str)]
            if not parts and isinstance(obj.state, tuple):
                parts = [p for p in obj.state if isinstance(p, str)]
            return "/".join(parts).replace("//", "/") if parts else obj.fullname
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
            merged = dict(state[0] or {})
            merged.update(state[1])
            state = merged
        if isinstance(state, dict):
            out = {k: _plain(v, _depth + 1) for k, v in state.items()}
            if obj.setitems:
                out.update({k: _plain(v, _depth + 1) for k, v in obj.setitems.items()})
            return out
        if obj.setitems:
            return {k: _plain(v, _depth + 1) for k, v in obj.setitems.items()}
        if obj.items:
            return [_plain(v, _depth + 1) for v in obj.items]
        if len(obj.args) == 1 and not obj.kwargs:
            return _plain(obj.args[0], _depth + 1)
        return repr(obj)
    if isinstance(obj, dict):
        return {k: _plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, _depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, _depth + 1) for v in obj)
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
    def storage_key(self) -> str:
        return self.storage.key

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
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("builtins", "bytearray"): None,  # resolved below (size-checked)
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _NumpyDtype,
}


def _bytearray(*args):
    if len(args) > 2 or (args and not isinstance(args[0], (bytes, bytearray, str, list))):
        raise _Bad("bytearray with unexpected arguments")  # bytearray(10**12) would allocate
    if args and isinstance(args[0], str):
        return bytearray(args[0], *(args[1:] or ("latin1",)))
    return bytearray(*args[:1])


ALLOWED[("builtins", "bytearray")] = _bytearray
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


def _is_dangerous(module: str, name: str) -> bool:
    full = f"{module}.{name}"
    if full in _KNOWN_DANGEROUS:
        return True
    root = module.split(".", 1)[0]
    return root in DANGEROUS_MODULES or module in DANGEROUS_MODULES


class SafeUnpickler(pickle.Unpickler):
    """Unpickler whose find_class never imports and persistent_load never reads tensor data."""

    def __init__(self, data: bytes | memoryview, path, storages: dict[str, int] | None,
                 storage_sizes: dict[str, int] | None = None):
        super().__init__(io.BytesIO(data))
        self._path = path
        self.storage_sizes = storage_sizes  # record key -> bytes available, for bound checks
        self.globals_seen: list[str] = []
        self.opaque_seen: list[str] = []
        self._opaque_classes: dict[str, type] = {}
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str):
        if not isinstance(module, str) or not isinstance(name, str):
            raise RefusedGlobalError(self._path, repr((module, name)), "non-string global name")
        full = f"{module}.{name}"
        if full not in self.globals_seen:
            self.globals_seen.append(full)
        allowed = ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if _is_dangerous(module, name):
            raise RefusedGlobalError(self._path, full)
        if "__" in name or "__" in module:
            # dunder lookups (`__reduce__`, `__builtins__`) are a classic route to code
            raise RefusedGlobalError(self._path, full, "dunder name")
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


def safe_loads(data: bytes | memoryview, path, storage_sizes: dict[str, int] | None) -> tuple[Any, SafeUnpickler]:
    """Unpickle `data` safely; returns (object, unpickler) or raises CheckpointError."""
    up = SafeUnpickler(data, path, None, storage_sizes)
    try:
        obj = up.load()
    except RefusedGlobalError:
        raise
    except CheckpointError:
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
    return obj, up

