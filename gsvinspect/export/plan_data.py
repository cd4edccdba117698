"""What an export will do and what it did: the plan and report types, computed from metadata only.

`ExportPlan` lists every output tensor's source (`TensorSource`), the top-level entries (`Entry`),
what is dropped, the config/scaler provenance, the expected size and the problems that refuse the
export; `ExportReport` adds what was written and how GPT-SoVITS reads it. Both render as
(label, value) rows and as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..meta import VERSIONS, Layout, TensorInfo

Progress = Callable[[str, int, int], None]  # (phase, done, total)


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

    def version_markers(self) -> list[str]:
        """Where the written file says its version: config, 2-byte header, `info`."""
        out = []
        if self.layout_choice != "same" and any(e.what == "config" for e in self.entries) and self.version in VERSIONS:
            out.append(f"config model.version = {self.version!r}" + (", version" if self.kind != "gpt" else ""))
        if self.header != b"PK":
            out.append(f"header {self.header.decode('latin1')!r}")
        if self.info is not None:
            out.append(f"info {self.info.split(' (')[0]!r}")
        return out

    def describe(self) -> list[tuple[str, str]]:
        """(label, value) rows for a table: what the export will write."""
        c = self.counts()
        rows = [
            ("pretrained", str(self.pre_path)),
            ("fine-tuned", str(self.ft_path)),
            ("model", f"{self.kind} {self.version}"),
            ("version written", "; ".join(self.version_markers()) or "nowhere (the layout has no version field)"),
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
            "kind": self.kind, "version": self.version, "version_written": self.version_markers(),
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
            rows.append(("expected keys", f"{m['name']}: {m['verdict']}"))
        return rows

    def to_json(self, *, tensors: bool = False) -> dict:
        d = self.plan.to_json(tensors=tensors)
        d.update({"out": str(self.out_path), "size": self.size, "sha256": self.sha256,
                  "verdict": self.verdict.to_json(), "manifest_check": self.manifest_check,
                  "padded": self.padded, "seconds": round(self.seconds, 3),
                  "verified_tensors": self.verified_tensors})
        return d

