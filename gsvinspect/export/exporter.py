"""Turn a fine-tuned checkpoint into a file GPT-SoVITS accepts as a new base model (or export).

Two steps, so the user (CLI ``--dry-run`` or the TUI) sees everything before a byte is written:

* `plan_export(pre, ft, ...)` works on metadata only: which output key comes from where (fine-tuned,
  filled from the pretrained file, interpolated, LoRA-merged), what is dropped, dtype changes, the
  top-level entries, config and scaler provenance, the expected size and the problems that refuse
  the export.
* `run_export(plan, out)` computes each tensor (one at a time from the mapped inputs, fp32 for
  arithmetic, cast at the end), writes through `AtomicOutput`, reopens the temp file with our
  loader, compares every tensor bit for bit, checks GPT-SoVITS's own version detection
  (`upstream_version`) and only then renames it onto OUT.

The target structures follow FORMATS.md §3.1/§4.1/§6/§7/§8; why each choice is made is noted where
it is made.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable

from .. import __version__
from ..load.checkpoint import exact_tensor
from ..errors import ExportError, UsageError
from ..meta import FLOAT_DTYPES, VERSIONS, Layout, TensorInfo
from ..load.safe_unpickle import Opaque, TensorRef
from .torch_writer import VALID_HEADERS

from .options import CONFIG_CHOICES, DTYPE_CHOICES, LAYOUT_ALIASES, LAYOUT_CHOICES, MISSING_CHOICES

_DTYPE_NAMES = {"half": "float16", "float": "float32"}
_BASE_LAYOUT = {"gpt": Layout.GPT_PRETRAINED, "sovits-g": Layout.SOVITS_G_PRETRAINED,
                "sovits-d": Layout.SOVITS_D_PRETRAINED}
_MIB = 1024 * 1024
PADDING_NOTE = " [padded so GPT-SoVITS's size-based version detection reads it right]"

Progress = Callable[[str, int, int], None]  # (phase, done, total)


# =============================================================================================
# plan data

@dataclass(slots=True)
class TensorSource:
    """How one output tensor is produced."""

    key: str                      # output key
    shape: tuple[int, ...]
    dtype: str                    # output dtype
    origin: str                   # "ft" | "pre" | "lora" (merged) ; mixing is `alpha`
    src_dtype: str                # dtype of the main source tensor
    ft_key: str | None = None
    pre_key: str | None = None
    alpha: float | None = None    # interpolation weight of the fine-tuned side (None = not mixed)
    lora: Any = None              # LoraMerge for origin "lora"
    scale_b: float | None = None  # LoRA-form export with alpha: lora_B scaled (== mixing the merge)
    reason: str = ""              # why it came from the pretrained side

    @property
    def nbytes(self) -> int:
        return TensorInfo(self.key, self.shape, self.dtype).nbytes

    @property
    def mix(self) -> float | None:
        """The fine-tuned side's weight when mixed: `alpha`, or lora_B's scale in LoRA form."""
        return self.alpha if self.alpha is not None else self.scale_b

    def to_json(self) -> dict:
        d = {"key": self.key, "shape": list(self.shape), "dtype": self.dtype, "from": self.origin,
             "src_dtype": self.src_dtype}
        if self.ft_key and self.ft_key != self.key:
            d["ft_key"] = self.ft_key
        if self.pre_key and self.pre_key != self.key:
            d["pre_key"] = self.pre_key
        if self.alpha is not None:
            d["alpha"] = self.alpha
        if self.lora is not None:
            d["lora"] = {"base": self.lora.base_key, "base_from": self.lora.base_side,
                         "A": self.lora.a_key, "B": self.lora.b_key, "scale": self.lora.scale}
        if self.reason:
            d["reason"] = self.reason
        return d


@dataclass
class Entry:
    """One top-level entry of the output, in order."""

    name: str
    what: str        # "weights" | "config" | "info" | "scaler" | "lora_rank" | "copy" | "same"
    source: str      # human-readable provenance


@dataclass
class ExportPlan:
    """Everything an export will do, computed from metadata only."""

    pre_path: Path
    ft_path: Path
    kind: str                         # "gpt" | "sovits-g" | "sovits-d"
    version: str
    layout: Layout                    # output layout
    layout_choice: str                # "pretrained" | "gpt-weights" | "sovits-weights" | "same"
    header: bytes
    dtype_mode: str
    config_mode: str
    tensors: list[TensorSource]
    entries: list[Entry]
    dropped: list[tuple[str, str]]    # (fine-tuned key, why)
    scaler_where: tuple[str, ...] | None
    scaler_from: str | None           # "fine-tuned" | "pretrained"
    scaler_note: str
    config_source: str
    info: str | None
    alpha: float | None
    lora_rank: int | None = None
    lora_merged: int = 0
    rules_source: str | None = None
    size_rule: tuple[int, int | None] | None = None   # [lo, hi) bytes GPT-SoVITS needs, full-size only
    full_size: bool = False
    manifest_name: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weights_container: str = "weight"
    top_ordered: bool = False
    weights_ordered: bool = True
    # not part of the description: the opened inputs and the raw pieces the writer needs
    pre: Any = field(default=None, repr=False)
    ft: Any = field(default=None, repr=False)

    # -- summaries ----------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        c = {"written": len(self.tensors), "from_ft": 0, "filled_from_pre": 0, "interpolated": 0,
             "lora_merged": 0, "dropped": len(self.dropped), "dtype_changed": 0}
        for t in self.tensors:
            if t.origin == "pre":
                c["filled_from_pre"] += 1
            else:
                c["from_ft"] += 1
            if t.origin == "lora":
                c["lora_merged"] += 1
            if t.mix is not None:
                c["interpolated"] += 1
            if t.dtype != t.src_dtype:
                c["dtype_changed"] += 1
        return c

    def dtype_changes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            if t.dtype != t.src_dtype:
                k = f"{t.src_dtype}->{t.dtype}"
                out[k] = out.get(k, 0) + 1
        return out

    def alphas_used(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            if t.mix is not None:
                out[repr(t.mix)] = out.get(repr(t.mix), 0) + 1
        return out

    def alpha_by_module(self) -> dict[str, float]:
        """Module prefix (two name levels) -> alpha, for modules whose tensors share one alpha."""
        mods: dict[str, set] = {}
        for t in self.tensors:
            a = t.mix
            if a is None and t.origin == "pre":
                continue
            prefix = ".".join(t.key.split(".")[:2])
            mods.setdefault(prefix, set()).add(1.0 if a is None else a)
        return {m: next(iter(v)) for m, v in mods.items() if len(v) == 1}

    def filled(self) -> list[tuple[str, str]]:
        return [(t.key, t.reason) for t in self.tensors if t.origin == "pre"]

    @property
    def estimated_size(self) -> int:
        """Bytes of the output, roughly: tensor data plus ~320 B of zip and pickle per tensor."""
        return sum(t.nbytes for t in self.tensors) + 320 * len(self.tensors) + 16 * 1024

    def scaler_text(self) -> str:
        if self.scaler_where:
            return f"kept under {'/'.join(self.scaler_where)!r} (from the {self.scaler_from} file)"
        return f"absent: {self.scaler_note}"

    def describe(self) -> list[tuple[str, str]]:
        """(label, value) rows for a table: what the export will write."""
        c = self.counts()
        rows = [
            ("pretrained", str(self.pre_path)),
            ("fine-tuned", str(self.ft_path)),
            ("model", f"{self.kind} {self.version}"),
            ("output layout", f"{self.layout.value} ({self.layout_choice}), header {self.header.decode('latin1')!r}"),
            ("top-level entries", ", ".join(e.name for e in self.entries)),
            ("keys written", str(c["written"])),
            ("from fine-tuned", str(c["from_ft"])),
            ("filled from pretrained", str(c["filled_from_pre"])),
            ("dropped", str(c["dropped"])),
        ]
        if c["lora_merged"]:
            rows.append(("LoRA merged", f"{c['lora_merged']} layers (rank {self.lora_rank}, alpha = rank)"))
        if c["interpolated"]:
            used = ", ".join(f"{a} x{n}" for a, n in sorted(self.alphas_used().items()))
            rows.append(("interpolated", f"{c['interpolated']} tensors (alpha {used})"))
        changes = self.dtype_changes()
        rows.append(("dtype", f"{self.dtype_mode}: " + (", ".join(f"{k} x{n}" for k, n in changes.items())
                                                       or "unchanged")))
        rows.append(("scaler state", self.scaler_text()))
        rows.append(("config", f"{self.config_source} ({self.config_mode})"))
        if self.info is not None:
            rows.append(("info", self.info))
        rows.append(("size", f"~{self.estimated_size:,} B"))
        if self.size_rule is not None and self.full_size:
            lo, hi = self.size_rule
            rows.append(("size rule", f"GPT-SoVITS needs {lo:,} <= size" + (f" < {hi:,}" if hi else "")))
        for p in self.problems:
            rows.append(("PROBLEM", p))
        for n in self.notes:
            rows.append(("note", n))
        return rows

    def to_json(self, *, tensors: bool = False) -> dict:
        c = self.counts()
        d = {
            "pretrained": str(self.pre_path), "finetuned": str(self.ft_path),
            "kind": self.kind, "version": self.version,
            "layout": self.layout.value, "layout_choice": self.layout_choice,
            "header": self.header.decode("latin1"),
            "entries": [{"name": e.name, "what": e.what, "source": e.source} for e in self.entries],
            "counts": c,
            "filled": [{"key": k, "reason": r} for k, r in self.filled()],
            "dropped": [{"key": k, "reason": r} for k, r in self.dropped],
            "dtype": {"mode": self.dtype_mode, "changes": self.dtype_changes()},
            "alpha": self.alpha, "alphas_used": self.alphas_used(), "alpha_by_module": self.alpha_by_module(),
            "rules": self.rules_source,
            "lora": {"rank": self.lora_rank, "merged": self.lora_merged} if self.lora_rank else None,
            "scaler": ({"where": list(self.scaler_where), "from": self.scaler_from}
                       if self.scaler_where else None),
            "scaler_note": self.scaler_text(),
            "config": {"source": self.config_source, "mode": self.config_mode},
            "info": self.info,
            "estimated_size": self.estimated_size,
            "size_rule": list(self.size_rule) if self.size_rule and self.full_size else None,
            "full_size": self.full_size,
            "manifest": self.manifest_name,
            "ok": self.ok, "problems": list(self.problems), "notes": list(self.notes),
        }
        if tensors:
            d["tensors"] = [t.to_json() for t in self.tensors]
        return d


@dataclass
class ExportReport:
    """What was written."""

    plan: ExportPlan
    out_path: Path
    size: int
    sha256: str
    verdict: Any                      # upstream_version.UpstreamVerdict
    manifest_check: dict | None
    padded: int = 0                   # bytes of padding added to `info`
    seconds: float = 0.0
    verified_tensors: int = 0

    def describe(self) -> list[tuple[str, str]]:
        rows = [("written", str(self.out_path)), ("size", f"{self.size:,} B"), ("sha256", self.sha256)]
        rows += [r for r in self.plan.describe() if r[0] not in ("size", "PROBLEM")]
        rows.append(("verified", f"{self.verified_tensors} tensors bit for bit after reopening"))
        if self.padded:
            rows.append(("padding", f"info padded by {self.padded} B for the size rule"))
        rows.append(("GPT-SoVITS reads it as", self.verdict.summary()))
        for n in self.verdict.notes:
            rows.append(("  verdict note", n))
        if self.manifest_check:
            m = self.manifest_check
            rows.append(("expected keys", f"{m['name']}: {m['matched']}/{m['expected']} present, "
                                          f"{len(m['missing'])} missing, {len(m['unexpected'])} unexpected"
                                          + (f", {len(m['shape_mismatch'])} shape mismatches"
                                             if m.get("shapes_checked") else "")))
        return rows

    def to_json(self, *, tensors: bool = False) -> dict:
        d = self.plan.to_json(tensors=tensors)
        d.update({"out": str(self.out_path), "size": self.size, "sha256": self.sha256,
                  "verdict": self.verdict.to_json(), "manifest_check": self.manifest_check,
                  "padded": self.padded, "seconds": round(self.seconds, 3),
                  "verified_tensors": self.verified_tensors})
        return d


# =============================================================================================
# planning

def _kind(ck) -> str:
    lay = ck.layout
    if lay.is_gpt:
        return "gpt"
    if lay in (Layout.SOVITS_D_PRETRAINED, Layout.SOVITS_D_TRAIN):
        return "sovits-d"
    if lay.is_sovits:
        return "sovits-g"
    keys = list(ck.weights)
    if any(".ar_text_embedding." in k or k.startswith("model.h.") for k in keys):
        return "gpt"
    if any(k.split(".")[0] == "discriminators" or ".discriminators." in k for k in keys):
        return "sovits-d"
    if any(k.startswith(("enc_p.", "dec.", "cfm.", "ref_enc.")) or ".enc_p." in k for k in keys):
        return "sovits-g"
    return "unknown"


def _is_lora(ck) -> bool:
    from .lora import has_lora

    return ck.layout in (Layout.SOVITS_G_LORA_TRAIN, Layout.SOVITS_WEIGHTS_LORA) or has_lora(ck.weights)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if isinstance(d, Opaque):
            d = d.as_plain()
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _find_config(ck) -> tuple[Any, str] | None:
    """The config of a checkpoint and where it sits (FORMATS §3.2: Lightning keeps it in hyper_parameters)."""
    ex = ck.extras
    if "config" in ex and ex["config"] is not None:
        return ex["config"], "config"
    hp = ex.get("hyper_parameters")
    cfg = _get(hp, "config")
    if cfg is not None:
        return cfg, "hyper_parameters.config"
    return None


def _describe_config(cfg: Any) -> str:
    if isinstance(cfg, Opaque):
        return cfg.fullname
    return type(cfg).__name__


def _manifest_name(kind: str, version: str, layout_choice: str, lora_form: bool) -> str | None:
    from ..load.manifest import resolve_name

    if kind == "gpt":
        name = f"gpt-{version}"
    elif kind == "sovits-d":
        name = f"sovits-D-{version}"
    elif kind == "sovits-g":
        if lora_form and layout_choice == "same":
            name = f"sovits-G-{version}-lora"
        elif lora_form:
            name = f"sovits-G-{version}-lora-export"
        elif layout_choice == "sovits-weights":
            name = f"sovits-G-{version}-export"
        else:
            name = f"sovits-G-{version}"
    else:
        return None
    try:
        return resolve_name(name)
    except UsageError:
        return None


def _full_size(tensors: list[TensorSource], manifest_name: str | None, rank: int | None) -> bool:
    """True when the output has the real network's shapes (size thresholds only mean something then)."""
    if manifest_name is None:
        return False
    from ..load.manifest import expected_weights

    exp = expected_weights(manifest_name, rank=rank or 32)
    hits = 0
    for t in tensors:
        e = exp.get(t.key)
        if e is not None:
            if tuple(e.shape) != tuple(t.shape):
                return False
            hits += 1
    return hits >= 0.9 * len(exp)


def _size_rule(kind: str, version: str, layout_choice: str, header: bytes) -> tuple[int, int | None] | None:
    """[lo, hi) byte range GPT-SoVITS's size ladders need for a correct reading (FORMATS §2.3)."""
    from .upstream_version import FAST_V1_BELOW, FAST_V2_BELOW, V1_BASE_G_RANGE, V2_BASE_G_MIN

    if kind != "sovits-g" or header != b"PK":
        return None
    if layout_choice == "pretrained":
        if version == "v1":
            return V1_BASE_G_RANGE
        if version in ("v2", "v2Pro", "v2ProPlus"):
            return (V2_BASE_G_MIN, FAST_V2_BELOW)
        if version in ("v3", "v4"):
            return (FAST_V2_BELOW, None)
    if layout_choice == "sovits-weights":
        if version == "v1":
            return (0, FAST_V1_BELOW)
        if version == "v2":
            return (FAST_V1_BELOW, FAST_V2_BELOW)
        if version == "v3":
            return (FAST_V2_BELOW, None)
    return None


def _out_dtype(mode: str, natural: str) -> str:
    if natural not in FLOAT_DTYPES:
        return natural
    return _DTYPE_NAMES.get(mode, natural)


def _alpha_for(rules, alpha: float | None, target: str) -> float | None:
    a = rules.alpha_for(target) if rules is not None and getattr(rules, "has_alphas", False) else None
    if a is None:
        a = alpha
    if a is None:
        return None
    return float(a)


def _check_alpha(a: float | None) -> None:
    if a is not None and not (0.0 <= a <= 1.0):
        raise UsageError(f"--alpha must be in [0, 1] (1 = fine-tuned, 0 = pretrained), got {a}")


def _entry_mismatches(rules, *cks) -> list[str]:
    """The rules name a weights entry that a file has but was not opened with (the export would
    take another state dict than the one the rules were written for)."""
    entry = getattr(rules, "weights_entry", None)
    out = []
    for ck in cks if entry else ():
        if isinstance(ck.root, dict) and entry in ck.root and tuple(ck.weights_path) != (entry,):
            where = ".".join(ck.weights_path) or "(top level)"
            out.append(f"{ck.path}: the rules' weights_entry is {entry!r} but the weights were taken from "
                       f"{where!r}; open it with checkpoint.open_with_entry")
    return out


def plan_export(pre_ck, ft_ck, *, rules=None, layout: str | None = None, dtype: str = "keep",
                alpha: float | None = None, missing: str = "pretrained", config: str = "plain",
                suggest: bool = False) -> ExportPlan:
    """Plan exporting `ft_ck` (fine-tuned) onto the structure given by `pre_ck` (pretrained).

    Never raises for a problem with the inputs' contents: problems are listed in ``plan.problems``
    (``run_export`` refuses a plan that has any). Raises UsageError for invalid options.
    """
    from ..align.alignment import Status, align

    choice = LAYOUT_ALIASES.get(layout or "pretrained", layout or "pretrained")
    if choice not in LAYOUT_CHOICES:
        raise UsageError(f"unknown --layout {layout!r}; choose from {', '.join(LAYOUT_CHOICES)} "
                         f"(aliases: {', '.join(LAYOUT_ALIASES)})")
    if dtype not in DTYPE_CHOICES:
        raise UsageError(f"unknown --dtype {dtype!r}; choose from {', '.join(DTYPE_CHOICES)}")
    if missing not in MISSING_CHOICES:
        raise UsageError(f"unknown --missing {missing!r}; choose from {', '.join(MISSING_CHOICES)}")
    if config not in CONFIG_CHOICES:
        raise UsageError(f"unknown --config {config!r}; choose from {', '.join(CONFIG_CHOICES)}")
    _check_alpha(alpha)

    problems: list[str] = []
    notes: list[str] = []
    problems += _entry_mismatches(rules, pre_ck, ft_ck)
    kind = _kind(pre_ck)
    ft_kind = _kind(ft_ck)
    if kind == "unknown":
        kind = ft_kind
    if ft_kind not in ("unknown", kind):
        problems.append(f"the pretrained file is a {kind} checkpoint but the fine-tuned one is a {ft_kind}")
    version = pre_ck.version if pre_ck.version in VERSIONS else ft_ck.version
    if kind == "gpt" and pre_ck.version == "v2" and ft_ck.version in ("v3", "v4", "v2Pro", "v2ProPlus"):
        version = ft_ck.version  # one GPT net for v2..v2ProPlus: the fine-tune names the generation
    if pre_ck.version in VERSIONS and ft_ck.version in VERSIONS and pre_ck.version != ft_ck.version:
        notes.append(f"versions differ: pretrained {pre_ck.version}, fine-tuned {ft_ck.version}; "
                     f"writing {version}")
    ft_lora = _is_lora(ft_ck)

    # ---- the fine-tuned side as plain keys (LoRA merged on paper) -------------------------------
    ft_infos, view = _ft_view(ft_ck, pre_ck, ft_lora)
    if suggest and rules is None:
        from ..align.suggest import suggest_rules

        rules = suggest_rules(pre_ck.weights, ft_infos)
        if len(rules):
            notes.append("rules suggested automatically (--suggest): " + "; ".join(r.describe() for r in rules))
    if view is not None and view.unresolved:
        problems.append(f"{len(view.unresolved)} LoRA layers have no base weight in either file "
                        f"(e.g. {view.unresolved[0]})")

    # ---- target layout ---------------------------------------------------------------------------
    lora_form = False
    header = b"PK"
    if choice == "pretrained":
        out_layout = _BASE_LAYOUT.get(kind, pre_ck.layout)
    elif choice == "gpt-weights":
        out_layout = Layout.GPT_WEIGHTS
        if kind != "gpt":
            problems.append("--layout gpt-weights needs GPT (s1) checkpoints")
    elif choice == "sovits-weights":
        out_layout = Layout.SOVITS_WEIGHTS
        if kind != "sovits-g":
            problems.append("--layout sovits-weights needs SoVITS generator checkpoints")
        if ft_lora and version in ("v3", "v4"):
            lora_form, out_layout = True, Layout.SOVITS_WEIGHTS_LORA
            header = b"03" if version == "v3" else b"04"
        elif version == "v2Pro":
            header = b"05"
        elif version == "v2ProPlus":
            header = b"06"
        elif version == "v4":
            problems.append("a full (non-LoRA) v4 model has no SoVITS_weights representation upstream "
                            "(a plain file >= 700 MiB reads as v3, header 04 means LoRA); export the "
                            "LoRA file itself, or a base with --layout pretrained (FORMATS §7)")
    else:  # same
        out_layout = ft_ck.layout
        header = ft_ck.header if ft_ck.header in VALID_HEADERS else b"PK"
        if ft_lora:
            lora_form = True

    # ---- alignment -------------------------------------------------------------------------------
    rules_source = getattr(rules, "source", None) if rules is not None else None
    if rules is not None and rules_source is None and len(rules):
        rules_source = "(rules given in code)"
    al = align(pre_ck.weights, ft_infos, rules)
    by_pre = {r.pre_key: r for r in al.rows if r.pre_key is not None}
    by_ft = {r.ft_key: r for r in al.rows if r.ft_key is not None and r.status is not Status.CONFLICT}
    dropped: list[tuple[str, str]] = []
    for side, key, rule in al.dropped:
        if side == "ft":
            dropped.append((key, f"dropped by rule {rule + 1}"))
    tensors: list[TensorSource] = []

    def natural_dtype(pre_info, ft_info):
        if choice == "pretrained":
            return (pre_info or ft_info).dtype
        if choice in ("gpt-weights", "sovits-weights"):
            return "float16" if (ft_info or pre_info).dtype in FLOAT_DTYPES else (ft_info or pre_info).dtype
        return (ft_info or pre_info).dtype

    def from_ft(out_key: str, ft_key: str, pre_key: str | None, target: str, pre_info, ft_info):
        a = _alpha_for(rules, alpha, target) if pre_key is not None else None
        if a is not None and not (ft_info.is_float and pre_info is not None and pre_info.is_float):
            a = None  # integer/bool buffers are never interpolated
        if a == 1.0:
            a = None
        nat = natural_dtype(pre_info, ft_info)
        src = ft_key
        merge = view.merges.get(ft_key) if view is not None else None
        if view is not None and merge is None:
            src = view.sources.get(ft_key, ft_key)
        ts = TensorSource(out_key, tuple(ft_info.shape), _out_dtype(dtype, nat),
                          "lora" if merge is not None else "ft",
                          "float32" if merge is not None else ft_info.dtype,
                          ft_key=src, pre_key=pre_key, alpha=a, lora=merge)
        if a == 0.0:  # all pretrained: take it bit for bit
            ts.origin, ts.src_dtype, ts.lora, ts.alpha = "pre", pre_info.dtype, None, None
            ts.reason = "alpha 0"
        tensors.append(ts)

    def from_pre(out_key: str, pre_key: str, reason: str):
        info = pre_ck.weights[pre_key]
        if missing == "error":
            problems.append(f"{pre_key}: {reason} (--missing error)")
        tensors.append(TensorSource(out_key, tuple(info.shape), _out_dtype(dtype, natural_dtype(info, None)),
                                    "pre", info.dtype, pre_key=pre_key, reason=reason))

    if choice == "same" and lora_form and view is not None:
        _plan_lora_form(ft_ck, pre_ck, view, al, rules, alpha, dtype, tensors, dropped, keep_all=True,
                        natural=lambda info: info.dtype)
    elif lora_form:
        _plan_lora_form(ft_ck, pre_ck, view, al, rules, alpha, dtype, tensors, dropped, keep_all=False,
                        natural=lambda info: "float16" if info.is_float else info.dtype)
    elif choice == "same":
        # the fine-tuned file's own keys and order; the pretrained file only serves interpolation
        for k, info in ft_ck.weights.items():
            row = by_ft.get(k)
            paired = row is not None and row.status in (Status.MATCHED, Status.DTYPE_DIFFERS)
            from_ft(k, k, row.pre_key if paired else None, row.target if row else k,
                    pre_ck.weights[row.pre_key] if paired else None, info)
    else:
        drop_enc_q = choice == "sovits-weights"
        for pk in pre_ck.weights:
            if drop_enc_q and "enc_q" in pk:  # savee drops any key containing "enc_q" (FORMATS §6)
                continue
            row = by_pre.get(pk)
            if row is None:  # removed from the comparison by a pre-side rule: keep the pretrained tensor
                from_pre(pk, pk, "excluded from matching by a rule")
                continue
            st = row.status
            if st in (Status.MATCHED, Status.DTYPE_DIFFERS):
                from_ft(pk, row.ft_key, pk, row.target, row.pre, row.ft)
            elif st is Status.MISSING:
                from_pre(pk, pk, "not in the fine-tuned file")
            elif st in (Status.SHAPE_DIFFERS, Status.CONFLICT):
                shape = st is Status.SHAPE_DIFFERS
                reason = (f"shape differs (pretrained {list(row.pre.shape)}, fine-tuned {list(row.ft.shape)})"
                          if shape else f"conflict: {', '.join(row.sources)} all map to {row.target}")
                if missing == "error":
                    problems.append(f"{pk}: {reason}")
                    continue
                from_pre(pk, pk, reason)
                if shape:
                    dropped.append((row.ft_key, reason))
        for row in al.rows:
            if row.status is Status.UNEXPECTED:
                dropped.append((row.ft_key, "not in the pretrained file"))
            elif row.status is Status.CONFLICT and row.pre_key is None:
                for s in row.sources:
                    dropped.append((s, f"conflict on {row.target}"))
        if drop_enc_q:
            for row in al.rows:
                if row.pre_key and "enc_q" in row.pre_key and row.ft_key:
                    dropped.append((row.ft_key, "enc_q is not part of an inference export"))
        n_ft = sum(t.ft_key is not None for t in tensors)  # keys with a fine-tuned partner, whatever alpha did
        if tensors and n_ft == 0:
            problems.append("no fine-tuned tensor matched a pretrained key: the output would be the "
                            "pretrained model; give --rules FILE or --suggest")
        elif tensors and n_ft < len(tensors) // 2:
            notes.append(f"only {n_ft} of {len(tensors)} keys come from the fine-tuned file")

    # view keys are plain names; report drops under the names stored in the file
    if view is not None:
        dropped = [(view.sources.get(k, k), r) for k, r in dropped]

    # ---- entries, config, info, scaler -----------------------------------------------------------
    scaler_src = ft_ck if ft_ck.scaler is not None else (pre_ck if pre_ck.scaler is not None else None)
    scaler_where = tuple(scaler_src.scaler.path) if scaler_src is not None else None
    scaler_from = None if scaler_src is None else ("fine-tuned" if scaler_src is ft_ck else "pretrained")
    if scaler_src is None:
        scaler_note = f"neither file has one ({ft_ck.scaler_note or 'fine-tuned: none'}); nothing is invented"
    else:
        scaler_note = ""

    cfg = _find_config(ft_ck)
    if cfg is not None:
        config_source = f"fine-tuned {cfg[1]} ({_describe_config(cfg[0])})"
    else:
        cfg = _find_config(pre_ck)
        config_source = (f"pretrained {cfg[1]} ({_describe_config(cfg[0])}); the fine-tuned file has none"
                         if cfg is not None else "none in either file")

    what = {"pretrained": "base", "gpt-weights": "export", "sovits-weights": "export"}.get(choice, "copy")
    info = _info_text(pre_ck, ft_ck, alpha, rules, view, version,
                      {"gpt": "GPT", "sovits-g": "SoVITS G", "sovits-d": "SoVITS D"}.get(kind, kind) + " " + what)
    entries, weights_container, top_ordered, weights_ordered = _entries(
        choice, kind, pre_ck, ft_ck, scaler_where, scaler_from, config_source, cfg is not None, lora_form)
    if not any(e.what == "info" for e in entries):
        info = None
    if kind == "gpt" and cfg is None and choice != "same":
        problems.append("no config in either file: GPT-SoVITS inference needs config['model'] and data.max_sec")

    if choice == "pretrained" and kind == "sovits-g" and version in ("v1", "v2", "v2Pro", "v2ProPlus"):
        if not any("enc_q" in t.key for t in tensors):
            notes.append("no enc_q in the output (the pretrained file has none): training from it starts "
                         "with a random posterior encoder (strict=False load)")

    manifest_name = _manifest_name(kind, version, choice, lora_form)
    rank = view.rank if view is not None else None
    full = _full_size(tensors, manifest_name, rank)
    size_rule = _size_rule(kind, version, choice, header)
    plan = ExportPlan(
        pre_path=pre_ck.path, ft_path=ft_ck.path, kind=kind, version=version, layout=out_layout,
        layout_choice=choice, header=header, dtype_mode=dtype, config_mode=config,
        tensors=tensors, entries=entries, dropped=dropped, scaler_where=scaler_where,
        scaler_from=scaler_from, scaler_note=scaler_note, config_source=config_source, info=info,
        alpha=alpha, lora_rank=rank, lora_merged=len(view.merges) if view is not None and not lora_form else 0,
        rules_source=rules_source, size_rule=size_rule, full_size=full, manifest_name=manifest_name,
        problems=problems, notes=notes, weights_container=weights_container, top_ordered=top_ordered,
        weights_ordered=weights_ordered, pre=pre_ck, ft=ft_ck)
    if size_rule is not None and full:
        lo, hi = size_rule
        est = plan.estimated_size
        if hi is not None and est >= hi * 1.02:
            problems.append(
                f"the output would be ~{est:,} B, but GPT-SoVITS reads a {version} "
                f"{'base G' if choice == 'pretrained' else 'export'} only below {hi:,} B (its size-based "
                f"version detection, FORMATS §2.3)" + ("; use --dtype half" if dtype == "float" else ""))
    return plan


def _ft_view(ft_ck, pre_ck, ft_lora: bool):
    """The fine-tuned weights as the alignment sees them: plain keys, LoRA merged on paper."""
    if not ft_lora:
        return ft_ck.weights, None
    from .lora import lora_view

    declared = ft_ck.extras.get("lora_rank")
    try:
        view = lora_view(ft_ck.weights, pre_ck.weights,
                         declared_rank=declared if isinstance(declared, int) else None)
    except ValueError as exc:
        raise ExportError(ft_ck.path, str(exc)) from None
    return view.infos, view


def _plan_lora_form(ft_ck, pre_ck, view, al, rules, alpha, dtype, tensors, dropped, *, keep_all: bool,
                    natural) -> None:
    """Keep the file in LoRA form (upstream's LoRA export, or the LoRA file itself): keys as stored.

    Interpolating with alpha equals scaling lora_B by alpha (the merged weight becomes
    base + alpha·B@A), and mixing the other keys with the pretrained tensor of the same plain name.
    """
    from ..align.alignment import Status
    from .lora import in_lora_export, plain_key

    by_target = {r.target: r for r in al.rows}
    for k, info in ft_ck.weights.items():
        if not keep_all and not in_lora_export(k):
            dropped.append((k, "not part of upstream's LoRA export (frozen)"))
            continue
        ts = TensorSource(k, tuple(info.shape), _out_dtype(dtype, natural(info)), "ft", info.dtype, ft_key=k)
        if ".lora_B." in k:
            module = k.split(".lora_B.")[0]
            target = plain_key(module + ".base_layer.weight") or k
            a = _alpha_for(rules, alpha, target)
            if a is not None and a != 1.0:
                ts.scale_b = a
        elif ".lora_A." not in k:
            pk = plain_key(k)
            row = by_target.get(pk) if pk else None
            if row is not None and row.pre_key and row.status in (Status.MATCHED, Status.DTYPE_DIFFERS):
                a = _alpha_for(rules, alpha, row.target)
                if a is not None and a != 1.0 and info.is_float and row.pre.is_float:
                    ts.alpha, ts.pre_key = a, row.pre_key
        tensors.append(ts)


def _info_text(pre_ck, ft_ck, alpha, rules, view, version: str, what: str) -> str:
    def with_info(ck):
        inf = ck.extras.get("info")
        return f"{ck.path.name} ({inf})" if isinstance(inf, str) and inf else ck.path.name

    # the version as a word of its own: inference-side tools read v3/v4 from `info` (FORMATS §4.1)
    bits = [f"gsvinspect {__version__}: {version} {what} from {with_info(ft_ck)} over {with_info(pre_ck)}"]
    if view is not None:
        bits.append(f"LoRA rank {view.rank} merged")
    if alpha is not None:
        bits.append(f"alpha {alpha}")
    if rules is not None and getattr(rules, "has_alphas", False):
        bits.append("per-module alphas")
    return "; ".join(bits)


def _entries(choice, kind, pre_ck, ft_ck, scaler_where, scaler_from, config_source, have_config, lora_form):
    """Top-level entries of the output, in order, plus container types."""
    entries: list[Entry] = []
    if choice == "same":
        wp = ft_ck.weights_path[0] if ft_ck.weights_path else None
        for name in (ft_ck.root if isinstance(ft_ck.root, dict) else {}):
            if name == wp:
                entries.append(Entry(name, "weights", "fine-tuned weights"))
            elif name in ("config", "hyper_parameters"):
                entries.append(Entry(name, "same", "fine-tuned (paths as strings)"))
            elif scaler_where and name == scaler_where[0] and scaler_from == "fine-tuned":
                entries.append(Entry(name, "scaler", "fine-tuned GradScaler state, bit for bit"))
            else:
                entries.append(Entry(name, "same", "fine-tuned"))
        if scaler_where and scaler_from == "pretrained" and scaler_where[0] not in [e.name for e in entries]:
            entries.append(Entry(scaler_where[0], "scaler", "pretrained GradScaler state, bit for bit"))
        top_ordered = type(ft_ck.root) is OrderedDict
        wcont = ft_ck.get(ft_ck.weights_path) if ft_ck.weights_path else {}
        return entries, wp or "", top_ordered, type(wcont) is OrderedDict

    if choice == "pretrained" and pre_ck.layout == _BASE_LAYOUT.get(kind) and isinstance(pre_ck.root, dict) \
            and pre_ck.weights_path:
        wp = pre_ck.weights_path[0]
        for name in pre_ck.root:
            if name == wp:
                entries.append(Entry(name, "weights", "fine-tuned tensors in the pretrained file's order"))
            elif name == "config":
                entries.append(Entry(name, "config", config_source))
            elif name == "info":
                entries.append(Entry(name, "info", "what the export was made from"))
            elif scaler_where and name == scaler_where[0]:
                continue  # added below from the chosen side
            else:
                entries.append(Entry(name, "copy", "pretrained, unchanged"))
        names = [e.name for e in entries]
        if "config" not in names and have_config:
            entries.append(Entry("config", "config", config_source))
        if "info" not in names and kind == "sovits-g":
            # upstream's base shape is {weight, config, info}; `info` also carries the size padding
            entries.append(Entry("info", "info", "what the export was made from"))
        top_ordered = type(pre_ck.root) is OrderedDict
        wcont = pre_ck.get(pre_ck.weights_path)
        weights_ordered = type(wcont) is OrderedDict
    elif choice == "pretrained":
        wp = "weight"
        entries.append(Entry("weight", "weights", "fine-tuned tensors"))
        if have_config:
            entries.append(Entry("config", "config", config_source))
        if kind == "sovits-g":
            entries.append(Entry("info", "info", "what the export was made from"))
        top_ordered, weights_ordered = False, True
    else:  # inference exports: OrderedDict(weight, config, info[, lora_rank]) (FORMATS §3.3, §6)
        wp = "weight"
        entries.append(Entry("weight", "weights", "fine-tuned tensors, fp16" + (" (LoRA form)" if lora_form else "")))
        entries.append(Entry("config", "config", config_source))
        entries.append(Entry("info", "info", "what the export was made from"))
        if lora_form:
            entries.append(Entry("lora_rank", "lora_rank", "rank of the adapters (int)"))
        top_ordered = True
        weights_ordered = choice == "gpt-weights"  # savee's weight is a plain dict
    if scaler_where:
        entries.append(Entry(scaler_where[0], "scaler", f"{scaler_from} GradScaler state, bit for bit"))
    return entries, wp, top_ordered, weights_ordered


# =============================================================================================
# building the output object

def _path_string(o: Opaque) -> str | None:
    """A pickled pathlib object as the string it stands for (FORMATS §11.10: write paths as str)."""
    if not (o.module == "pathlib" or o.module.startswith("pathlib.")) or not o.qualname.endswith("Path"):
        return None
    parts = [a for a in (o.args or ()) if isinstance(a, str)]
    if not parts and isinstance(o.state, tuple):
        parts = [p for p in o.state if isinstance(p, str)]
    if not parts:
        return ""
    if "Windows" in o.qualname:
        return str(PureWindowsPath(*parts))
    return str(PurePosixPath(*parts))


def _materialize(ck, obj: Any, *, plain: bool, memo: dict | None = None) -> Any:
    """Copy a piece of ``ck.root`` for writing: tensors mapped from the file (no copy), pathlib
    objects as strings, other placeholders as plain dicts (`plain`) or unchanged."""
    def convert(o: Any) -> Any:
        if isinstance(o, Opaque):
            s = _path_string(o)
            if s is not None:
                return s
            if plain:
                return o.as_plain()
        return o

    return ck.materialize(obj, clone=False, convert=convert, memo=memo)


_NUMPY_FLOATS = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}


def _compute(plan: ExportPlan, ts: TensorSource):
    """The output tensor for one TensorSource: mapped when unchanged, else computed in fp32 and cast.

    Casts and interpolation run in numpy when the dtypes allow (single-threaded, memory-bound: on
    small machines torch's intra-op threads made the same loop several times slower, and numpy's
    elementwise IEEE float32 ops give the same bits); bfloat16 and LoRA merges use torch.
    """
    import torch

    pre, ft = plan.pre, plan.ft
    src_ck, src_key = (pre, ts.pre_key) if ts.origin == "pre" else (ft, ts.ft_key)
    changes = ts.scale_b is not None or (ts.alpha is not None and ts.pre_key is not None)
    if ts.origin != "lora" and not changes and ts.src_dtype == ts.dtype:
        return exact_tensor(src_ck.tensor(src_key))  # unchanged: bytes straight from the mapped input
    mix_dtype = pre.weights[ts.pre_key].dtype if ts.alpha is not None and ts.pre_key else "float32"
    if ts.origin != "lora" and {ts.src_dtype, ts.dtype, mix_dtype} <= set(_NUMPY_FLOATS) \
            and not getattr(src_ck, "trusted", False) and not getattr(pre, "trusted", False):
        return torch.from_numpy(_compute_numpy(plan, ts, src_ck, src_key))
    out_dtype = getattr(torch, ts.dtype)
    if ts.origin == "lora":
        m = ts.lora
        base = (ft if m.base_side == "ft" else pre).tensor(m.base_key)
        from .lora import merged_tensor

        t = merged_tensor(base, ft.tensor(m.a_key), ft.tensor(m.b_key), m.scale)
    else:
        t = src_ck.tensor(src_key)
    if ts.scale_b is not None:
        t = t.to(torch.float32, copy=True).mul_(ts.scale_b)
    if ts.alpha is not None and ts.pre_key is not None:
        p = pre.tensor(ts.pre_key)
        # exactly (1-A)*pre + A*ft, two roundings in fp32 (no fused multiply-add): reproducible
        mixed = p.to(torch.float32, copy=True).mul_(1.0 - ts.alpha)
        mixed.add_(t.to(torch.float32).mul(ts.alpha))
        t = mixed
    if t.dtype != out_dtype:
        t = t.to(out_dtype)
    return exact_tensor(t)


def _compute_numpy(plan: ExportPlan, ts: TensorSource, src_ck, src_key: str):
    import numpy as np

    a = src_ck.array(src_key)
    if ts.scale_b is not None:
        a = a.astype(np.float32) * np.float32(ts.scale_b)
    if ts.alpha is not None and ts.pre_key is not None:
        p = plan.pre.array(ts.pre_key)
        mixed = p.astype(np.float32) * np.float32(1.0 - ts.alpha)
        mixed += a.astype(np.float32, copy=False) * np.float32(ts.alpha)
        a = mixed
    out = np.dtype(_NUMPY_FLOATS[ts.dtype])
    if a.dtype != out or not a.flags.writeable:
        a = a.astype(out)
    return np.ascontiguousarray(a)


def _config_value(plan: ExportPlan) -> Any:
    for ck in (plan.ft, plan.pre):
        found = _find_config(ck)
        if found is not None:
            return _materialize(ck, found[0], plain=plan.config_mode == "plain")
    return None


def _scaler_value(plan: ExportPlan) -> Any:
    ck = plan.ft if plan.scaler_from == "fine-tuned" else plan.pre
    return _materialize(ck, ck.scaler.state, plain=False)


def _put(root: dict, path: tuple[str, ...], value: Any) -> None:
    node = root
    for p in path[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[path[-1]] = value


def build_object(plan: ExportPlan, weights: dict, info: str | None) -> Any:
    """The object `torch.save` will write, with `weights` (computed tensors) in place."""
    if plan.layout_choice == "same":
        ft = plan.ft
        memo: dict = {}
        root = OrderedDict() if plan.top_ordered else {}
        for name, value in ft.root.items():
            if name == plan.weights_container:
                root[name] = weights
            elif name in ("config", "hyper_parameters"):
                root[name] = _materialize(ft, value, plain=plan.config_mode == "plain", memo=memo)
            else:
                root[name] = _materialize(ft, value, plain=False, memo=memo)
        if plan.scaler_where and plan.scaler_from == "pretrained":
            _put(root, plan.scaler_where, _scaler_value(plan))
        return root
    root = OrderedDict() if plan.top_ordered else {}
    for e in plan.entries:
        if e.what == "weights":
            root[e.name] = weights
        elif e.what == "config":
            root[e.name] = _config_value(plan)
        elif e.what == "info":
            root[e.name] = info
        elif e.what == "lora_rank":
            root[e.name] = int(plan.lora_rank or 0)
        elif e.what == "copy":
            root[e.name] = _materialize(plan.pre, plan.pre.root[e.name], plain=False)
        elif e.what == "scaler":
            _put(root, plan.scaler_where, _scaler_value(plan))
    return root


# =============================================================================================
# running

class _ProgressFile:
    """File wrapper: sha256 of the bytes as they go out (torch's zip writer never seeks back),
    progress reports, and a place for a progress callback to abort by raising."""

    def __init__(self, f, progress: Progress | None, total: int):
        self._f = f
        self.error: OSError | None = None  # torch's writer turns our OSError into a RuntimeError
        self.sha = hashlib.sha256()
        self._progress = progress
        self._total = total
        self.written = 0
        self._last = 0

    def write(self, data) -> int:
        try:
            n = self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.sha.update(data)
        self.written += memoryview(data).nbytes
        if self._progress is not None and self.written - self._last >= 8 * _MIB:
            self._last = self.written
            self._progress("write", self.written, self._total)
        return n

    def flush(self) -> None:
        self._f.flush()


def _padded_info(info: str, pad: int) -> str:
    if pad <= 0:
        return info
    note = PADDING_NOTE
    return info + note + " " * max(0, pad - len(note.encode("utf-8")))


def _fit_size(plan: ExportPlan, weights: dict, info: str | None) -> tuple[str | None, int]:
    """Pad `info` until the output lands in the size range GPT-SoVITS needs, or refuse."""
    from . import torch_writer

    lo, hi = plan.size_rule  # type: ignore[misc]
    size = torch_writer.saved_size(build_object(plan, weights, info))
    if hi is not None and size >= hi:
        raise ExportError(plan.ft_path, _size_explanation(plan, size))
    if size >= lo:
        return info, 0
    if info is None:
        raise ExportError(plan.ft_path, _size_explanation(plan, size) + " (no `info` entry to pad)")
    base_info = info
    pad = lo - size
    for _ in range(6):
        info = _padded_info(base_info, pad)
        size = torch_writer.saved_size(build_object(plan, weights, info))
        if size >= lo:
            if hi is not None and size >= hi:
                break
            return info, len(info.encode("utf-8")) - len(base_info.encode("utf-8"))
        pad += (lo - size) + 64  # the zip aligns each tensor record to 64 bytes
    raise ExportError(plan.ft_path, _size_explanation(plan, size))


def _size_explanation(plan: ExportPlan, size: int) -> str:
    lo, hi = plan.size_rule  # type: ignore[misc]
    what = "base G" if plan.layout_choice == "pretrained" else "SoVITS_weights export"
    rng = f"[{lo:,}, {hi:,})" if hi else f">= {lo:,}"
    extra = ""
    if plan.dtype_mode == "float":
        extra = "; use --dtype half"
    return (f"a {plan.version} {what} of {size:,} B would be misread by GPT-SoVITS's size-based version "
            f"detection (needs {rng} bytes, FORMATS §2.3){extra}")


def _tensor_bytes(t):
    import numpy as np
    import torch

    if t.numel() == 0:
        return np.empty(0, dtype=np.uint8)
    flat = t.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat.view(torch.uint8).numpy()


def _typed_equal(a: Any, b: Any) -> bool:
    """Equality that also requires the same types (1 != 1.0 here): 'bit for bit' for plain values."""
    if isinstance(a, TensorRef) or isinstance(b, TensorRef):  # scaler tensors: compare metadata here
        sa, sb = (getattr(x, "shape", None) for x in (a, b))
        return sa is not None and tuple(sa) == tuple(sb)
    if type(a) is not type(b):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_typed_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_typed_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        import struct

        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def _verify(plan: ExportPlan, temp: Path, weights: dict, obj: Any) -> tuple[Any, dict | None]:
    """Reopen the temp file with our loader and compare everything with what was meant;
    returns GPT-SoVITS's reading of it (`_verdict`) and the manifest check."""
    import numpy as np

    from ..load.checkpoint import open_checkpoint

    try:
        ck = open_checkpoint(temp)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not what we meant
        raise ExportError(plan.ft_path, f"verification failed: the written file does not reopen ({exc})") from None
    try:
        if ck.header != plan.header:
            raise ExportError(plan.ft_path, f"verification failed: header {ck.header!r}, meant {plan.header!r}")
        if list(ck.weights) != list(weights):
            raise ExportError(plan.ft_path, "verification failed: the written keys differ from the plan")
        if isinstance(obj, dict) and list(ck.root) != list(obj):
            raise ExportError(plan.ft_path, "verification failed: top-level entries differ from the plan")
        for key, t in weights.items():
            info = ck.weights[key]
            if tuple(info.shape) != tuple(t.shape) or info.dtype != str(t.dtype).replace("torch.", ""):
                raise ExportError(plan.ft_path, f"verification failed: {key} has {info.dtype}{list(info.shape)}")
            if t.numel() == 0:
                continue
            got = np.asarray(ck.array(key)).reshape(-1).view(np.uint8)
            if not np.array_equal(got, _tensor_bytes(t)):
                raise ExportError(plan.ft_path, f"verification failed: {key} differs from what was computed")
        if plan.scaler_where:
            meant = _get(obj, *plan.scaler_where)
            got = _get(ck.root, *plan.scaler_where)
            if got is None or not _typed_equal(got, meant):
                raise ExportError(plan.ft_path, "verification failed: GradScaler state differs after writing")
            original = (plan.ft if plan.scaler_from == "fine-tuned" else plan.pre).scaler.state
            if not _typed_equal(got, original):
                raise ExportError(plan.ft_path, "verification failed: GradScaler state differs from the input's")
        return _verdict(plan, temp, ck), _manifest_check(plan, ck)
    finally:
        ck.close()


def _verdict(plan: ExportPlan, path: Path, ck) -> Any:
    from .upstream_version import UpstreamVerdict, classify_gpt, classify_sovits_g

    if plan.kind == "gpt":
        cfg = _find_config(ck)
        emb = ck.weights.get("model.ar_text_embedding.word_embeddings.weight")
        v = classify_gpt(cfg[0] if cfg else None, emb.shape[0] if emb is not None else None, plan.version)
        if plan.layout_choice == "same" and plan.layout == Layout.GPT_LIGHTNING:
            v.notes.append("Lightning checkpoint: resumable training state; not an inference/base file")
        return v
    if plan.kind == "sovits-g" and plan.layout in (Layout.SOVITS_WEIGHTS, Layout.SOVITS_WEIGHTS_LORA,
                                                    Layout.SOVITS_G_PRETRAINED):
        emb = ck.weights.get("enc_p.text_embedding.weight")
        lora = plan.header in (b"03", b"04")
        base = plan.layout == Layout.SOVITS_G_PRETRAINED
        v = classify_sovits_g(path, plan.version, base=base, text_embedding_rows=emb.shape[0] if emb is not None else None,
                              lora=lora)
        if not plan.full_size:
            _relax_for_scaled(v)
        if base and plan.header != b"PK":
            v.ok = False
            v.notes.append("a headered file cannot be a training base (plain torch.load fails)")
        return v
    if plan.kind == "sovits-d":
        return UpstreamVerdict(kind="sovits-d", intended=plan.version, notes=[
            "GPT-SoVITS has no version detection for D files: the training version picks 5 or 7 periods"])
    return UpstreamVerdict(kind="other", intended=plan.version,
                           notes=["no upstream version detection applies to this layout"])


def _relax_for_scaled(v) -> None:
    """Scaled-down test files: the size ladders say nothing about them; keep hash/header/symbol checks."""
    kept = [n for n in v.notes if "size" not in n and "3-get-semantic" not in n
            and not (v.fast_step == "size" and n.startswith("process_ckpt reads"))]
    v.notes = kept + ["scaled (not full-size) file: GPT-SoVITS's size thresholds do not apply"]
    v.semantic = None
    if v.fast_step == "size":
        v.fast_step = "size; meaningless for a scaled file"
    v.ok = not any(n.startswith(("process_ckpt raises", "text_embedding has", "process_ckpt reads")) for n in kept)


def _manifest_check(plan: ExportPlan, ck) -> dict | None:
    if plan.manifest_name is None:
        return None
    from ..load.manifest import expected_weights

    exp = expected_weights(plan.manifest_name, rank=plan.lora_rank or 32)
    got = ck.weights
    missing = [k for k in exp if k not in got]
    unexpected = [k for k in got if k not in exp]
    shapes = [k for k in exp if k in got and tuple(exp[k].shape) != tuple(got[k].shape)] if plan.full_size else []
    return {"name": plan.manifest_name, "expected": len(exp), "matched": len(exp) - len(missing),
            "missing": missing, "unexpected": unexpected, "shape_mismatch": shapes,
            "shapes_checked": plan.full_size}


def _write_error(out_path: Path, exc: BaseException) -> ExportError:
    why = getattr(exc, "strerror", None) or str(exc)
    return ExportError(out_path, f"writing failed: {why}; nothing was written (the temp file was removed)")


def run_export(plan: ExportPlan, out_path, *, force: bool = False, progress: Progress | None = None) -> ExportReport:
    """Write `plan` to `out_path` atomically and verified; see the module docstring.

    `progress(phase, done, total)` is called from this thread with phases "compute", "size",
    "write", "verify"; raising from it aborts the export (OUT stays untouched).
    """
    from . import torch_writer
    from .atomic import AtomicOutput

    if not plan.ok:
        raise ExportError(plan.ft_path, "export refused: " + "; ".join(plan.problems))
    t0 = time.perf_counter()
    out_path = Path(out_path)
    inputs = [plan.pre_path, plan.ft_path]
    with AtomicOutput(out_path, inputs=inputs, force=force) as w:
        weights: dict = OrderedDict() if plan.weights_ordered else {}
        total = len(plan.tensors)
        for i, ts in enumerate(plan.tensors):
            weights[ts.key] = _compute(plan, ts)
            if progress is not None and (i % 32 == 0 or i == total - 1):
                progress("compute", i + 1, total)
        info, padded = plan.info, 0
        if plan.size_rule is not None and plan.full_size:
            if progress is not None:
                progress("size", 0, 1)
            info, padded = _fit_size(plan, weights, info)
        obj = build_object(plan, weights, info)
        pf = _ProgressFile(w.file, progress, plan.estimated_size)
        try:
            size = torch_writer.save(obj, pf, header=plan.header)
        except Exception as exc:
            if pf.error is not None or isinstance(exc, OSError):
                raise _write_error(out_path, pf.error or exc) from None
            raise
        if progress is not None:
            progress("write", size, size)
        result: dict = {}

        def verify(temp: Path) -> None:
            if progress is not None:
                progress("verify", 0, total)
            verdict, mcheck = _verify(plan, temp, weights, obj)
            if not verdict.ok:
                raise ExportError(out_path, "GPT-SoVITS would misread the written file: " + "; ".join(verdict.notes))
            disk_size = os.path.getsize(temp)
            if disk_size != pf.written:
                raise ExportError(out_path, f"verification failed: {disk_size} bytes on disk, {pf.written} written")
            result.update(verdict=verdict, mcheck=mcheck, sha=pf.sha.hexdigest(), size=disk_size)

        try:
            w.commit(verify)
        except OSError as exc:  # flush/fsync/rename: e.g. the disk filled up at the last buffer
            raise _write_error(out_path, exc) from None
    report = ExportReport(plan=plan, out_path=out_path, size=result["size"], sha256=result["sha"],
                          verdict=result["verdict"], manifest_check=result["mcheck"], padded=padded,
                          seconds=time.perf_counter() - t0, verified_tensors=len(weights))
    return report


def export(pre_path, ft_path, out_path, *, rules=None, layout: str | None = None, dtype: str = "keep",
           alpha: float | None = None, missing: str = "pretrained", config: str = "plain",
           force: bool = False, trust: bool = False, suggest: bool = False,
           progress: Progress | None = None) -> ExportReport:
    """One call: open both files, plan, refuse on problems, write. The library form of the CLI."""
    from ..load.checkpoint import open_with_entry
    from ..align.rules import load_rules

    if isinstance(rules, (str, os.PathLike)):
        rules = load_rules(rules)
    entry = rules.weights_entry if rules is not None else None
    with open_with_entry(pre_path, trust=trust, weights_entry=entry) as pre, \
            open_with_entry(ft_path, trust=trust, weights_entry=entry) as ft:
        plan = plan_export(pre, ft, rules=rules, layout=layout, dtype=dtype, alpha=alpha, missing=missing,
                           config=config, suggest=suggest)
        return run_export(plan, out_path, force=force, progress=progress)
