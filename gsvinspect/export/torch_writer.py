"""Write a torch-format zip (``torch.save``) that may hold `Opaque` placeholders, and the 2-byte
header variants GPT-SoVITS uses for its inference exports.

Why a custom pickler: a checkpoint's config can be a ``utils.HParams`` or a ``pathlib.PosixPath``,
classes we deliberately never import (safe_unpickle turns them into `Opaque`). To write such an
object back unchanged we emit the pickle opcodes ourselves: ``GLOBAL "module qualname"``, then
NEWOBJ without arguments + SETITEMS + BUILD for a class, REDUCE of its string parts for a path.
Nothing is imported, so the file reloads in GPT-SoVITS exactly as the original did. Everything
else (tensors, storages, dicts) goes through torch's normal ``torch.save`` machinery.

Nothing unsafe is ever written (issue 12): every GLOBAL must be on the loader's allow-list
(`allowlist.writer_kind`), a REDUCE may call only a "call" global, a NEWOBJ instantiate only a
"class" one, so an export can neither carry a payload nor turn a dormant NEWOBJ into a call.

Files are always written through a file object, so the archive folder is ``archive/`` (as
``my_save2`` and Lightning produce) and the byte size does not depend on the temp file's name.
"""

from __future__ import annotations

import pickle
import types
from typing import Any, BinaryIO

from ..load.allowlist import writer_kind
from ..load.safe_unpickle import DtypeRef, Opaque
from .upstream_version import HEAD2VERSION

VALID_HEADERS = (b"PK", *HEAD2VERSION)  # a plain zip, or a header GPT-SoVITS's loader knows


class OpaquePickler(pickle._Pickler):  # pure-Python pickler: lets us emit raw opcodes
    """Pickler that writes `Opaque` placeholders back under their original global name."""

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:  # noqa: D102
        if isinstance(obj, type) and issubclass(obj, Opaque):
            self._save_opaque_global(obj)
            return
        if isinstance(obj, Opaque):
            self._save_opaque(obj)
            return
        if type(obj) is DtypeRef:
            self._save_dtype_ref(obj)
            return
        super().save(obj, save_persistent_id)

    # -- placeholders -------------------------------------------------------------------------
    def _from_memo(self, obj: Any) -> bool:
        x = self.memo.get(id(obj))
        if x is not None:
            self.write(self.get(x[0]))
            return True
        return False

    # globals written under another name than their Python one (synth's stand-in HParams)
    RENAMES: dict = {}

    def _write_global(self, module: str, qualname: str) -> None:
        if "\n" in module or "\n" in qualname:
            raise pickle.PicklingError(f"cannot write global {module}.{qualname}: newline in name")
        _require(module, qualname, None)
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + module.encode("utf-8") + b"\n" + qualname.encode("utf-8") + b"\n")

    def _name_of(self, obj: Any) -> tuple[str, str]:
        """The (module, name) the pickler writes for a class or function (as pickle resolves it)."""
        try:
            return self.RENAMES[obj]
        except (KeyError, TypeError):   # not renamed, or unhashable
            pass
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
        return pickle.whichmodule(obj, name), name

    def save_global(self, obj: Any, name: str | None = None) -> None:  # noqa: D102
        module, qual = self._name_of(obj) if name is None else (pickle.whichmodule(obj, name), name)
        _require(module, qual, None)
        super().save_global(obj, name)

    def save_reduce(self, func, args, state=None, listitems=None, dictitems=None, state_setter=None,  # noqa: D102
                    *, obj=None) -> None:
        fname = getattr(func, "__name__", "")
        if state_setter is not None or fname == "__newobj_ex__":
            raise pickle.PicklingError(f"refusing to write {type(obj).__name__}: it pickles with a state setter "
                                       "or keyword construction, which nothing allow-listed uses")
        if fname == "__newobj__":
            _require(*self._name_of(args[0]), "class")
        else:
            _require(*self._name_of(func), "call")
        super().save_reduce(func, args, state, listitems, dictitems, state_setter, obj=obj)

    def _save_opaque_global(self, cls: type) -> None:
        raise pickle.PicklingError(f"refusing to write the class {cls.module}.{cls.qualname} as a bare value")

    def _save_opaque(self, obj: Opaque) -> None:
        if self._from_memo(obj):
            return
        if obj.kind == "path":
            _require(obj.module, obj.qualname, "call")
            if not all(type(a) is str for a in obj.args) or obj.state is not None or obj.setitems:
                raise pickle.PicklingError(f"refusing to write {obj.fullname}: a path is only its string parts")
            self._write_global(obj.module, obj.qualname)
            self.save(tuple(obj.args))
            self.write(pickle.REDUCE)
            self.memoize(obj)
            return
        _require(obj.module, obj.qualname, "class")
        if obj.args or obj.kwargs or obj.items:
            raise pickle.PicklingError(f"refusing to write {obj.fullname}: built with arguments or list items")
        # what copyreg's protocol-2 reduction of a plain object writes: NEWOBJ, never a call
        self._write_global(obj.module, obj.qualname)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        if obj.setitems:
            self._batch_setitems(iter(obj.setitems.items()))
        if obj.state is not None:
            self.save(obj.state)
            self.write(pickle.BUILD)

    def _save_dtype_ref(self, ref: DtypeRef) -> None:
        # a torch dtype / device seen as a value: write it as the real torch object
        import torch

        name = str(ref)
        if name.startswith("torch.") and isinstance(getattr(torch, name[6:], None), torch.dtype):
            super().save(getattr(torch, name[6:]))
        else:
            super().save(torch.device(name))


def _require(module: str, name: str, use: str | None) -> None:
    """Refuse to write a global off the allow-list, or one used with another opcode than it may be."""
    kind = writer_kind(module, name)
    if kind is None:
        raise pickle.PicklingError(f"refusing to write the global {module}.{name}: not on the allow-list "
                                   "(an output must never run code when loaded)")
    if use is not None and kind != use:
        verb = {"call": "call (REDUCE)", "class": "instantiate (NEWOBJ)"}[use]
        raise pickle.PicklingError(f"refusing to {verb} {module}.{name}: it is allowed only as a {kind}")


def _pickle_module() -> types.ModuleType:
    mod = types.ModuleType("gsvinspect_pickle")
    mod.Pickler = OpaquePickler  # type: ignore[attr-defined]
    mod.Unpickler = pickle.Unpickler  # type: ignore[attr-defined]
    mod.dump = pickle.dump  # type: ignore[attr-defined]
    mod.load = pickle.load  # type: ignore[attr-defined]
    return mod


PICKLE_MODULE = _pickle_module()


class _HeaderPatch:
    """File-object wrapper replacing the first two bytes written (``my_save2``'s version header)."""

    def __init__(self, f: BinaryIO, header: bytes):
        self._f = f
        self._header = header
        self.written = 0

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        n = len(mv)
        if self.written < 2 and n:
            head = bytearray(mv[: 2 - self.written])
            for i in range(len(head)):
                head[i] = self._header[self.written + i]
            self._f.write(bytes(head))
            if n > len(head):
                self._f.write(mv[len(head):])
        else:
            self._f.write(mv)
        self.written += n
        return n

    def flush(self) -> None:
        self._f.flush()


class CountingSink:
    """A write-only sink that only counts bytes: sizes a file exactly without storing it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n

    def flush(self) -> None:
        pass


def save(obj: Any, f: BinaryIO, *, header: bytes = b"PK") -> int:
    """``torch.save(obj)`` into the open binary file `f`, first two bytes replaced by `header`.

    Returns the number of bytes written. `Opaque` placeholders anywhere in `obj` are written back
    under their original global names.
    """
    import torch

    if header not in VALID_HEADERS:
        raise ValueError(f"unsupported 2-byte header {header!r}")
    sink = f if header == b"PK" else _HeaderPatch(f, header)
    counter = _Counted(sink)
    torch.save(obj, counter, pickle_module=PICKLE_MODULE, pickle_protocol=2)
    return counter.size


def saved_size(obj: Any) -> int:
    """Exact byte size ``save(obj, ...)`` will produce (reads the tensors, writes nothing)."""
    return save(obj, CountingSink())  # type: ignore[arg-type]


class _Counted:
    def __init__(self, f) -> None:
        self._f = f
        self.size = 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self._f.write(data)
        self.size += n
        return n

    def flush(self) -> None:
        self._f.flush()
