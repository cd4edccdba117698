"""``write_checkpoint``: one file in the exact container of a layout (FORMATS.md)."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from ..errors import UsageError
from ..load.manifest import (
    D_VERSIONS, GPT_VERSIONS, G_VERSIONS, LORA_VERSIONS, load_manifest, manifest_stem, model_entries,
)
from ..meta import Layout
from .containers import (
    HParams, _atomic_write, _my_save, _my_save2, _plain_save, _save_bytes, gpt_config, gpt_export_config,
    sovits_config, v1_pretrained_config, write_safetensors,
)
from .trainer import (
    _adamw_state, _g_groups, _lightning_loops, _param_keys, _scaled_adam_state, callback_key,
    grad_scaler_state,
)
from .weights import _check_scale, _torch, cast, state_dict

# upstream's headers (FORMATS.md §2.2)
HEADERS = {"v2Pro": b"05", "v2ProPlus": b"06"}
LORA_HEADERS = {"v3": b"03", "v4": b"04"}

SCALER_KEYS = ("MixedPrecision", "MixedPrecisionPlugin", "native_amp_scaling_state")

_DEFAULT = object()

# write_checkpoint

# layout -> model whose manifest it holds
_LAYOUT_MODEL = {
    Layout.GPT_PRETRAINED: "gpt", Layout.GPT_LIGHTNING: "gpt", Layout.GPT_WEIGHTS: "gpt",
    Layout.SOVITS_G_PRETRAINED: "sovits-G", Layout.SOVITS_G_TRAIN: "sovits-G",
    Layout.SOVITS_WEIGHTS: "sovits-G",
    Layout.SOVITS_D_PRETRAINED: "sovits-D", Layout.SOVITS_D_TRAIN: "sovits-D",
    Layout.SOVITS_G_LORA_TRAIN: "sovits-G-lora", Layout.SOVITS_WEIGHTS_LORA: "sovits-G-lora",
    Layout.VOCODER: "vocoder",
}

_LAYOUT_DTYPE = {
    Layout.GPT_PRETRAINED: "float16", Layout.GPT_LIGHTNING: "float32", Layout.GPT_WEIGHTS: "float16",
    Layout.SOVITS_G_PRETRAINED: "float16", Layout.SOVITS_D_PRETRAINED: "float16",
    Layout.SOVITS_G_TRAIN: "float32", Layout.SOVITS_D_TRAIN: "float32",
    Layout.SOVITS_G_LORA_TRAIN: "float32", Layout.SOVITS_WEIGHTS: "float16",
    Layout.SOVITS_WEIGHTS_LORA: "float16", Layout.VOCODER: "float32",
    Layout.SAFETENSORS: "float16", Layout.STATE_DICT: "float32", Layout.UNKNOWN: "float32",
}

# which versions each layout exists for (None = any version)
_LAYOUT_VERSIONS = {
    Layout.GPT_PRETRAINED: GPT_VERSIONS, Layout.GPT_LIGHTNING: GPT_VERSIONS, Layout.GPT_WEIGHTS: GPT_VERSIONS,
    Layout.SOVITS_G_PRETRAINED: G_VERSIONS, Layout.SOVITS_G_TRAIN: G_VERSIONS,
    Layout.SOVITS_WEIGHTS: ("v1", "v2", "v2Pro", "v2ProPlus", "v3"),
    Layout.SOVITS_D_PRETRAINED: D_VERSIONS, Layout.SOVITS_D_TRAIN: D_VERSIONS,
    Layout.SOVITS_G_LORA_TRAIN: LORA_VERSIONS, Layout.SOVITS_WEIGHTS_LORA: LORA_VERSIONS,
    Layout.VOCODER: ("v4",),
}


def layout_versions(layout: Layout) -> tuple[str, ...]:
    """Versions a layout exists for upstream (what write_checkpoint accepts)."""
    layout = Layout(layout)
    if layout in _LAYOUT_VERSIONS:
        return tuple(_LAYOUT_VERSIONS[layout])
    return tuple(G_VERSIONS)


def default_dtype(layout: Layout) -> str:
    return _LAYOUT_DTYPE[Layout(layout)]


def write_checkpoint(path, layout, version: str, *, weights=None, scale: int = 1, seed: int = 0,
                     dtype=None, model: str | None = None, amp_scaler: bool = True,
                     scaler_key: str = "MixedPrecision", hparams_object: bool | None = None,
                     path_object: bool = True, lora_rank: int = 32, optimizer=True,
                     info=_DEFAULT, header: bytes | None = None, epoch: int = 14,
                     step: int = 1500, iteration: int = 8, learning_rate: float = 0.0001) -> Path:
    """Write one checkpoint file exactly as upstream writes `layout` (FORMATS.md); return its Path.

    weights: the state dict to store (default: state_dict(model, version, scale, seed)); floating
    tensors are cast to `dtype` (default per layout: pretrained/exports float16, training and
    vocoder float32). Exports drop `enc_q`, LoRA exports keep only the in_lora_export keys.
    model: for SAFETENSORS / STATE_DICT / UNKNOWN, which net to generate (default "sovits-G").
    hparams_object: pickle `config` as `utils.HParams` (default: SoVITS exports and v1 pretrained G).
    optimizer: True (moments only when the net has <= 2M values), "full", "light" (step counts
    only) or False (no per-param state).
    header: override the 2 first bytes (e.g. b"02" for a merged v3 export).
    """
    layout = Layout(layout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_scale(scale)
    if layout in _LAYOUT_VERSIONS and version not in _LAYOUT_VERSIONS[layout]:
        raise UsageError(f"layout {layout.value} does not exist for version {version!r} "
                         f"(exists for: {', '.join(_LAYOUT_VERSIONS[layout])})")
    net = _LAYOUT_MODEL.get(layout) or model or "sovits-G"
    if weights is None:
        weights = state_dict(net, version, scale=scale, seed=seed, rank=lora_rank)
    target = dtype or _LAYOUT_DTYPE[layout]
    w = cast(weights, target)
    if hparams_object is None:
        hparams_object = layout in (Layout.SOVITS_WEIGHTS, Layout.SOVITS_WEIGHTS_LORA) or (
            layout == Layout.SOVITS_G_PRETRAINED and version == "v1")
    wrap = (lambda c: HParams(**c)) if hparams_object else (lambda c: c)
    opt_seed = seed + 101

    if layout == Layout.GPT_PRETRAINED:
        obj = {"weight": w, "config": gpt_config(version, scale=scale)}
        if info is not _DEFAULT and info is not None:
            obj["info"] = info
        _plain_save(obj, path)
    elif layout == Layout.GPT_WEIGHTS:
        exp = path.stem.rsplit("-e", 1)[0] or "demo"
        obj = OrderedDict(weight=w, config=gpt_export_config(version, scale=scale, exp=exp),
                          info=f"GPT-e{epoch + 1}" if info is _DEFAULT else info)
        _my_save(obj, path, seed)
    elif layout == Layout.GPT_LIGHTNING:
        _write_lightning(path, w, version, scale=scale, epoch=epoch, step=step, amp_scaler=amp_scaler,
                         scaler_key=scaler_key, path_object=path_object, optimizer=optimizer)
    elif layout in (Layout.SOVITS_G_PRETRAINED, Layout.SOVITS_D_PRETRAINED):
        is_g = layout == Layout.SOVITS_G_PRETRAINED
        cfg = v1_pretrained_config(scale) if (is_g and version == "v1") else sovits_config(version, scale=scale)
        obj = OrderedDict(weight=w, config=wrap(cfg))
        if info is _DEFAULT:
            info = f"pretrained_s2G_{version}" if is_g else None
        if info is not None:
            obj["info"] = info
        if not (is_g and version == "v1"):
            obj = dict(obj)
        _plain_save(obj, path, hparams=hparams_object)
    elif layout in (Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN, Layout.SOVITS_G_LORA_TRAIN):
        lr_now = learning_rate * 0.999875 ** iteration
        if layout == Layout.SOVITS_D_TRAIN:
            groups = [_param_keys("sovits-D", version, w)]
            skip = ()
        elif layout == Layout.SOVITS_G_TRAIN:
            groups = _g_groups(_param_keys("sovits-G", version, w))
            skip = ("enc_p.ssl_proj", "module.enc_p.ssl_proj")
        else:
            groups = [_lora_trainable(version, w, lora_rank)]
            skip = ()
        obj = {"model": module_state_dict(w), "iteration": iteration,
               "optimizer": _adamw_state(w, groups, lr=learning_rate, lr_now=lr_now, steps=step,
                                         optimizer=optimizer, skip=skip, seed=opt_seed),
               "learning_rate": learning_rate}
        _my_save(obj, path, seed)
    elif layout == Layout.SOVITS_WEIGHTS:
        kept = {k: v for k, v in w.items() if "enc_q" not in k}  # savee: plain dict
        cfg = sovits_config(version, scale=scale, exp=path.stem.split("_e")[0] or "demo")
        obj = OrderedDict(weight=kept, config=wrap(cfg),
                          info=f"{iteration}epoch_{step}iteration" if info is _DEFAULT else info)
        hdr = header if header is not None else HEADERS.get(version)
        if hdr is not None and hdr != b"PK":
            _my_save2(obj, path, hdr, hparams=hparams_object)
        else:
            _my_save(obj, path, seed, hparams=hparams_object)
    elif layout == Layout.SOVITS_WEIGHTS_LORA:
        kept = {k: v for k, v in w.items() if _in_lora_export(version, k)}
        cfg = sovits_config(version, scale=scale, exp=path.stem.split("_e")[0] or "demo", lora_rank=lora_rank)
        obj = OrderedDict(weight=kept, config=wrap(cfg),
                          info=f"{iteration}epoch_{step}iteration" if info is _DEFAULT else info,
                          lora_rank=int(lora_rank))
        _my_save2(obj, path, header or LORA_HEADERS[version], hparams=hparams_object)
    elif layout in (Layout.VOCODER, Layout.STATE_DICT):
        _plain_save(w, path)
    elif layout == Layout.SAFETENSORS:
        write_safetensors(path, w)
    elif layout == Layout.UNKNOWN:
        # tensors under an entry name no GPT-SoVITS writer uses
        _plain_save({"ema_weights": w, "step": step, "note": "synthetic container of unknown kind"}, path)
    else:  # pragma: no cover - every Layout is handled above
        raise UsageError(f"cannot write layout {layout}")
    return path


def _in_lora_export(version: str, key: str) -> bool:
    e = load_manifest(manifest_stem("sovits-G-lora", version)).entry(key)
    return True if e is None else bool(e.in_lora_export)


def _lora_trainable(version: str, weights, rank: int) -> list[str]:
    """LoRA G's single AdamW group: requires_grad params only (adapters, ref_enc, bridge, wns1, linear_mel)."""
    index = {e.key: e for e in model_entries("sovits-G-lora", version, rank=rank)}
    out = []
    for k in weights:
        e = index.get(k)
        if e is None or (not e.buffer and e.requires_grad is not False):
            out.append(k)
    return out


def _write_lightning(path: Path, w, version: str, *, scale: int, epoch: int, step: int,
                     amp_scaler: bool, scaler_key: str, path_object: bool, optimizer) -> None:
    torch = _torch()
    if scaler_key not in SCALER_KEYS:
        raise UsageError(f"scaler_key must be one of {', '.join(SCALER_KEYS)}")
    exp_dir = f"/home/user/GPT-SoVITS/logs/demo/logs_s1_{version}"
    ckpt_dir = f"{exp_dir}/ckpt"
    best = f"{ckpt_dir}/epoch={epoch}-step={step}.ckpt"
    cfg = gpt_config(version, scale=scale)
    if not amp_scaler:
        cfg["train"]["precision"] = "32"
    obj: dict = {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": module_state_dict(w),
        "loops": _lightning_loops(epoch, step, batches=step * 4),
        "callbacks": {callback_key(cfg["train"]["save_every_n_epoch"]): {
            "monitor": "top_3_acc", "best_model_score": torch.tensor(0.8125),
            "best_model_path": best, "current_score": torch.tensor(0.8125), "dirpath": ckpt_dir,
            "best_k_models": {best: torch.tensor(0.8125)}, "kth_best_model_path": best,
            "kth_value": torch.tensor(0.8125), "last_model_path": ""}},
        "optimizer_states": [_scaled_adam_state(w, steps=step, optimizer=optimizer)],
        "lr_schedulers": [{"init_lr": 1e-05, "peak_lr": 0.002, "end_lr": 0.0001,
                           "_warmup_rate": (0.002 - 1e-05) / 2000, "_decay_rate": (0.0001 - 0.002) / 40000,
                           "_current_step": step, "lr": 0.002, "warmup_steps": 2000,
                           "total_steps": 40000, "_last_lr": [0.002]}],
    }
    if amp_scaler:
        obj[scaler_key] = grad_scaler_state()
    obj["hparams_name"] = "kwargs"
    obj["hyper_parameters"] = {"config": cfg,
                               "output_dir": _posix_path(exp_dir, path_object),
                               "is_train": True}
    _atomic_write(path, _save_bytes(obj, hparams=False))


def _posix_path(p: str, as_object: bool):
    if not as_object:
        return p
    return Path(p) if os.name == "posix" else PurePosixPath(p)


def module_state_dict(w):
    """`w` as `nn.Module.state_dict()` returns it: an OrderedDict carrying `_metadata` (one entry per
    module prefix with its `version`), which torch.save pickles with a BUILD. Training checkpoints
    (G_*.pth, Lightning ckpts) save `model.state_dict()` and so carry it; exports build fresh dicts."""

    sd = OrderedDict(w)
    meta = OrderedDict([("", {"version": 1})])
    for key in w:
        parts = key.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            meta.setdefault(".".join(parts[:i]), {"version": 1})
    sd._metadata = meta
    return sd
