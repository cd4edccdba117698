"""The reviewed allow-list of pickle globals, each with the one way it may be used.

A pickle names globals (``module.name``) and then *uses* them with an opcode: REDUCE calls a
global, NEWOBJ instantiates a class without running its ``__init__``, BUILD sets an object's state,
and some globals are plain values (a dtype, a storage type). `torch.load(weights_only=False)`
imports any global and uses it any way the file says, which is how a pickle runs code. Here only
the globals below exist; each maps to our own inert implementation, which accepts only the usage
GPT-SoVITS, Lightning and ``torch.save`` really produce (FORMATS.md §9):

* ``call``: torch's tensor/parameter rebuild helpers, ``collections.OrderedDict``, ``torch.Size``,
  ``torch.device``, ``_codecs.encode`` (protocol-2 bytes), ``set``/``frozenset``/``bytearray``/
  ``complex`` of literal data, numpy scalar reconstruction: REDUCE with checked arguments.
* ``class``: ``utils.HParams``, ``argparse.Namespace``, Lightning's ``AttributeDict``: NEWOBJ with
  no arguments, then BUILD with a dict of named fields (and SETITEMS for the dict subclass). A
  REDUCE of one of these classes (a call of its ``__init__``) is refused.
* ``path``: the ``pathlib`` path classes: REDUCE with string parts only (their ``__reduce__``); never
  BUILD.
* ``value``: storage types (inside persistent ids), dtypes, ``torch.Tensor``/``Parameter`` (as the
  type argument of ``_rebuild_from_type_v2``): never called.

Any other global, or an allowed one used another way, makes the file *unsafe* (`Unsafe`): the
loader refuses it, naming the global, unless the user passes ``--trust``. The export writer writes
only these globals, with the same opcodes (`writer_kind`).

A little over 500 lines on purpose: the whole allow-list, with each global's inert stand-in, is
reviewed in one place, so nothing can be allowed from elsewhere.
"""

from __future__ import annotations

import reprlib
from collections import OrderedDict
from math import prod
from typing import Any

from ..meta import TensorInfo

MAX_STRING_BYTES = 16 << 20   # any str/bytes in a pickle (a GPT-SoVITS config string is < 10 KB)
MAX_DIMS = 64                 # torch's own limit on tensor rank
MAX_EXTENT = 1 << 48          # any dimension, stride or offset: far past any real tensor, far below overflow


class Unsafe(Exception):
    """A global off the allow-list, or an allowed one used in a way nothing honest writes."""

    def __init__(self, name: str, why: str):
        self.name = name
        self.why = why
        super().__init__(f"{name}: {why}")


class Bad(Exception):
    """Inconsistent data found while unpickling; becomes a CheckpointError."""


# ---------------------------------------------------------------------------------------------
# placeholders for the allowed classes and paths

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 6, 6, 6, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def short_repr(v: Any, limit: int = 40) -> str:
    """repr bounded in depth and width: a crafted DAG or a deep list cannot make it hang."""
    try:
        r = _REPR.repr(v)
    except (RecursionError, ValueError):
        r = f"<{type(v).__name__}>"
    return r if len(r) <= limit else r[: limit - 3] + "..."


class Opaque:
    """An inert stand-in for an allow-listed class we never import (``utils.HParams``, paths...).

    Records how the pickle built it (`args`, `state`, `items`, `setitems`) so it can be shown and
    written back with the same opcodes. Subclasses are made per global by the unpickler.
    """

    module: str = "?"
    qualname: str = "?"
    kind: str = "class"   # "class" (NEWOBJ + BUILD) or "path" (REDUCE with string parts)

    def __new__(cls, *args, **kwargs):  # NEWOBJ calls only this; REDUCE calls it, then __init__
        if args or kwargs:
            raise Unsafe(cls.module + "." + cls.qualname, "instantiated with arguments (NEWOBJ); only NEWOBJ "
                         "without arguments followed by BUILD is allowed")
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.setitems = (), {}, None, [], {}
        return obj

    def __init__(self, *args, **kwargs):  # only REDUCE/INST/OBJ with arguments get here
        raise Unsafe(self.fullname, "called (REDUCE); this class is allowed only as NEWOBJ + BUILD, "
                     "as GPT-SoVITS and Lightning pickle it")

    def __setstate__(self, state):  # BUILD
        if self.state is not None:
            raise Unsafe(self.fullname, "BUILD applied twice")
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise Unsafe(self.fullname, "BUILD with a state that is not a dict of named fields")
        self.state = state

    def append(self, item):  # APPEND(S) on a list subclass
        raise Unsafe(self.fullname, "APPEND on a class that is not a list")

    def extend(self, items):
        raise Unsafe(self.fullname, "APPENDS on a class that is not a list")

    def __setitem__(self, key, value):  # SETITEM(S) on a dict subclass
        if not self.dict_like:
            raise Unsafe(self.fullname, "SETITEM on a class that is not a dict")
        self.setitems[key] = value

    dict_like = False

    @property
    def fullname(self) -> str:
        return f"{self.module}.{self.qualname}"

    def as_plain(self) -> Any:
        """Plain view: the fields of an HParams-like object as nested dicts, a path as a string."""
        from .safe_unpickle import plain_view

        return plain_view(self)

    def __repr__(self) -> str:
        bits = []
        if self.args:
            bits.append(", ".join(short_repr(a) for a in self.args))
        if isinstance(self.state, dict):
            bits.append(", ".join(f"{k}={short_repr(v)}" for k, v in list(self.state.items())[:6]))
            if len(self.state) > 6:
                bits.append("...")
        return f"<{self.fullname}({', '.join(b for b in bits if b)})>"


class PathPlaceholder(Opaque):
    """A pickled pathlib path: built by REDUCE from its string parts, nothing else."""

    kind = "path"

    def __init__(self, *args, **kwargs):  # made by _make_path only
        pass

    def __setstate__(self, state):
        raise Unsafe(self.fullname, "BUILD on a path (paths carry no state)")

    def __setitem__(self, key, value):
        raise Unsafe(self.fullname, "SETITEM on a path")


def _path_factory(module: str, name: str):
    cls = type(name, (PathPlaceholder,), {"module": module, "qualname": name})

    def make_path(*parts):
        if not all(type(p) is str for p in parts):
            raise Unsafe(f"{module}.{name}", "path built from something other than strings")
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.setitems = tuple(parts), {}, None, [], {}
        return obj

    make_path.placeholder = cls
    return make_path


def _class_placeholder(module: str, name: str, dict_like: bool) -> type:
    return type(name, (Opaque,), {"module": module, "qualname": name, "dict_like": dict_like})


# ---------------------------------------------------------------------------------------------
# tensors and storages

class StorageRef:
    """A storage record named by a persistent id: where a tensor's bytes are."""

    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key: str, dtype: str, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel

    def __setstate__(self, state):
        raise Bad("BUILD on a storage (nothing honest writes one)")

    def __repr__(self) -> str:
        return f"StorageRef({self.key!r}, {self.dtype}, {self.numel})"


class TensorRef:
    """Metadata of a tensor in the file: where its bytes are, never the bytes themselves.

    Immutable to the pickle: BUILD on it is refused, so the bounds checked when it was made are
    the bounds it keeps (`validate_ref` checks them again after the whole pickle has run).
    """

    __slots__ = ("storage", "storage_offset", "shape", "stride", "requires_grad", "is_parameter")

    def __init__(self, storage: StorageRef, storage_offset: int, shape: tuple, stride: tuple,
                 requires_grad: bool = False):
        self.storage = storage
        self.storage_offset = storage_offset
        self.shape = shape
        self.stride = stride
        self.requires_grad = requires_grad
        self.is_parameter = False

    def __setstate__(self, state):
        raise Bad("BUILD on a tensor after it was built (would change its checked bounds)")

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
    """A torch dtype or device appearing as a value (e.g. in a config): kept as its name."""


def validate_ref(ref: TensorRef) -> None:
    """Raise Bad unless every element `ref` can address lies inside its storage.

    Run on the final object, after the whole pickle has run (`safe_unpickle.check_structure`):
    nothing can change a TensorRef after that. Python ints cannot overflow; every extent is bounded
    so numpy's byte strides cannot either, and a view may repeat its storage (an expanded tensor)
    only up to `MAX_REPEAT` times or `MAX_REPEAT_ELEMENTS` elements, so no reader walks terabytes.
    """
    storage, off, size, stride = ref.storage, ref.storage_offset, ref.shape, ref.stride
    # fast path: what torch.save writes (tuples of small non-negative ints, in bounds)
    if (type(storage) is StorageRef and type(off) is int and type(size) is tuple and type(stride) is tuple
            and len(size) == len(stride) <= MAX_DIMS and 0 <= off < MAX_EXTENT):
        last, numel = off, 1
        for s, st in zip(size, stride):
            if type(s) is not int or type(st) is not int or not 0 <= s < MAX_EXTENT or not 0 <= st < MAX_EXTENT:
                break
            last += (s - 1) * st
            numel *= s
        else:
            if numel == 0 or (last < storage.numel and numel <= max(MAX_REPEAT * storage.numel, MAX_REPEAT_ELEMENTS)):
                if numel or prod(s for s in size if s) < MAX_EXTENT:
                    return
    _validate_slow(storage, off, size, stride)


MAX_REPEAT, MAX_REPEAT_ELEMENTS = 16, 1 << 24


def _validate_slow(storage, off, size, stride) -> None:
    """The same checks as validate_ref, one at a time, so the message names the problem."""
    if type(storage) is not StorageRef:
        raise Bad("tensor rebuilt from something that is not a storage")
    if type(off) is not int or off < 0:
        raise Bad("tensor with a negative or non-integer storage offset")
    if type(size) is not tuple or type(stride) is not tuple:
        raise Bad("tensor shape or stride is not a tuple")
    if len(size) != len(stride):
        raise Bad("tensor shape and stride differ in length")
    if len(size) > MAX_DIMS:
        raise Bad(f"tensor with {len(size)} dimensions (torch allows {MAX_DIMS})")
    if not all(type(v) is int for v in size + stride):
        raise Bad("tensor shape or stride holds a non-integer")
    if any(v < 0 for v in size):
        raise Bad(f"tensor with a negative dimension {list(size)}")
    if any(v < 0 for v in stride):
        raise Bad(f"tensor with a negative stride {list(stride)}")
    if off >= MAX_EXTENT or any(v >= MAX_EXTENT for v in size + stride) or prod(v for v in size if v) >= MAX_EXTENT:
        raise Bad(f"tensor with an absurd size, stride or offset (limit {MAX_EXTENT})")
    numel = prod(size)
    if numel:
        last = off + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= storage.numel:
            raise Bad(f"tensor of shape {list(size)} (offset {off}, stride {list(stride)}) "
                      f"runs past its storage of {storage.numel} elements")
        raise Bad(f"tensor of shape {list(size)} repeats its storage of {storage.numel} elements more than "
                  f"{MAX_REPEAT} times (an expanded view; the readers would walk all of it)")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if backward_hooks is not None and not (type(backward_hooks) is OrderedDict and not backward_hooks):
        raise Unsafe("torch._utils._rebuild_tensor_v2", "tensor with backward hooks")
    if type(size) is list:
        size = tuple(size)
    if type(stride) is list:
        stride = tuple(stride)
    if type(storage) is not StorageRef:
        raise Bad("tensor rebuilt from something that is not a storage")
    return TensorRef(storage, storage_offset, size, stride, bool(requires_grad))  # bounds: check_structure


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if type(data) is not TensorRef:
        raise Bad("parameter rebuilt from something that is not a tensor")
    if backward_hooks is not None and not (type(backward_hooks) is OrderedDict and not backward_hooks):
        raise Unsafe("torch._utils._rebuild_parameter", "parameter with backward hooks")
    data.requires_grad = bool(requires_grad)
    data.is_parameter = True
    return data


class _GlobalValue:
    """An allow-listed global that is only ever a value (a storage type, a tensor type)."""

    __slots__ = ("name", "payload")

    def __init__(self, name: str, payload: Any):
        self.name, self.payload = name, payload

    def __call__(self, *args, **kwargs):
        raise Unsafe(self.name, "called (REDUCE); it is allowed only as a value")

    def __reduce__(self):
        raise TypeError(f"{self.name} is not written back")


_TENSOR_TYPES = ("torch.Tensor", "torch.nn.parameter.Parameter")


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter):
        raise Unsafe("torch._tensor._rebuild_from_type_v2", "tensor subclass rebuilt through another function")
    if not (isinstance(new_type, _GlobalValue) and new_type.name in _TENSOR_TYPES):
        raise Unsafe("torch._tensor._rebuild_from_type_v2", "tensor rebuilt as a type that is not a tensor")
    if type(args) is not tuple:
        raise Bad("tensor subclass rebuilt with bad arguments")
    if state not in (None, {}) and not (type(state) is OrderedDict and not state):
        raise Unsafe("torch._tensor._rebuild_from_type_v2", "tensor with Python attributes set on it")
    ref = func(*args)
    if new_type.name == "torch.nn.parameter.Parameter" and type(ref) is TensorRef:
        ref.is_parameter = True
    return ref


# ---------------------------------------------------------------------------------------------
# containers and small values

def _int_tuple(v, what: str) -> tuple:
    if not isinstance(v, (tuple, list)) or not all(type(x) is int for x in v):
        raise Bad(f"{what} is not a tuple of integers")
    return tuple(v)


def _size(*args):
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return _int_tuple(args[0], "torch.Size")
    return _int_tuple(args, "torch.Size")


def _device(*args):
    if not 1 <= len(args) <= 2 or type(args[0]) is not str or len(args[0]) > 32 or (
            len(args) == 2 and type(args[1]) is not int):
        raise Bad("torch.device with bad arguments")
    return DtypeRef(":".join(str(a) for a in args))


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1")
    if type(obj) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise Unsafe("_codecs.encode", "used with another codec than latin1 (protocol-2 bytes)")
    return obj.encode("latin1")


def _ordered_dict(*args):
    if args and (len(args) > 1 or type(args[0]) not in (list, tuple)):
        raise Bad("OrderedDict built from an unexpected object")
    return OrderedDict(*args)


def _bytearray(*args):
    # protocol 2 writes bytearray(str, 'latin-1'); protocol 3+ bytearray(bytes)
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin-1", "latin1"):
        return bytearray(args[0], "latin-1")
    if len(args) == 1 and type(args[0]) is bytes:
        return bytearray(args[0])
    if not args:
        return bytearray()
    raise Unsafe("builtins.bytearray", "built from something other than latin-1 text or bytes "
                 "(a size would allocate, a codec could take minutes)")


def _literal_collection(kind):
    def build(*args):
        if len(args) > 1 or (args and type(args[0]) not in (list, tuple)):
            raise Unsafe(f"builtins.{kind.__name__}", "built from something other than a literal list "
                         "(a range could be endless)")
        return kind(*args)
    return build


def _complex(real=0.0, imag=0.0):
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise Bad("complex built from non-numbers")
    return complex(real, imag)


class _NumpyDtype:
    """numpy.dtype as REDUCE('f8', False, True) + BUILD(state): only the code is kept."""

    def __init__(self, code, align=False, copy=False):
        if type(code) is not str or len(code) > 8 or code.startswith("O"):
            raise Unsafe("numpy.dtype", "a dtype other than a plain number type")
        self.code = code
        self.state = None

    def __setstate__(self, state):
        self.state = state


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if type(dtype) is _NumpyDtype and type(data) is bytes:
        try:
            dt = np.dtype(dtype.code)
        except TypeError:
            raise Bad("numpy scalar of an unknown dtype") from None
        if dt.hasobject or len(data) != dt.itemsize:
            raise Bad("numpy scalar with bad data")
        return np.frombuffer(data, dtype=dt)[0].item()
    raise Unsafe("numpy.core.multiarray.scalar", "used with something other than a dtype and its bytes")


# ---------------------------------------------------------------------------------------------
# the list

# Storage classes torch pickles (GLOBAL 'torch FloatStorage' ...) -> dtype name
STORAGE_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
TORCH_DTYPES = {
    "float32", "float", "float16", "half", "bfloat16", "float64", "double", "int64", "long", "int32", "int",
    "int16", "short", "int8", "uint8", "bool", "complex64", "complex128", "cfloat", "cdouble",
    "float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64",
}
_DTYPE_ALIASES = {"float": "float32", "half": "float16", "double": "float64", "long": "int64",
                  "int": "int32", "short": "int16", "cfloat": "complex64", "cdouble": "complex128"}

CLASSES = {  # (module, name) -> is a dict subclass
    ("utils", "HParams"): False,
    ("argparse", "Namespace"): False,
    ("pytorch_lightning.utilities.parsing", "AttributeDict"): True,
    ("lightning.pytorch.utilities.parsing", "AttributeDict"): True,
    ("lightning_fabric.utilities.data", "AttributeDict"): True,
    ("lightning.fabric.utilities.data", "AttributeDict"): True,
}
PATHS = {(m, n) for m in ("pathlib", "pathlib._local")
         for n in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")}

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
    ("builtins", "set"): _literal_collection(set),
    ("builtins", "frozenset"): _literal_collection(frozenset),
    ("builtins", "complex"): _complex,
    ("builtins", "bytearray"): _bytearray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _NumpyDtype,
    ("torch", "Tensor"): _GlobalValue("torch.Tensor", None),
    ("torch._tensor", "Tensor"): _GlobalValue("torch.Tensor", None),
    ("torch.nn.parameter", "Parameter"): _GlobalValue("torch.nn.parameter.Parameter", None),
}
for _name, _dt in STORAGE_DTYPES.items():
    for _mod in ("torch", "torch.storage"):
        ALLOWED[(_mod, _name)] = _GlobalValue(f"{_mod}.{_name}", _dt)
ALLOWED[("torch.storage", "TypedStorage")] = _GlobalValue("torch.storage.TypedStorage", "float32")
for _name in TORCH_DTYPES:
    ALLOWED[("torch", _name)] = DtypeRef("torch." + _DTYPE_ALIASES.get(_name, _name))
for (_mod, _name), _dl in CLASSES.items():
    ALLOWED[(_mod, _name)] = _class_placeholder(_mod, _name, _dl)
for _mod, _name in PATHS:
    ALLOWED[(_mod, _name)] = _path_factory(_mod, _name)

# What the export writer may emit, by (module, name): "call" -> REDUCE, "class" -> NEWOBJ,
# "value" -> a bare GLOBAL. Placeholders are written through these rules too.
WRITER_KINDS: dict[tuple[str, str], str] = {}
for _key, _obj in ALLOWED.items():
    if isinstance(_obj, (_GlobalValue, DtypeRef)):
        WRITER_KINDS[_key] = "value"
    elif _key in CLASSES:
        WRITER_KINDS[_key] = "class"
    else:
        WRITER_KINDS[_key] = "call"   # functions, paths (REDUCE with their parts), numpy.dtype
WRITER_KINDS[("torch", "Size")] = "call"


def writer_kind(module: str, name: str) -> str | None:
    """How the export writer may use the global `module.name`: "call", "class", "value" or None."""
    return WRITER_KINDS.get((module, name))
