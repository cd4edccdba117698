"""`repair`: one file, rewritten so plain ``torch.load(weights_only=True)`` opens it, and nothing else changed.

Since torch 2.6 made ``weights_only=True`` the default, three things stop GPT-SoVITS files from
loading (FORMATS.md §2.2, §3.2, §9):

* ``Unsupported global: GLOBAL utils.HParams``: SoVITS exports (and s2G488k) pickle their config
  as GPT-SoVITS's ``utils.HParams``. Upstream's loaders accept a plain dict there (they wrap it
  themselves), so the config becomes the nested plain dict it stands for.
* ``Unsupported global: GLOBAL pathlib.PosixPath``: Lightning checkpoints keep ``output_dir`` (and
  Lightning's own fields) as path objects; they become the strings they stand for.
* ``Unsupported operand 48``: a 2-byte version header (``05``...) read by a loader that does not
  strip it. ``--header plain`` writes a plain ``PK`` zip and puts the version in
  ``config.model.version``; ``--header keep`` (the default) keeps it, because GPT-SoVITS's own
  inference reads the version from it (a plain-PK v2Pro file is read as v2 there).

Everything else is written back as it was: every tensor bit for bit (weights, optimizer and
scaler state), Lightning's fields, key order, container types. Nothing from the file ever runs:
it is read by the restricted unpickler and written by our pickler. The write is atomic and
verified like an export's (temp file, fsync, reopen and compare, rename).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError, UsageError
from ..load.safe_unpickle import DtypeRef, Opaque, TensorRef

HEADER_CHOICES = ("keep", "plain")
_SAFE_EXACT = {"collections.OrderedDict", "collections.Counter", "builtins.set", "builtins.bytearray",
               "builtins.complex", "_codecs.encode", "torch.Size", "torch.device", "torch.Tensor",
               "torch.nn.parameter.Parameter", "torch.serialization._get_layout", "torch.storage.TypedStorage"}
_SAFE_RE = re.compile(r"^torch\.(_utils\._rebuild_\w+|_tensor\._rebuild_from_type_v2|(cuda\.)?\w*Storage"
                      r"|storage\.UntypedStorage|(cuda\.)?(sparse\.)?\w+Tensor|u?int\d+|float\w*|bfloat16|complex\w*"
                      r"|bool|bits\w+|half|double|long|short|cfloat|cdouble|qu?int\w+|per_(channel|tensor)_\w+)$")


def weights_only_safe(global_name: str) -> bool:
    """Whether torch's default ``weights_only=True`` unpickler accepts this global (no allowlisting)."""
    return global_name in _SAFE_EXACT or bool(_SAFE_RE.match(global_name))


def weights_only_blockers(ck) -> list[str]:
    """What stops plain ``torch.load(weights_only=True)`` on this file, each as torch says it."""
    if ck.container == "safetensors":
        return []
    out = [] if ck.header == b"PK" else [f"the 2-byte header {ck.header.decode('latin1')!r} (torch reads the file "
                                         f"as a legacy pickle: 'Unsupported operand {ck.header[0]}')"]
    return out + [f"GLOBAL {g}" for g in ck.globals if not weights_only_safe(g)]


@dataclass
class Change:
    """One conversion: where in the object, from what, to what, and why."""

    where: str
    before: str
    after: str
    why: str


@dataclass
class RepairPlan:
    """What `repair` will write, from metadata only."""

    path: Path
    layout: str
    version: str
    header_in: bytes
    header_out: bytes
    changes: list[Change]
    blockers: list[str]                   # what stops weights_only=True today
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    set_version: bool = False             # config.model.version written (header dropped)
    ck: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def loads_after(self) -> bool:
        return self.header_out == b"PK" and not self.problems

    def describe(self) -> list[tuple[str, str]]:
        rows = [("file", str(self.path)), ("model", f"{self.layout}, {self.version}"),
                ("torch.load(weights_only=True)", "fails today: " + "; ".join(self.blockers) if self.blockers
                 else "already loads"),
                ("header", f"{self.header_in.decode('latin1')!r} -> {self.header_out.decode('latin1')!r}")]
        rows += [("change", f"{c.where}: {c.before} -> {c.after} ({c.why})") for c in self.changes]
        if not self.changes and self.header_in == self.header_out:
            rows.append(("change", "none needed: the copy would be identical in content"))
        rows.append(("kept", "everything else: every tensor bit for bit (weights, optimizer, scaler), "
                             "other fields, key order, container types"))
        rows.append(("after", "plain torch.load(weights_only=True) loads it" if self.loads_after else
                     "still needs the 2-byte header stripped for plain torch.load (use --header plain)"
                     if not self.problems else "cannot be repaired"))
        rows += [("PROBLEM", p) for p in self.problems]
        rows += [("note", n) for n in self.notes]
        return rows

    def to_json(self) -> dict:
        return {"file": str(self.path), "layout": self.layout, "version": self.version,
                "header_in": self.header_in.decode("latin1"), "header_out": self.header_out.decode("latin1"),
                "blockers": list(self.blockers), "loads_after": self.loads_after,
                "changes": [c.__dict__ for c in self.changes], "ok": self.ok,
                "problems": list(self.problems), "notes": list(self.notes)}


@dataclass
class RepairReport:
    plan: RepairPlan
    out_path: Path
    size: int
    sha256: str
    verified_tensors: int
    seconds: float

    def describe(self) -> list[tuple[str, str]]:
        rows = [("written", str(self.out_path)), ("size", f"{self.size:,} B"), ("sha256", self.sha256)]
        rows += [r for r in self.plan.describe() if r[0] != "PROBLEM"]
        rows.append(("verified", f"{self.verified_tensors} tensors bit for bit and every other field after "
                                 "reopening"))
        return rows

    def to_json(self) -> dict:
        return {**self.plan.to_json(), "out": str(self.out_path), "size": self.size, "sha256": self.sha256,
                "verified_tensors": self.verified_tensors, "seconds": round(self.seconds, 3)}


# ---- planning --------------------------------------------------------------------------------

def _path_string(o: Opaque) -> str | None:
    from .build import _path_string as path_string

    return path_string(o)


def _attribute_bag(o: Opaque) -> bool:
    """An HParams-like object: built without arguments, its whole state a dict of fields."""
    return (not o.args and not getattr(o, "kwargs", None) and isinstance(o.state, dict)
            and not o.items and not o.setitems and all(isinstance(k, str) for k in o.state))


def _convert(o: Any) -> Any:
    """The plain value a placeholder stands for, or `o` itself when it is not one we convert."""
    if isinstance(o, Opaque):
        s = _path_string(o)
        if s is not None:
            return s
        if _attribute_bag(o):
            return o.state
    return o


def _scan(obj: Any, where: str, changes: list[Change], problems: list[str], seen: set[int], depth: int = 0) -> None:
    if depth > 64 or id(obj) in seen:
        return
    if isinstance(obj, (dict, list, tuple, Opaque)):
        seen.add(id(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            _scan(v, f"{where}.{k}" if where else str(k), changes, problems, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _scan(v, f"{where}[{i}]", changes, problems, seen, depth + 1)
    elif isinstance(obj, Opaque):
        new = _convert(obj)
        if isinstance(new, str):
            changes.append(Change(where, obj.fullname, repr(new), "a path object is a global weights_only "
                                                                  "refuses; the string is what it stands for"))
        elif new is not obj:
            changes.append(Change(where, obj.fullname, f"plain dict of {len(new)} fields",
                                  "GPT-SoVITS's loaders accept a plain dict and wrap it themselves"))
            _scan(new, where, changes, problems, seen, depth + 1)
        else:
            problems.append(f"{where} is a {obj.fullname} object, which has no plain form that keeps its "
                            "meaning; repair converts only HParams-like configs and pathlib paths")


def plan_repair(ck, *, header: str = "keep") -> RepairPlan:
    """Plan repairing the opened checkpoint `ck`; UsageError for an unknown `header` option."""
    from ..load.identity import identify

    if header not in HEADER_CHOICES:
        raise UsageError(f"unknown --header {header!r}; choose from {', '.join(HEADER_CHOICES)}")
    if ck.container == "safetensors":
        raise ExportError(ck.path, "a safetensors file has no pickle to repair: torch.load is not how it is read")
    changes: list[Change] = []
    problems: list[str] = []
    _scan(ck.root, "", changes, problems, set())
    header_out = ck.header if header == "keep" else b"PK"
    ident = identify(ck)
    plan = RepairPlan(path=ck.path, layout=ck.layout.value, version=ident.version_text, header_in=ck.header,
                      header_out=header_out, changes=changes, blockers=weights_only_blockers(ck),
                      problems=problems, ck=ck)
    if ck.header != b"PK" and header == "keep":
        plan.notes.append(f"header {ck.header.decode('latin1')!r} kept: GPT-SoVITS's inference reads the version "
                          "from it; loaders that choke on it ('Unsupported operand 48') need --header plain")
    if ck.header != b"PK" and header == "plain":
        cfg = ck.extras.get("config") if isinstance(ck.root, dict) else None
        if cfg is not None and ck.version in _versions():
            plan.set_version = True
        if plan.set_version and _model_version(cfg) == ck.version:   # nothing to change: say so, not 'v2Pro' -> 'v2Pro'
            plan.notes.append(f"config.model.version is already {ck.version!r}: the version stays readable without "
                              "the header")
        elif plan.set_version:
            changes.append(Change("config.model.version", "absent" if _model_version(cfg) is None
                                  else repr(_model_version(cfg)), repr(ck.version),
                                  f"the header {ck.header.decode('latin1')!r} said {ck.version}; a plain PK file "
                                  "keeps its version here"))
        if ck.version in ("v2Pro", "v2ProPlus"):
            plan.notes.append("GPT-SoVITS's own inference reads a plain-PK Pro file as v2 (only the header or the "
                              "official md5 say Pro); engines that read config.model.version see "
                              f"{ck.version}")
        if ck.layout.value == "sovits-weights-lora":
            plan.notes.append("GPT-SoVITS's own inference recognises a LoRA export only by its 03/04 header")
    return plan


def _versions():
    from ..meta import VERSIONS

    return VERSIONS


def _model_version(cfg: Any) -> Any:
    from .layouts import get_path

    return get_path(cfg, "model", "version")


# ---- writing ---------------------------------------------------------------------------------

def build_repaired(plan: RepairPlan) -> Any:
    """The object to write: the file's root with placeholders converted, tensors mapped (no copy)."""
    from .build import with_version

    ck = plan.ck
    memo: dict = {}
    root = ck.materialize(ck.root, clone=False, convert=_convert, memo=memo)
    if plan.set_version and isinstance(root, dict) and root.get("config") is not None:
        root["config"] = with_version(root["config"], ck.version, sovits=ck.layout.is_sovits)
    return root


def run_repair(plan: RepairPlan, out_path, *, force: bool = False) -> RepairReport:
    """Write the repaired copy atomically, reopen it and compare everything before it becomes OUT."""
    from .atomic import AtomicOutput
    from .writer import save_verified

    if not plan.ok:
        raise ExportError(plan.path, "repair refused: " + "; ".join(plan.problems))
    t0 = time.perf_counter()
    out_path = Path(out_path)
    obj = build_repaired(plan)
    result: dict = {}

    def check(temp: Path) -> None:
        result["tensors"] = verify_repaired(plan, temp)

    with AtomicOutput(out_path, inputs=[plan.path], force=force) as w:
        size, sha = save_verified(w, out_path, obj, plan.header_out, check)
    return RepairReport(plan=plan, out_path=out_path, size=size, sha256=sha,
                        verified_tensors=result["tensors"], seconds=time.perf_counter() - t0)


def verify_repaired(plan: RepairPlan, temp: Path) -> int:
    """Reopen the written file: same structure, every tensor's bytes equal, converted values as
    planned, and (plain header) nothing left that stops weights_only. Returns the tensors compared."""
    from ..load.checkpoint import open_checkpoint

    try:
        new = open_checkpoint(temp)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not what we meant
        raise ExportError(plan.path, f"verification failed: the written file does not reopen ({exc})") from None
    with new:
        if new.header != plan.header_out:
            raise ExportError(plan.path, f"verification failed: header {new.header!r}, meant {plan.header_out!r}")
        left = [b for b in weights_only_blockers(new) if b.startswith("GLOBAL")]
        if left:
            raise ExportError(plan.path, "verification failed: still not weights-only loadable: " + "; ".join(left))
        counter = [0]
        _compare(plan.ck, plan.ck.root, new, new.root, "", counter, plan, {})
        return counter[0]


def _compare(a_ck, a: Any, b_ck, b: Any, where: str, counter: list[int], plan: RepairPlan, memo: dict) -> None:
    def fail(why: str):
        raise ExportError(plan.path, f"verification failed at {where or 'the top level'}: {why}")

    if id(a) in memo:
        return
    if isinstance(a, Opaque):
        a = _convert(a)
        if isinstance(a, Opaque):
            fail("a placeholder was not converted")
    if isinstance(a, TensorRef):
        if not isinstance(b, TensorRef) or tuple(a.shape) != tuple(b.shape) or str(a.dtype) != str(b.dtype):
            fail("a tensor changed its shape or dtype")
        import numpy as np

        x, y = a_ck.array_of(a), b_ck.array_of(b)
        if x.size and not np.array_equal(np.ascontiguousarray(x).reshape(-1).view(np.uint8),
                                         np.ascontiguousarray(y).reshape(-1).view(np.uint8)):
            fail("tensor bytes differ")
        counter[0] += 1
        return
    if isinstance(a, dict):
        memo[id(a)] = True
        if type(a) is not type(b):
            fail(f"{type(a).__name__} became {type(b).__name__}")
        versioned = plan.set_version and where in ("config", "config.model")
        added = set(b) - set(a)
        if [k for k in b if k in a] != list(a) or added - ({"version", "model"} if versioned else set()):
            fail("keys differ")
        for k in a:
            if versioned and k == "version":
                continue  # the version the header carried, written on purpose (checked below)
            _compare(a_ck, a[k], b_ck, b[k], f"{where}.{k}" if where else str(k), counter, plan, memo)
        if versioned and b.get("version", plan.ck.version) != plan.ck.version:
            fail(f"version {b.get('version')!r}, meant {plan.ck.version!r}")
        return
    if isinstance(a, (list, tuple)):
        memo[id(a)] = True
        if type(a) is not type(b) or len(a) != len(b):
            fail("a list or tuple changed")
        for i, (x, y) in enumerate(zip(a, b)):
            _compare(a_ck, x, b_ck, y, f"{where}[{i}]", counter, plan, memo)
        return
    if isinstance(a, DtypeRef) or isinstance(b, DtypeRef):
        if str(a) != str(b):
            fail("a dtype changed")
        return
    if type(a) is not type(b) or (a != b and not (isinstance(a, float) and a != a and b != b)):
        fail(f"{a!r} became {b!r}")
