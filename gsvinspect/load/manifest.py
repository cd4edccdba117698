"""The full-size key manifests of every GPT-SoVITS network, and the expected-key sets built on them.

The manifests (gsvinspect/data/manifests/*.json) list each network's state_dict keys, shapes and flags
exactly as the real upstream classes produce them. `check --as NAME` compares a file against one of
the named sets below, and the synthetic generator (gsvinspect.synth) builds its tensors from the same
lists, so both sides share one source of truth. Pure data: no torch, no numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..errors import UsageError
from ..meta import TensorInfo

MANIFEST_PACKAGE = "gsvinspect.data.manifests"
DEFAULT_LORA_RANK = 32
# rank the LoRA manifests were built with; only lora_A / lora_B shapes depend on it
MANIFEST_LORA_RANK = 32


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One state_dict key as the real class produces it (float32, full size)."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    buffer: bool = False
    requires_grad: bool | None = None   # False only for frozen params (LoRA manifests, v3/v4)
    in_export: bool | None = None       # G manifests: survives process_ckpt.savee (no "enc_q")
    in_lora_export: bool | None = None  # LoRA manifests: part of the SoVITS_weights_v3/v4 LoRA file

    @property
    def is_lora_a(self) -> bool:
        return ".lora_A." in self.key

    @property
    def is_lora_b(self) -> bool:
        return ".lora_B." in self.key

    def with_rank(self, rank: int) -> ManifestEntry:
        """The same entry for another LoRA rank (lora_A is [r, in], lora_B is [out, r])."""
        if self.is_lora_a:
            return _replace_shape(self, (rank,) + self.shape[1:])
        if self.is_lora_b:
            return _replace_shape(self, self.shape[:-1] + (rank,))
        return self

    def info(self, dtype: str | None = None) -> TensorInfo:
        return TensorInfo(self.key, self.shape, dtype or self.dtype)


def _replace_shape(entry: ManifestEntry, shape: tuple[int, ...]) -> ManifestEntry:
    return ManifestEntry(entry.key, shape, entry.dtype, entry.buffer, entry.requires_grad,
                         entry.in_export, entry.in_lora_export)


@dataclass(frozen=True, slots=True)
class Manifest:
    """One manifest file: its header (provenance, config used, counts) and its keys in order."""

    name: str
    header: dict
    entries: tuple[ManifestEntry, ...]

    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    def entry(self, key: str) -> ManifestEntry | None:
        return self._index().get(key)

    def _index(self) -> dict[str, ManifestEntry]:
        return _entry_index(self.name)


# file stems in gsvinspect/data/manifests
MANIFEST_STEMS = (
    "s1_gpt_v1", "s1_gpt_v2",
    "sovits_G_v1", "sovits_G_v2", "sovits_G_v2Pro", "sovits_G_v2ProPlus", "sovits_G_v3", "sovits_G_v4",
    "sovits_G_v3_lora_r32", "sovits_G_v4_lora_r32",
    "sovits_D_v1v2", "sovits_D_v2Pro",
    "vocoder_v4",
)


@lru_cache(maxsize=None)
def load_manifest(file_stem: str) -> Manifest:
    """Read one manifest by file stem (e.g. "sovits_G_v2"); cached, the files never change."""
    stem = file_stem[:-5] if file_stem.endswith(".json") else file_stem
    if stem not in MANIFEST_STEMS:
        raise UsageError(f"unknown manifest file {file_stem!r}; known: {', '.join(MANIFEST_STEMS)}")
    text = resources.files(MANIFEST_PACKAGE).joinpath(f"{stem}.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    entries = tuple(
        ManifestEntry(
            key=k["key"],
            shape=tuple(int(d) for d in k["shape"]),
            dtype=k.get("dtype", "float32"),
            buffer=bool(k.get("buffer", False)),
            requires_grad=k.get("requires_grad"),
            in_export=k.get("in_export"),
            in_lora_export=k.get("in_lora_export"),
        )
        for k in raw["keys"]
    )
    return Manifest(name=stem, header=raw.get("header", {}), entries=entries)


@lru_cache(maxsize=None)
def _entry_index(stem: str) -> dict[str, ManifestEntry]:
    return {e.key: e for e in load_manifest(stem).entries}


# ---------------------------------------------------------------------------------------------
# model + version -> manifest file (used by the generator and by the named sets)

GPT_VERSIONS = ("v1", "v2", "v3", "v4", "v2Pro", "v2ProPlus")
G_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4")
LORA_VERSIONS = ("v3", "v4")
D_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
VOCODER_VERSIONS = ("v4",)

MODELS = ("gpt", "sovits-G", "sovits-D", "sovits-G-lora", "vocoder")


def manifest_stem(model: str, version: str) -> str:
    """Which manifest file describes `model` at `version` (GPT v3/v4/Pro share the v2 net)."""
    table: dict[str, tuple[tuple[str, ...], object]] = {
        "gpt": (GPT_VERSIONS, lambda v: "s1_gpt_v1" if v == "v1" else "s1_gpt_v2"),
        "sovits-G": (G_VERSIONS, lambda v: f"sovits_G_{v}"),
        "sovits-G-lora": (LORA_VERSIONS, lambda v: f"sovits_G_{v}_lora_r32"),
        "sovits-D": (D_VERSIONS, lambda v: "sovits_D_v2Pro" if "Pro" in v else "sovits_D_v1v2"),
        "vocoder": (VOCODER_VERSIONS, lambda v: "vocoder_v4"),
    }
    if model not in table:
        raise UsageError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    versions, pick = table[model]
    if version not in versions:
        raise UsageError(f"{model} has no version {version!r}; it exists for: {', '.join(versions)}")
    return pick(version)  # type: ignore[operator]


def model_entries(model: str, version: str, *, rank: int = DEFAULT_LORA_RANK) -> list[ManifestEntry]:
    """The entries of `model` at `version`, with LoRA shapes adjusted to `rank`."""
    entries = load_manifest(manifest_stem(model, version)).entries
    if model == "sovits-G-lora" and rank != MANIFEST_LORA_RANK:
        return [e.with_rank(rank) for e in entries]
    return list(entries)


# ---------------------------------------------------------------------------------------------
# the names a user types for `check --as NAME`

@dataclass(frozen=True, slots=True)
class _NamedSet:
    model: str
    version: str
    subset: str | None = None  # "export" (in_export) | "lora-export" (in_lora_export)
    alias_of: str | None = None


def _named_sets() -> dict[str, _NamedSet]:
    sets: dict[str, _NamedSet] = {}
    sets["gpt-v1"] = _NamedSet("gpt", "v1")
    sets["gpt-v2"] = _NamedSet("gpt", "v2")
    for v in ("v3", "v4", "v2Pro", "v2ProPlus"):
        sets[f"gpt-{v}"] = _NamedSet("gpt", v, alias_of="gpt-v2")
    for v in G_VERSIONS:
        sets[f"sovits-G-{v}"] = _NamedSet("sovits-G", v)
    for v in LORA_VERSIONS:
        sets[f"sovits-G-{v}-lora"] = _NamedSet("sovits-G-lora", v)
    sets["sovits-D-v1"] = _NamedSet("sovits-D", "v1")
    sets["sovits-D-v2"] = _NamedSet("sovits-D", "v2", alias_of="sovits-D-v1")
    sets["sovits-D-v2Pro"] = _NamedSet("sovits-D", "v2Pro")
    sets["sovits-D-v2ProPlus"] = _NamedSet("sovits-D", "v2ProPlus", alias_of="sovits-D-v2Pro")
    sets["vocoder-v4"] = _NamedSet("vocoder", "v4")
    # export subsets: what SoVITS_weights*/ files hold
    for v in G_VERSIONS:
        sets[f"sovits-G-{v}-export"] = _NamedSet("sovits-G", v, subset="export")
    for v in LORA_VERSIONS:
        sets[f"sovits-G-{v}-lora-export"] = _NamedSet("sovits-G-lora", v, subset="lora-export")
    return sets


_NAMED = _named_sets()
_BY_LOWER = {name.lower(): name for name in _NAMED}


def manifest_names() -> list[str]:
    """Every name `expected_weights` accepts, in a stable, readable order."""
    return list(_NAMED)


def resolve_name(name: str) -> str:
    """The canonical spelling of a set name (lookup is case-insensitive); UsageError if unknown."""
    canonical = _BY_LOWER.get(name.strip().lower())
    if canonical is None:
        raise UsageError(f"unknown expected-key set {name!r}; valid names: {', '.join(manifest_names())}")
    return canonical


def describe_name(name: str) -> str:
    """One line saying what a set name stands for (for `check --as` listings)."""
    s = _NAMED[resolve_name(name)]
    what = {
        "gpt": "GPT (s1) weights, model.* keys",
        "sovits-G": "SoVITS generator incl. enc_q (pretrained s2G / G_*.pth)",
        "sovits-G-lora": "SoVITS generator with peft-wrapped cfm (LoRA G_*.pth)",
        "sovits-D": "SoVITS discriminator (s2D / D_*.pth)",
        "vocoder": "v4 vocoder (bare state dict)",
    }[s.model]
    if s.model == "sovits-G" and s.version in ("v3", "v4"):
        what = "SoVITS v3/v4 generator (SynthesizerTrnV3: no enc_q, dec or flow)"
    if s.subset == "export":
        what = "SoVITS_weights export: generator without enc_q"
    elif s.subset == "lora-export":
        what = "SoVITS_weights LoRA export: adapters + trainable modules + buffers"
    note = f" (same net as {s.alias_of})" if s.alias_of else ""
    return f"{what}, {s.version}{note}"


def expected_entries(name: str, *, rank: int = DEFAULT_LORA_RANK) -> list[ManifestEntry]:
    """The manifest entries of a named set, in state_dict order."""
    s = _NAMED[resolve_name(name)]
    entries = model_entries(s.model, s.version, rank=rank)
    if s.subset == "export":
        entries = [e for e in entries if e.in_export is not False]
    elif s.subset == "lora-export":
        entries = [e for e in entries if e.in_lora_export]
    return entries


def expected_weights(name: str, *, rank: int = DEFAULT_LORA_RANK,
                     dtype: str | None = None) -> dict[str, TensorInfo]:
    """key -> TensorInfo a file of kind `name` should hold (dtype: manifest float32 unless overridden)."""
    if rank < 1:
        raise UsageError(f"LoRA rank must be >= 1, got {rank}")
    return {e.key: e.info(dtype) for e in expected_entries(name, rank=rank)}
