"""Say which GPT-SoVITS file a checkpoint is (layout) and which model version, with evidence.

Evidence is collected the way GPT-SoVITS itself decides (FORMATS.md §2.3: md5 of the first
8 KiB, then the 2-byte header), then from what the weights themselves prove (key signatures,
phoneme-embedding rows 322/512/732, `sv_emb`, LoRA keys, kernel sizes), then from hints
(config, `info`, path). Each step appends a sentence to `ck.evidence`, so the user sees why.
"""

from __future__ import annotations

import re
from typing import Any

from ..meta import VERSIONS, Layout
from .identity import (GPT_EMBED, HEADER_VERSIONS, PRETRAINED_MD5, SOVITS_EMBED, model_kind,  # noqa: F401
                       same_net_versions, strip_wrapper)
from .safe_unpickle import Opaque, TensorRef

_INFO_EXPORT = re.compile(r"^\d+epoch_\d+iteration\b")
_INFO_GPT_EXPORT = re.compile(r"^GPT-e\d+\b")


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _config_version(cfg: Any) -> str | None:
    """`version` recorded in a config (plain dict or HParams placeholder), if any."""
    if isinstance(cfg, Opaque):
        cfg = cfg.as_plain()
    if not isinstance(cfg, dict):
        return None
    for path in (("model", "version"), ("version",), ("data", "version")):
        node: Any = cfg
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, Opaque):
                node = node.as_plain()
        if isinstance(node, str) and node in VERSIONS:
            return node
    return None


def detect(ck) -> None:
    """Fill ck.layout, ck.version, ck.version_fits, ck.evidence, ck.layout_evidence, ck.scaler_note."""
    root = ck.root if isinstance(ck.root, dict) else {}
    keys = list(ck.weights)
    base_keys = strip_wrapper(keys)
    kind = model_kind(base_keys)
    if kind == "gpt" and sum(k.startswith("model.") for k in base_keys) <= 0.9 * len(base_keys):
        kind = "other"  # GPT keys without the 'model.' prefix: no GPT-SoVITS layout holds them
    shapes = {k: ck.weights[o].shape for k, o in zip(base_keys, keys)}
    ck.layout = _layout(ck, root, kind, base_keys)
    ev: list[str] = []
    marked = _marked_version(ck, ev)
    derived = _weights_version(ck, root, kind, base_keys, shapes, marked, ev)
    version = _reconcile(ck, root, kind, marked, derived, ev)
    ck.version = version or "unknown"
    ck.version_fits = _version_fits(ck, root, kind, ck.version, marked)
    if not ev:
        ev.append("no version markers found")
    ck.evidence = ev
    ck.scaler_note = _scaler_note(ck)


def _version_fits(ck, root, kind: str, version: str, marked: str | None) -> tuple[str, ...]:
    """Every version this file could be: siblings with identical nets, unless something in the
    file (md5, header, config, info, path) names one of them."""
    family = same_net_versions("sovits-G" if kind == "sovits-G-lora" else kind, version)
    if len(family) == 1 or marked is not None:
        return (version,)
    if _config_version(_config_of(root)) in family or _folder_version_hint(ck, root) is not None:
        return (version,)
    if kind.startswith("sovits-G") and _v3_v4_hint(ck, root) is not None:
        return (version,)
    return family


def _layout(ck, root, kind: str, base_keys: list[str]) -> Layout:
    """Which GPT-SoVITS file this is, from its container entries, keys and markers."""
    lev: list[str] = ck.layout_evidence
    is_v3_class = any(k.startswith("cfm.") for k in base_keys)  # SynthesizerTrnV3 (v3/v4)
    top = set(k for k in root if isinstance(k, str))
    info = _text(root.get("info"))
    wp = ck.weights_path[0] if ck.weights_path else None
    layout = Layout.UNKNOWN
    if ck.container == "safetensors":
        layout = Layout.SAFETENSORS
        lev.append("safetensors file (no pickle)")
    elif wp == "state_dict" and top & {"loops", "pytorch-lightning_version", "optimizer_states", "epoch"}:
        layout = Layout.GPT_LIGHTNING if kind == "gpt" else Layout.UNKNOWN
        lev.append("Lightning checkpoint: 'state_dict' with "
                   + ", ".join(sorted(top & {"loops", "optimizer_states", "pytorch-lightning_version"}))
                   + ("" if kind == "gpt" else f" (of a {kind} model: GPT-SoVITS trains only the GPT with Lightning)"))
    elif wp == "model" and top & {"iteration", "optimizer", "learning_rate"}:
        layout = {"sovits-D": Layout.SOVITS_D_TRAIN, "sovits-G-lora": Layout.SOVITS_G_LORA_TRAIN}.get(kind, Layout.SOVITS_G_TRAIN)
        lev.append("SoVITS training checkpoint (utils.save_checkpoint): model, iteration, optimizer, learning_rate")
    elif wp == "weight":
        if kind == "gpt":
            if info and _INFO_GPT_EXPORT.match(info):
                layout = Layout.GPT_WEIGHTS
                lev.append(f"GPT_weights export: info {info!r}")
            else:
                layout = Layout.GPT_PRETRAINED
                lev.append("{weight, config} with model.* keys: pretrained GPT layout")
        elif kind == "sovits-D":
            layout = Layout.SOVITS_D_PRETRAINED
            lev.append("{weight, config} with discriminators.* keys")
        elif "lora_rank" in top or kind == "sovits-G-lora":
            layout = Layout.SOVITS_WEIGHTS_LORA
            lev.append("LoRA export: " + ("lora_rank entry" if "lora_rank" in top else "lora_A/lora_B keys"))
        elif kind == "sovits-G":
            has_enc_q = any(k.startswith("enc_q.") for k in base_keys)
            if ck.header in (b"05", b"06"):
                layout = Layout.SOVITS_WEIGHTS
                lev.append(f"2-byte header {ck.header.decode()}: SoVITS_weights export (my_save2)")
            elif info and _INFO_EXPORT.match(info):
                layout = Layout.SOVITS_WEIGHTS
                lev.append(f"SoVITS_weights export: info {info!r}")
            elif has_enc_q or (is_v3_class and (info or "").startswith("pretrained")):
                layout = Layout.SOVITS_G_PRETRAINED
                lev.append("{weight, config, info} with enc_q: pretrained G layout" if has_enc_q
                           else f"pretrained G layout: info {info!r}")
            elif is_v3_class:
                layout = Layout.SOVITS_G_PRETRAINED
                lev.append("{weight, config} of the v3/v4 class (which has no enc_q): pretrained G layout")
            else:
                layout = Layout.SOVITS_WEIGHTS
                lev.append("{weight, config} without enc_q: SoVITS_weights export layout (enc_q dropped)")
        else:
            layout = Layout.UNKNOWN
            lev.append("'weight' entry holding keys of no known GPT-SoVITS model")
    elif not ck.weights_path:
        if kind == "vocoder":
            layout = Layout.VOCODER
            lev.append("bare state dict with conv_pre/ups/resblocks keys: v4 vocoder")
        else:
            layout = Layout.STATE_DICT
            lev.append(f"bare state dict ({kind} keys)" if kind != "other" else "bare state dict")
    else:
        lev.append(f"tensors under {'/'.join(ck.weights_path)!r}")
    return layout


def _marked_version(ck, ev: list[str]) -> str | None:
    """The version the file's markers name, the way GPT-SoVITS decides (md5, then 2-byte header)."""
    version = None
    md5 = ck.head8k_md5
    if md5 in PRETRAINED_MD5:
        name, version = PRETRAINED_MD5[md5]
        ev.append(f"md5 of the first 8 KiB matches the official {name} ({version})")
    if ck.header in HEADER_VERSIONS:
        hv, is_lora = HEADER_VERSIONS[ck.header]
        ev.append(f"2-byte header {ck.header.decode()!r}: {hv}{' LoRA' if is_lora else ''} export")
        version = version or hv
    elif ck.header == b"PK" and ck.container != "safetensors":
        ev.append("plain 'PK' zip (no GPT-SoVITS version header)")

    return version


def _weights_version(ck, root, kind: str, base_keys: list[str], shapes: dict, marked: str | None,
                     ev: list[str]) -> str | None:
    """The version the weights themselves prove (or the first of the versions they fit)."""
    version = marked
    is_v3_class = any(k.startswith("cfm.") for k in base_keys)
    derived = None
    if kind == "gpt":
        rows = shapes.get(GPT_EMBED)
        if rows:
            if rows[0] == 512:
                derived = "v1"
                ev.append("GPT phoneme embedding has 512 rows: v1 symbol set (s1longer.yaml)")
            elif rows[0] == 732:
                derived = "v2"
                ev.append("GPT phoneme embedding has 732 rows: v2 symbol set; the same GPT architecture serves "
                          "v2, v3, v4, v2Pro and v2ProPlus")
            else:
                ev.append(f"GPT phoneme embedding has {rows[0]} rows (neither 512 nor 732)")
    elif kind in ("sovits-G", "sovits-G-lora"):
        if any(k.startswith("sv_emb.") for k in base_keys):
            ups = shapes.get("dec.ups.0.weight_v") or shapes.get("dec.ups.0.weight")
            pre = shapes.get("dec.conv_pre.weight")
            if ups and len(ups) == 3 and ups[2] in (16, 20):
                derived = "v2ProPlus" if ups[2] == 20 else "v2Pro"
                ev.append(f"sv_emb/ge_to512 keys (speaker-verification branch) and first upsample kernel "
                          f"{ups[2]}: {derived}")
            elif pre and len(pre) == 3 and pre[1]:
                derived = "v2ProPlus" if pre[0] / pre[1] > 3.3 else "v2Pro"
                ev.append(f"sv_emb/ge_to512 keys and decoder width ratio {pre[0]}/{pre[1]}: {derived}")
            else:
                derived = "v2Pro"
                ev.append("sv_emb/ge_to512 keys: v2Pro family")
        elif is_v3_class:
            hint = _v3_v4_hint(ck, root)
            if hint:
                derived, why = hint
                ev.append(f"cfm/bridge/wns1 keys (SynthesizerTrnV3) and {why}: {derived}")
            else:
                derived = version if version in ("v3", "v4") else "v3"
                ev.append("cfm/bridge/wns1 keys: SynthesizerTrnV3 (v3 and v4 have identical keys and shapes; "
                          "nothing in the file says v4, so v3 is assumed)")
            if kind == "sovits-G-lora":
                r = _lora_rank(ck, base_keys, shapes)
                ev.append(f"peft LoRA adapters (lora_A/lora_B) of rank {r}")
        else:
            rows = shapes.get(SOVITS_EMBED)
            if rows:
                if rows[0] == 322:
                    derived = "v1"
                    ev.append("enc_p.text_embedding has 322 rows: v1 symbol set")
                elif rows[0] == 732:
                    derived = "v2"
                    ev.append("enc_p.text_embedding has 732 rows: v2 symbol set")
                else:
                    ev.append(f"enc_p.text_embedding has {rows[0]} rows (neither 322 nor 732)")
    elif kind == "sovits-D":
        n = len({k.split(".")[1] for k in base_keys if k.count(".") > 1})
        cv = _config_version(root.get("config"))
        if n >= 8:
            derived = cv if cv in ("v2Pro", "v2ProPlus") else "v2Pro"
            ev.append(f"{n} discriminators (7 periods + 1): v2Pro/v2ProPlus layout (identical for both)")
        elif n:
            derived = cv if cv in ("v1", "v2") else "v2"
            ev.append(f"{n} discriminators (5 periods + 1): v1/v2 layout (identical for both)")
        if cv:
            ev.append(f"config says version {cv}")
    elif kind == "vocoder":
        derived = "v4"
        ev.append("v4 vocoder (conv_pre/ups/resblocks/conv_post)")

    return derived


def _reconcile(ck, root, kind: str, version: str | None, derived: str | None, ev: list[str]) -> str | None:
    """Markers and weights together: hints pick a sibling of an identical net, conflicts are said."""
    md5 = ck.head8k_md5
    if not version and kind in ("gpt", "sovits-D") and derived:
        family = same_net_versions(kind, derived)
        cv = _config_version(_config_of(root))
        hint = (cv, "the config's model.version") if cv in family else _folder_version_hint(ck, root)
        if hint and hint[0] in family and hint[0] != derived:
            ev.append(f"{hint[1]} names {hint[0]} (the same architecture as {derived})")
            version = hint[0]
    gpt_family = kind == "gpt" and derived == "v2" and version in ("v3", "v4", "v2Pro", "v2ProPlus")
    if gpt_family:
        ev.append(f"the v2 GPT architecture is the one {version} uses")
    elif kind == "sovits-D" and derived and version in same_net_versions(kind, derived):
        pass  # a hint named the sibling of an identical D net: no conflict
    elif derived and version and derived != version and not (version in ("v3", "v4") and derived in ("v3", "v4")):
        if md5 in PRETRAINED_MD5 and derived in ("v1", "v2"):
            # the hash table maps v1's s2G488k to v2; the embedding decides (FORMATS §11.6)
            ev.append(f"the weights say {derived}, which GPT-SoVITS also uses to correct the symbol set")
            version = derived
        else:
            ev.append(f"CONFLICT: the weights say {derived} but the file's markers say {version}")
    elif derived and version in ("v3", "v4") and derived in ("v3", "v4"):
        pass  # header/md5 decide between identical v3/v4 key sets
    else:
        version = version or derived
    if not version:
        cv = _config_version(root.get("config"))
        if cv:
            version = cv
            ev.append(f"config says version {cv}")
    return version


def _v3_v4_hint(ck, root) -> tuple[str, str] | None:
    if ck.header in (b"03", b"02"):
        return "v3", f"header {ck.header.decode()}"
    if ck.header == b"04":
        return "v4", "header 04"
    md5v = PRETRAINED_MD5.get(ck.head8k_md5)
    if md5v and md5v[1] in ("v3", "v4"):
        return md5v[1], f"md5 of {md5v[0]}"
    info = _text(root.get("info")) or ""
    m = re.search(r"\b(v[34])\b|_(v[34])\b", info)
    if m:
        return (m.group(1) or m.group(2)), f"info {info!r}"
    cv = _config_version(root.get("config"))
    if cv in ("v3", "v4"):
        return cv, f"config version {cv}"
    p = str(ck.path)
    m = re.search(r"(?:logs_s2_|SoVITS_weights_|gsv-|s2G|_)(v[34])(?![0-9])", p)
    if m:
        return m.group(1), f"path contains {m.group(0)!r}"
    return None


_FOLDER_VERSION = re.compile(r"(?:logs_s[12]_|GPT_weights_|SoVITS_weights_|gsv-)(v2ProPlus|v2Pro|v1|v2|v3|v4)(?![0-9A-Za-z])")


def _folder_version_hint(ck, root) -> tuple[str, str] | None:
    """GPT-SoVITS names its output folders per version (logs_s1_v4, GPT_weights_v2Pro, ...)."""
    m = _FOLDER_VERSION.search(str(ck.path))
    if m:
        return m.group(1), f"the path ({m.group(0)})"
    cfgs = [root.get("config")]
    hp = root.get("hyper_parameters")
    if isinstance(hp, dict):
        cfgs.append(hp.get("config"))
        cfgs.append(hp.get("output_dir"))
    for cfg in cfgs:
        if isinstance(cfg, Opaque):
            cfg = cfg.as_plain()
        for text in _strings(cfg, 0):
            m = _FOLDER_VERSION.search(text)
            if m:
                return m.group(1), f"the config ({m.group(0)})"
    return None


def _config_of(root) -> Any:
    """`config`, or a Lightning checkpoint's hyper_parameters.config."""
    cfg = root.get("config")
    hp = root.get("hyper_parameters")
    if cfg is None and isinstance(hp, dict):
        cfg = hp.get("config")
    return cfg


def _strings(o, depth):
    if depth > 4:
        return
    if isinstance(o, str):
        yield o
    elif isinstance(o, dict):
        for v in o.values():
            yield from _strings(v, depth + 1)
    elif isinstance(o, (list, tuple)):
        for v in o:
            yield from _strings(v, depth + 1)


def _lora_rank(ck, base_keys, shapes) -> int | str:
    r = ck.root.get("lora_rank") if isinstance(ck.root, dict) else None
    if isinstance(r, int):
        return r
    for k in base_keys:
        if ".lora_A." in k:
            return shapes[k][0]
    return "?"


def _scaler_note(ck) -> str:
    if ck.scaler is not None:
        st = ck.scaler.state
        scale = st.get("scale") if isinstance(st, dict) else None
        if isinstance(scale, TensorRef):
            scale = "tensor"
        return f"GradScaler state under {ck.scaler.where!r} (scale={scale})"
    lay = ck.layout
    if lay in (Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN, Layout.SOVITS_G_LORA_TRAIN):
        return "no GradScaler state: SoVITS training never saves one (a fresh scaler is built on every start)"
    if lay == Layout.GPT_LIGHTNING:
        return "no GradScaler state: trained without fp16 AMP (precision 32 or bf16-mixed), so Lightning saved none"
    if lay in (Layout.GPT_PRETRAINED, Layout.GPT_WEIGHTS, Layout.SOVITS_G_PRETRAINED, Layout.SOVITS_D_PRETRAINED,
               Layout.SOVITS_WEIGHTS, Layout.SOVITS_WEIGHTS_LORA):
        return "no GradScaler state: weight-only files never carry one"
    return "no GradScaler state"


def base_verdict(ck) -> str:
    """Can this file be given to GPT-SoVITS training as pretrained_s1 / pretrained_s2G / pretrained_s2D?"""
    lay = ck.layout
    if ck.container == "torch-zip-headered" and lay != Layout.SOVITS_WEIGHTS_LORA:
        return "no: the 2-byte version header stops training's plain torch.load (export it as a plain PK zip)"
    if lay in (Layout.GPT_PRETRAINED, Layout.GPT_WEIGHTS):
        return "yes: usable as pretrained_s1 (training loads 'weight' strictly)"
    if lay == Layout.GPT_LIGHTNING:
        return "not directly: training reads 'weight', this file has 'state_dict'; use `gsvinspect export`"
    if lay == Layout.SOVITS_G_PRETRAINED:
        return "yes: usable as pretrained_s2G"
    if lay == Layout.SOVITS_D_PRETRAINED:
        return "yes: usable as pretrained_s2D"
    if lay in (Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN):
        return "not directly: training reads 'weight', this file has 'model'; use `gsvinspect export`"
    if lay == Layout.SOVITS_G_LORA_TRAIN:
        return "not directly: peft-wrapped keys; `gsvinspect export` merges the LoRA into a full base"
    if lay == Layout.SOVITS_WEIGHTS_LORA:
        return "no: a LoRA export holds adapters only, and its 2-byte header stops plain torch.load"
    if lay == Layout.SOVITS_WEIGHTS:
        if ck.header != b"PK":
            return "no: the 2-byte version header stops training's plain torch.load"
        if not any(k.startswith("enc_q.") for k in ck.weights) and ck.version in ("v1", "v2", "v2Pro", "v2ProPlus"):
            return ("risky: loads, but enc_q was dropped, so training starts with a random posterior encoder "
                    "(strict=False, silently); export from logs_s2*/G_*.pth instead")
        return "yes"
    if lay == Layout.VOCODER:
        return "not a training base (the v4 vocoder is loaded as is)"
    return "unknown layout"
