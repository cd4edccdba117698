"""Merge a peft LoRA SoVITS v3/v4 generator into plain weights, the way upstream inference does.

Upstream wraps ``net_g.cfm`` with peft (``lora_alpha = r``), loads the LoRA file and calls
``merge_and_unload()`` (FORMATS.md §7). Offline that is ``W = W_base + (alpha/r) · B @ A`` for every
adapted Linear weight (bias unchanged) and a rename of the remaining peft keys
(``cfm.base_model.model.X`` -> ``cfm.X``, ``….base_layer.bias`` -> ``….bias``). The base weight comes
from the LoRA training file itself (``base_layer.weight``) or, for a LoRA export that only carries
adapters, from the pretrained file. This module only plans on metadata; `merged_tensor` does the maths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from ..meta import TensorInfo

_PEFT_ROOT = re.compile(r"(^|\.)base_model\.model\.")
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
_BASE_LAYER = re.compile(r"\.base_layer\.")


def has_lora(keys) -> bool:
    return any(".lora_A." in k or ".lora_B." in k for k in keys)


def plain_module(peft_module: str) -> str:
    """``cfm.base_model.model.estimator.x.attn.to_q`` -> ``cfm.estimator.x.attn.to_q``."""
    return _PEFT_ROOT.sub(r"\1", peft_module, count=1)


def plain_key(key: str) -> str | None:
    """The merged (plain) name of a peft key; None for the adapter tensors themselves."""
    if _LORA.match(key):
        return None
    return _BASE_LAYER.sub(".", plain_module(key))


@dataclass(frozen=True, slots=True)
class LoraMerge:
    """How one plain weight is rebuilt: base + scale · B @ A."""

    out_key: str            # plain key, e.g. cfm.estimator.transformer_blocks.0.attn.to_q.weight
    base_key: str           # where the base weight is
    base_side: str          # "ft" (base_layer in the LoRA file) or "pre" (the pretrained file)
    a_key: str
    b_key: str
    scale: float


@dataclass
class LoraView:
    """The LoRA file seen as the plain state dict it stands for."""

    infos: dict[str, TensorInfo]        # plain key -> metadata, in file order
    sources: dict[str, str]             # plain key -> fine-tuned key copied as is
    merges: dict[str, LoraMerge]        # plain key -> merge recipe
    rank: int
    alpha: float
    adapters: int                       # number of adapted Linear layers
    unresolved: list[str]               # adapters whose base weight was found nowhere

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def lora_rank(ft: Mapping[str, TensorInfo], declared: int | None = None) -> int:
    """The rank from the adapter shapes (lora_A is [r, in]); checks a declared ``lora_rank``."""
    ranks = {info.shape[0] for k, info in ft.items() if _LORA.match(k) and ".lora_A." in k and info.shape}
    if not ranks:
        raise ValueError("no lora_A tensors: not a LoRA file")
    if len(ranks) > 1:
        raise ValueError(f"LoRA adapters of several ranks: {sorted(ranks)}")
    rank = ranks.pop()
    if declared is not None and int(declared) != rank:
        raise ValueError(f"lora_rank says {declared} but the adapters have rank {rank}")
    return rank


def lora_view(ft: Mapping[str, TensorInfo], pre: Mapping[str, TensorInfo] | None = None, *,
              declared_rank: int | None = None, lora_alpha: float | None = None) -> LoraView:
    """Plan the merge of the LoRA state dict `ft` (peft keys) into plain keys.

    `lora_alpha` defaults to the rank (upstream's LoraConfig), i.e. scale 1.
    """
    rank = lora_rank(ft, declared_rank)
    alpha = float(rank if lora_alpha is None else lora_alpha)
    scale = alpha / rank
    modules: dict[str, dict[str, str]] = {}
    for k in ft:
        m = _LORA.match(k)
        if m:
            modules.setdefault(m.group("module"), {})[m.group("ab")] = k
    infos: dict[str, TensorInfo] = {}
    sources: dict[str, str] = {}
    merges: dict[str, LoraMerge] = {}
    unresolved: list[str] = []
    # plain weight key -> peft module, for every module holding both adapters
    adapted = {plain_module(mod) + ".weight": mod for mod, ab in modules.items() if "A" in ab and "B" in ab}

    def add_merge(out_key: str) -> None:
        module = adapted[out_key]
        base_ft = module + ".base_layer.weight"
        if base_ft in ft:
            base_key, side, base_info = base_ft, "ft", ft[base_ft]
        elif pre is not None and out_key in pre:
            base_key, side, base_info = out_key, "pre", pre[out_key]
        else:
            unresolved.append(module)
            return
        merges[out_key] = LoraMerge(out_key, base_key, side, modules[module]["A"], modules[module]["B"], scale)
        infos[out_key] = TensorInfo(out_key, tuple(base_info.shape), base_info.dtype)

    for k, info in ft.items():
        m = _LORA.match(k)
        if m:  # an adapter: the merged weight goes here unless its base_layer came first
            out_key = plain_module(m.group("module")) + ".weight"
            if out_key in adapted and out_key not in infos and m.group("module") not in unresolved:
                add_merge(out_key)
            continue
        pk = plain_key(k)
        if pk is None or pk in infos:
            continue
        if pk in adapted:  # the base_layer weight of an adapted layer: merged, not copied
            add_merge(pk)
            continue
        infos[pk] = TensorInfo(pk, tuple(info.shape), info.dtype)
        sources[pk] = k
    return LoraView(infos=infos, sources=sources, merges=merges, rank=rank, alpha=alpha,
                    adapters=len(merges), unresolved=unresolved)


def merged_tensor(base, a, b, scale: float):
    """``base + scale · (B @ A)`` computed in float32 (torch tensors in, float32 tensor out)."""
    import torch

    w = base.to(torch.float32, copy=True)
    w.addmm_(b.to(torch.float32), a.to(torch.float32), alpha=scale)
    return w


# which keys of a LoRA G survive upstream's LoRA export (s2_train_v3_lora.py -> savee)
_LORA_EXPORT_PREFIXES = ("ref_enc.", "bridge.", "wns1.", "linear_mel.", "quantizer.")


def in_lora_export(key: str) -> bool:
    """True for keys upstream's LoRA export keeps: adapters, trainable modules and buffers."""
    if ".lora_A." in key or ".lora_B." in key:
        return True
    if key.startswith(_LORA_EXPORT_PREFIXES):
        return True
    return key.endswith(".inv_freq")
