"""One answer to "which GPT-SoVITS model is this": model kind, version, wrapper prefix, manifest.

Before this module three guessers disagreed: detection stripped one of four wrapper prefixes once,
the findings stripped three of them up to three times, the exporter looked for `.enc_p.` anywhere;
`check` named a v3 GPT's key set `gpt-v2` while export named it `gpt-v3`. Now detection
(`load.detect`), the findings and `check` (`align.knowledge`) and export (`export.layouts`) all ask
here, and a table-driven test (tests/load/test_identity.py) pins the answers for every layout and
version the synthetic generator writes.

The choices, where the old guessers disagreed:
* wrapper prefixes are `module.` (DDP), `_orig_mod.` (torch.compile), `net_g.` and `generator.`
  (training wrappers), stripped as a stack (`module._orig_mod.` is DDP around a compiled net);
* a GPT is recognised by its own keys (`ar_text_embedding`, `h.layers.`, ...) with or without the
  `model.` prefix GPT-SoVITS needs (the findings then say the prefix is missing) and never when
  SoVITS keys are there; a SoVITS G needs most keys under SoVITS module names; a vocoder needs
  both `conv_pre.` and `ups.`;
* a manifest is named after the file's own version (`gpt-v3`, `sovits-D-v2`): the name keeps what
  the file is, and `check` says which sibling shares the net ("same net as gpt-v2").

Pure metadata: no torch, no numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..meta import Layout

# md5(first 8 KiB) of the official pretrained SoVITS G files -> (name, version) (FORMATS.md §2.3)
PRETRAINED_MD5 = {
    "dc3c97e17592963677a4a1681f30c653": ("s2G488k.pth", "v1"),
    "6642b37f3dbb1f76882b69937c95a5f3": ("s2G2333k.pth", "v2"),
    "43797be674a37c1c83ee81081941ed0f": ("s2Gv3.pth", "v3"),
    "4f26b9476d0c5033e04162c486074374": ("s2Gv4.pth", "v4"),
    "c7e9fce2223f3db685cdfa1e6368728a": ("s2Gv2Pro.pth", "v2Pro"),
    "66b313e39455b57ab1b0bc0b239c9d0a": ("s2Gv2ProPlus.pth", "v2ProPlus"),
    "1dbcf2d280aff5dc4713c7b56b5c9463": ("s2Gv2Pro_pre1.pth", "v2Pro"),
    "2581b83257dbb1c91d1278e40c6b7a2f": ("s2Gv2ProPlus_pre1.pth", "v2ProPlus"),
}

# 2-byte header written by my_save2 -> (model version, is_lora) (FORMATS.md §2.2)
HEADER_VERSIONS = {
    b"00": ("v1", False), b"01": ("v2", False), b"02": ("v3", False), b"03": ("v3", True),
    b"04": ("v4", True), b"05": ("v2Pro", False), b"06": ("v2ProPlus", False),
}

GPT_EMBED = "model.ar_text_embedding.word_embeddings.weight"
SOVITS_EMBED = "enc_p.text_embedding.weight"

WRAPPERS = {"module.": "DistributedDataParallel", "_orig_mod.": "torch.compile",
            "net_g.": "training wrapper", "generator.": "training wrapper"}
KINDS = ("gpt", "sovits-G", "sovits-G-lora", "sovits-D", "vocoder", "other")
_GPT_MARKERS = ("ar_text_embedding", "ar_audio_embedding", "h.layers.", "ar_predict_layer", "bert_proj")
_SOVITS_G_PREFIXES = ("enc_p.", "dec.", "flow.", "enc_q.", "ref_enc.", "quantizer.", "ssl_proj.", "cfm.",
                      "bridge.", "wns1.", "linear_mel.", "sv_emb.", "ge_to512.", "prelu.")

# versions whose networks have identical keys and shapes, per kind (FORMATS.md §3, §4)
_SAME_NET = {
    "gpt": (("v1",), ("v2", "v3", "v4", "v2Pro", "v2ProPlus")),
    "sovits-D": (("v1", "v2"), ("v2Pro", "v2ProPlus")),
    "sovits-G": (("v3", "v4"),),
    "sovits-G-lora": (("v3", "v4"),),
}


def wrapper_prefix(keys: Iterable[str]) -> str:
    """The stack of wrapper prefixes every key carries ("" when none), e.g. "module._orig_mod."."""
    keys = list(keys)
    prefix = ""
    for _ in range(4):
        for p in WRAPPERS:
            if keys and all(k.startswith(p) for k in keys):
                prefix += p
                keys = [k[len(p):] for k in keys]
                break
        else:
            break
    return prefix


def strip_wrapper(keys: Iterable[str]) -> list[str]:
    """Keys without their wrapper prefixes, so signatures still match."""
    keys = list(keys)
    n = len(wrapper_prefix(keys))
    return [k[n:] for k in keys] if n else keys


def model_kind(keys: Iterable[str]) -> str:
    """gpt | sovits-G | sovits-G-lora | sovits-D | vocoder | other, from key names (wrappers ignored)."""
    base = strip_wrapper(keys)
    if not base:
        return "other"
    n = len(base)
    sovits_core = any(k.startswith(("enc_p.", "dec.")) for k in base)
    if not sovits_core and any(m in k for k in base for m in _GPT_MARKERS):
        return "gpt"
    if any(".lora_A." in k or ".lora_B." in k for k in base):
        return "sovits-G-lora"
    if sum(k.startswith("discriminators.") for k in base) > 0.9 * n:
        return "sovits-D"
    if sum(k.startswith(_SOVITS_G_PREFIXES) for k in base) > 0.6 * n:
        return "sovits-G"
    if any(k.startswith("conv_pre.") for k in base) and any(k.startswith("ups.") for k in base):
        return "vocoder"
    return "other"


_LAYOUT_KIND = {
    Layout.GPT_PRETRAINED: "gpt", Layout.GPT_LIGHTNING: "gpt", Layout.GPT_WEIGHTS: "gpt",
    Layout.SOVITS_D_PRETRAINED: "sovits-D", Layout.SOVITS_D_TRAIN: "sovits-D",
    Layout.SOVITS_G_LORA_TRAIN: "sovits-G-lora", Layout.SOVITS_WEIGHTS_LORA: "sovits-G-lora",
    Layout.SOVITS_G_PRETRAINED: "sovits-G", Layout.SOVITS_G_TRAIN: "sovits-G", Layout.SOVITS_WEIGHTS: "sovits-G",
    Layout.VOCODER: "vocoder",
}


def kind_of(ck: Any) -> str:
    """The model kind of an opened checkpoint: its detected layout says it, else its keys."""
    kind = _LAYOUT_KIND.get(getattr(ck, "layout", None))
    keys = list(getattr(ck, "weights", None) or ())
    if kind == "sovits-G" and any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "sovits-G-lora"
    return kind or model_kind(keys)


def same_net_versions(kind: str, version: str) -> tuple[str, ...]:
    """Every version whose `kind` network is identical to `version`'s (just `version` when unique)."""
    for group in _SAME_NET.get(kind, ()):
        if version in group:
            return group
    return (version,)


def say_versions(versions: tuple[str, ...]) -> str:
    """("v1", "v2") -> "v1 or v2"; one version as itself."""
    if len(versions) <= 1:
        return versions[0] if versions else "unknown"
    return ", ".join(versions[:-1]) + " or " + versions[-1]


def manifest_name(kind: str, version: str, *, subset: str | None = None) -> str | None:
    """The `check --as` name of `kind` at `version`, or None when GPT-SoVITS has no such network.

    `subset`: "export" (a SoVITS_weights file, no enc_q), "lora" (a LoRA training file, peft keys),
    "lora-export" (the adapters-only LoRA export). Named after the file's own version.
    """
    from .manifest import resolve_name
    from ..errors import UsageError

    if kind == "gpt":
        name = f"gpt-{version}"
    elif kind == "sovits-D":
        name = f"sovits-D-{version}"
    elif kind == "vocoder":
        name = f"vocoder-{version}"
    elif kind in ("sovits-G", "sovits-G-lora"):
        tail = {"export": "-export", "lora": "-lora", "lora-export": "-lora-export"}.get(subset or "", "")
        name = f"sovits-G-{version}{tail}"
    else:
        return None
    try:
        return resolve_name(name)
    except UsageError:
        return None


def check_name(ck: Any) -> str | None:
    """The expected-key set `check` compares a file with, from its kind, layout and version."""
    kind = kind_of(ck)
    v = getattr(ck, "version", "unknown") or "unknown"
    layout = getattr(ck, "layout", None)
    keys = list(getattr(ck, "weights", None) or ())
    if kind == "gpt":
        return manifest_name("gpt", v) or "gpt-v2"
    if kind == "vocoder":
        return "vocoder-v4"
    if kind == "sovits-D":
        return manifest_name("sovits-D", v) or "sovits-D-v1"
    if kind == "sovits-G-lora":
        lora_v = v if v in ("v3", "v4") else "v3"
        return manifest_name(kind, lora_v, subset="lora-export" if layout is Layout.SOVITS_WEIGHTS_LORA else "lora")
    if kind == "sovits-G":
        name = manifest_name(kind, v)
        if name is not None:
            return name
        return "sovits-G-v3" if any(k.startswith("cfm.") for k in strip_wrapper(keys)) else "sovits-G-v2"
    return None


@dataclass(frozen=True)
class Identity:
    """What model a file holds, which version(s) it fits, its wrapper prefix and its key set."""

    kind: str                       # one of KINDS
    version: str                    # the version detection settled on ("unknown" if none)
    fits: tuple[str, ...]           # every version this exact file could be (identical nets, no marker)
    wrapper: str                    # stacked wrapper prefix of every key, "" when none
    manifest: str | None            # the `check --as` name

    @property
    def version_text(self) -> str:
        """"v2" or, for a net that several versions share and nothing in the file decides,
        "v1 or v2: identical nets"."""
        if len(self.fits) > 1:
            return f"{say_versions(self.fits)}: identical nets"
        return self.version


def identify(ck: Any) -> Identity:
    """The identity of an opened (and detected) checkpoint."""
    kind = kind_of(ck)
    version = getattr(ck, "version", "unknown") or "unknown"
    fits = tuple(getattr(ck, "version_fits", ()) or ()) or (version,)
    keys = list(getattr(ck, "weights", None) or ())
    return Identity(kind=kind, version=version, fits=fits, wrapper=wrapper_prefix(keys), manifest=check_name(ck))
