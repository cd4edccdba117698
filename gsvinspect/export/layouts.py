"""Output layouts per kind and version: what GPT-SoVITS's savers write (FORMATS.md §3, §4, §6, §7, §8).

The model kind of a file, the target layout and 2-byte header an export gets, the manifest its keys
are checked against, the byte range GPT-SoVITS's size ladders need, the top-level entries in order
and the `info` text. Pure metadata: no torch, no numpy.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from .. import __version__
from ..load.safe_unpickle import Opaque
from ..meta import Layout
from .plan_data import Entry, TensorSource

BASE_LAYOUT = {"gpt": Layout.GPT_PRETRAINED, "sovits-g": Layout.SOVITS_G_PRETRAINED,
               "sovits-d": Layout.SOVITS_D_PRETRAINED}


_EXPORT_KIND = {"gpt": "gpt", "sovits-G": "sovits-g", "sovits-G-lora": "sovits-g", "sovits-D": "sovits-d"}


def model_kind(ck) -> str:
    """gpt | sovits-g | sovits-d | unknown: the identity's kind in the export's words."""
    from ..load.identity import kind_of

    return _EXPORT_KIND.get(kind_of(ck), "unknown")


def is_lora(ck) -> bool:
    from .lora import has_lora

    return ck.layout in (Layout.SOVITS_G_LORA_TRAIN, Layout.SOVITS_WEIGHTS_LORA) or has_lora(ck.weights)


def get_path(d: Any, *path: str) -> Any:
    for p in path:
        if isinstance(d, Opaque):
            d = d.as_plain()
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def find_config(ck) -> tuple[Any, str] | None:
    """The config of a checkpoint and where it sits (FORMATS §3.2: Lightning keeps it in hyper_parameters)."""
    ex = ck.extras
    if "config" in ex and ex["config"] is not None:
        return ex["config"], "config"
    hp = ex.get("hyper_parameters")
    cfg = get_path(hp, "config")
    if cfg is not None:
        return cfg, "hyper_parameters.config"
    return None


def describe_config(cfg: Any) -> str:
    if isinstance(cfg, Opaque):
        return cfg.fullname
    return type(cfg).__name__



def manifest_name_for(kind: str, version: str, layout_choice: str, lora_form: bool) -> str | None:
    """The key set the output is checked against (the identity's name for it)."""
    from ..load.identity import manifest_name

    model = {"gpt": "gpt", "sovits-g": "sovits-G", "sovits-d": "sovits-D"}.get(kind)
    if model is None:
        return None
    subset = None
    if kind == "sovits-g":
        if lora_form:
            subset = "lora" if layout_choice == "same" else "lora-export"
        elif layout_choice == "sovits-weights":
            subset = "export"
    return manifest_name(model, version, subset=subset)


def is_full_size(tensors: list[TensorSource], manifest_name: str | None, rank: int | None) -> bool:
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


def size_rule_for(kind: str, version: str, layout_choice: str, header: bytes) -> tuple[int, int | None] | None:
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



def upstream_info(choice: str, kind: str, version: str, ft_ck, lora_form: bool) -> str:
    """The `info` string GPT-SoVITS's own saver writes for this layout (FORMATS §3.3, §4.1, §6):
    ``GPT-e<N>`` (GPT_weights), ``<E>epoch_<S>iteration`` (SoVITS_weights, LoRA too),
    ``pretrained_s2G_<v>`` (base G; ``pretrained_s1_<v>`` / ``pretrained_s2D_<v>`` by analogy)."""
    inf = ft_ck.extras.get("info")
    inf = inf if isinstance(inf, str) else ""
    if choice == "gpt-weights":
        m = re.match(r"GPT-e(\d+)\b", inf)
        epoch = ft_ck.extras.get("epoch")
        n = m.group(1) if m else (epoch + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) else 0)
        return f"GPT-e{n}"
    if choice == "sovits-weights" or (lora_form and choice != "same"):
        m = re.match(r"(\d+)epoch_(\d+)iteration\b", inf)
        if m:
            return m.group(0)
        it = ft_ck.extras.get("iteration")
        epoch = it if isinstance(it, int) and not isinstance(it, bool) else 0
        step = re.search(r"G_(\d+)\.pth$", ft_ck.path.name)
        return f"{epoch}epoch_{step.group(1) if step else 0}iteration"
    what = {"gpt": "s1", "sovits-g": "s2G", "sovits-d": "s2D"}.get(kind, kind)
    return f"pretrained_{what}_{version}"


def info_text(pre_ck, ft_ck, alpha, rules, view, version: str, what: str, upstream: str) -> str:
    """`upstream` first (what GPT-SoVITS and its ecosystem parse), then where the file came from."""
    def with_info(ck):
        inf = ck.extras.get("info")
        return f"{ck.path.name} ({inf})" if isinstance(inf, str) and inf else ck.path.name

    bits = [f"{upstream} (gsvinspect {__version__}: {version} {what} from {with_info(ft_ck)} over {with_info(pre_ck)}"]
    if view is not None:
        bits.append(f"LoRA rank {view.rank} merged")
    if alpha is not None:
        bits.append(f"alpha {alpha}")
    if rules is not None and getattr(rules, "has_alphas", False):
        bits.append("per-module alphas")
    return "; ".join(bits) + ")"


def plan_entries(choice, kind, pre_ck, ft_ck, scaler_where, scaler_from, config_source, have_config, lora_form):
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

    if choice == "pretrained" and pre_ck.layout == BASE_LAYOUT.get(kind) and isinstance(pre_ck.root, dict) \
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



def target_layout(choice: str, kind: str, version: str, pre_ck, ft_ck, ft_lora: bool,
                  problems: list[str]) -> tuple[Layout, bytes, bool]:
    """(output layout, 2-byte header, keep the LoRA form) for `--layout choice`; problems appended."""
    from .torch_writer import VALID_HEADERS

    lora_form = False
    header = b"PK"
    if choice == "pretrained":
        out_layout = BASE_LAYOUT.get(kind, pre_ck.layout)
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
    return out_layout, header, lora_form
