"""Realistic synthetic GPT-SoVITS checkpoints, written exactly in the containers upstream writes.

Why: tests, benchmarks and the demo need every file kind of FORMATS.md (pretrained, Lightning,
G_/D_ training ckpts, headered SoVITS exports, LoRA, vocoder, safetensors) without shipping
gigabytes of real weights. Key names, order and shapes come from the manifests
(gsvinspect.load.manifest), so detection sees what it would see on real files.

API (torch is imported lazily inside each function):

``state_dict(model, version, *, scale=1, seed=0, dtype="float32", rank=32, materialize=True)``
    OrderedDict[str, Tensor] for model in {"gpt", "sovits-G", "sovits-D", "sovits-G-lora",
    "vocoder"}. scale=1 gives the exact manifest shapes; scale=k>1 divides every dim >= 64 by k
    (rounded up, min 8) except the phoneme-embedding rows (GPT 512/732, SoVITS 322/732) and LoRA
    ranks; small dims (kernel sizes, 1-sized axes) never change, so v2Pro/v2ProPlus, v1/v2 still
    differ. Values are seeded per key (seed, key): the same key gets the same values in every
    model that has it (a LoRA ckpt's base_layer weights equal the plain G's weights).
    materialize=False returns meta tensors (shapes/dtypes only, no memory).
``planned_shapes(model, version, *, scale=1, rank=32)``
    OrderedDict[key, shape] without torch.
``fine_tune(sd, *, seed=1, strength=0.01, module_strength=None, rows=None, row_strength=None,
            rename_prefix=None, change_shape=None, nan_key=None)``
    a fine-tuned partner: each float tensor moves by randn * strength * rms(tensor); the longest
    matching prefix in module_strength overrides strength; `rows` limits the phoneme-embedding
    change to those rows (the others then move by the key's strength only if row_strength is set,
    in which case `rows` move by row_strength).
``write_checkpoint(path, layout, version, *, weights=None, scale=1, seed=0, dtype=None, ...)``
    one file in the exact container of `layout` (a gsvinspect.meta.Layout); returns the Path.
``write_pair(dir, kind, version, *, scale=8, seed=0)``
    (pretrained_path, finetuned_path) for kind in PAIR_KINDS.
``write_demo(dir)``
    the demo set (dict name -> Path); idempotent.
``wide_state_dict(n_keys=20000, seed=0)``
    many small tensors with hierarchical names, for TUI/bench scale tests.

Helpers: ``layout_versions(layout)`` (versions a layout exists for), ``default_dtype(layout)``,
``write_safetensors(path, tensors)`` (the format written by hand, no safetensors package),
``symbol_rows(version, languages)`` (phoneme rows of e.g. "en"), ``cast(sd, dtype)``,
``HParams`` (pickled as upstream's ``utils.HParams`` by a private pickler: no ``utils`` module is
ever put into sys.modules, so reading such a file back needs a stub or a restricted unpickler).

Containers follow FORMATS.md: pretrained files are torch.save'd under their own name (inner zip
folder = file stem), my_save-style files (GPT_weights, G_/D_*.pth, v1/v2/v3 SoVITS exports) under
a seed-derived float timestamp folder, Lightning ckpts and headered exports from a BytesIO
("archive/"), with the 2-byte header written over "PK" for 03/04/05/06.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import types
import zlib
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from .errors import UsageError
from .load.manifest import (
    D_VERSIONS, G_VERSIONS, GPT_VERSIONS, LORA_VERSIONS, ManifestEntry, load_manifest, manifest_stem,
    model_entries,
)
from .meta import Layout
from .export.torch_writer import OpaquePickler

# (key, axis) pairs whose size detection relies on: never scaled
PHONEME_TABLES = {
    "model.ar_text_embedding.word_embeddings.weight": 0,
    "enc_p.text_embedding.weight": 0,
}
MIN_SCALED_DIM = 8
SCALE_FROM_DIM = 64

# upstream's headers (FORMATS.md §2.2)
HEADERS = {"v2Pro": b"05", "v2ProPlus": b"06"}
LORA_HEADERS = {"v3": b"03", "v4": b"04"}

SCALER_KEYS = ("MixedPrecision", "MixedPrecisionPlugin", "native_amp_scaling_state")

_DEFAULT = object()


# =============================================================================================
# shapes

def scaled_dim(d: int, scale: int) -> int:
    """One dimension shrunk by `scale`: small dims (kernels, heads, ranks < 64) stay as they are."""
    if scale <= 1 or d < SCALE_FROM_DIM:
        return d
    return max(MIN_SCALED_DIM, -(-d // scale))


def _scaled_shape(entry: ManifestEntry, scale: int) -> tuple[int, ...]:
    if scale <= 1:
        return entry.shape
    keep = set()
    if entry.key in PHONEME_TABLES:
        keep.add(PHONEME_TABLES[entry.key])
    if entry.is_lora_a:
        keep.add(0)
    if entry.is_lora_b:
        keep.add(len(entry.shape) - 1)
    return tuple(d if i in keep else scaled_dim(d, scale) for i, d in enumerate(entry.shape))


def _check_scale(scale: int) -> int:
    if not isinstance(scale, int) or scale < 1:
        raise UsageError(f"scale must be an integer >= 1, got {scale!r}")
    return scale


def planned_entries(model: str, version: str, *, scale: int = 1,
                    rank: int = 32) -> list[tuple[ManifestEntry, tuple[int, ...]]]:
    """Manifest entries of the model with the shapes the generator will use."""
    _check_scale(scale)
    return [(e, _scaled_shape(e, scale)) for e in model_entries(model, version, rank=rank)]


def planned_shapes(model: str, version: str, *, scale: int = 1, rank: int = 32) -> OrderedDict:
    """key -> shape the generator produces; pure Python (no torch)."""
    return OrderedDict((e.key, shape) for e, shape in planned_entries(model, version, scale=scale, rank=rank))


# =============================================================================================
# values

def _torch():
    import torch

    return torch


def _dtype(name):
    torch = _torch()
    if isinstance(name, torch.dtype):
        return name
    name = str(name).removeprefix("torch.")
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise UsageError(f"unknown dtype {name!r}")
    return dt


def _key_seed(seed: int, key: str, salt: str = "") -> int:
    return zlib.crc32(f"{salt}|{seed}|{key}".encode()) | ((seed & 0xFFFF) << 32)


def _canonical_key(key: str) -> str:
    """The plain (un-peft-wrapped, un-prefixed) name: seeds values so wrapped and plain agree."""
    return key.replace("base_model.model.", "").replace(".base_layer.", ".")


def _init_tensor(key: str, shape: tuple[int, ...], gen):
    """Values that look like a trained net's: small weights, positive weight_g, ~1 norm gains.

    In-place normal_/uniform_ on an empty tensor: one memory pass (53 M values in ~0.25 s).
    """
    torch = _torch()
    leaf = key.rsplit(".", 1)[-1]

    def normal(mean: float, std: float):
        return torch.empty(shape).normal_(mean, std, generator=gen)

    if leaf == "inited":
        return torch.ones(shape)
    if leaf == "inv_freq":
        n = shape[0] if shape else 1
        return 1.0 / (10000 ** (torch.arange(0, 2 * n, 2, dtype=torch.float32) / (2 * n))).reshape(shape)
    if leaf == "cluster_size":
        return torch.empty(shape).uniform_(0.5, 10.5, generator=gen)
    if "_codebook.embed" in key:
        return normal(0.0, 0.5)
    if leaf == "weight_g":
        return torch.empty(shape).uniform_(0.2, 0.6, generator=gen)
    if leaf == "alpha" and len(shape) <= 1:
        return torch.ones(shape)
    if ".lora_B." in key:
        return normal(0.0, 0.002)
    one_d = len(shape) == 1
    is_norm = any(t in key for t in ("norm", ".ln", "layer_norm", "grn.", "gamma", "prelu"))
    if one_d and is_norm and leaf in ("weight", "gamma", "g"):
        return normal(1.0, 0.02)
    if leaf.endswith("bias") or (one_d and is_norm and leaf in ("beta", "b")):
        return normal(0.0, 0.01)
    return normal(0.0, 0.02)


def state_dict(model: str, version: str, *, scale: int = 1, seed: int = 0, dtype="float32",
               rank: int = 32, materialize: bool = True) -> OrderedDict:
    """A synthetic state dict of `model` at `version`: manifest keys in order, seeded values."""
    torch = _torch()
    dt = _dtype(dtype)
    out: OrderedDict = OrderedDict()
    gen = torch.Generator()
    for entry, shape in planned_entries(model, version, scale=scale, rank=rank):
        if not materialize:
            out[entry.key] = torch.empty(shape, dtype=dt, device="meta")
            continue
        gen.manual_seed(_key_seed(seed, _canonical_key(entry.key)))
        t = _init_tensor(entry.key, shape, gen)
        out[entry.key] = t if dt == torch.float32 else t.to(dt)
    return out


def cast(sd, dtype) -> OrderedDict:
    """Floating tensors converted to `dtype` (other dtypes kept), like upstream's `.half()` loops."""
    dt = _dtype(dtype)
    return OrderedDict((k, v.to(dt) if v.is_floating_point() and v.dtype != dt else v) for k, v in sd.items())


# =============================================================================================
# fine-tuning

def _rms(t) -> float:
    v = float(t.float().pow(2).mean().sqrt()) if t.numel() else 0.0
    return v if v > 1e-6 else 0.02


def _strength_for(key: str, strength: float, module_strength: dict | None) -> float:
    if not module_strength:
        return strength
    best, best_len = strength, -1
    for prefix, s in module_strength.items():
        if key.startswith(prefix) and len(prefix) > best_len:
            best, best_len = s, len(prefix)
    return best


def _row_index(rows, n: int):
    torch = _torch()
    if isinstance(rows, slice):
        return torch.arange(n)[rows]
    idx = torch.as_tensor(list(rows), dtype=torch.long)
    return idx[(idx >= 0) & (idx < n)]


_FROZEN_LEAVES = ("inited", "inv_freq")


def fine_tune(sd, *, seed: int = 1, strength: float = 0.01, module_strength: dict | None = None,
              rows=None, row_strength: float | None = None, rename_prefix: str | None = None,
              change_shape: dict | None = None, nan_key: str | None = None) -> OrderedDict:
    """A fine-tuned partner of `sd` (new OrderedDict; `sd` is untouched).

    Each floating tensor moves by randn * s * rms(tensor), s = strength or the value of the
    longest prefix of `module_strength` matching the key (0 keeps it bit-identical). `rows`
    (slice or list) restricts the phoneme-embedding tables' change to those rows; with
    `row_strength` the rows move by that and the other rows by s. `change_shape` replaces a
    tensor by one of the new shape (the overlapping block is kept, like a vocab resize).
    `nan_key` poisons that tensor with NaNs. `rename_prefix` prepends e.g. "module.".
    """
    torch = _torch()
    gen = torch.Generator()
    out: OrderedDict = OrderedDict()
    for key, value in sd.items():
        new = value
        if value.is_floating_point() and key.rsplit(".", 1)[-1] not in _FROZEN_LEAVES:
            s = _strength_for(key, strength, module_strength)
            is_table = key.removeprefix("module.") in PHONEME_TABLES
            if is_table and rows is not None and value.dim() >= 1:
                idx = _row_index(rows, value.shape[0])
                gen.manual_seed(_key_seed(seed, key, "ft"))
                base = value.float()
                noise = torch.randn(base.shape, generator=gen) * _rms(base)
                scale_rows = torch.zeros(base.shape[0])
                if row_strength is not None:
                    scale_rows += s
                    scale_rows[idx] = row_strength
                else:
                    scale_rows[idx] = s
                moved = base + noise * scale_rows.reshape((-1,) + (1,) * (base.dim() - 1))
                new = moved.to(value.dtype)
            elif s:
                gen.manual_seed(_key_seed(seed, key, "ft"))
                base = value.float()
                noise = torch.randn(base.shape, generator=gen) * (s * _rms(base))
                new = (base + noise).to(value.dtype)
        if change_shape and key in change_shape:
            new = _reshaped(new, tuple(change_shape[key]), seed, key)
        if nan_key is not None and key == nan_key:
            if not new.is_floating_point():
                raise UsageError(f"nan_key {key!r} is not a floating tensor")
            new = new.clone()
            flat = new.view(-1)
            flat[:: max(1, flat.numel() // 7)] = float("nan")
        out[(rename_prefix or "") + key] = new
    for name, what in (("change_shape", change_shape), ("nan_key", [nan_key] if nan_key else None)):
        missing = [k for k in (what or []) if k not in sd]
        if missing:
            raise UsageError(f"fine_tune {name}: no such key(s): {', '.join(missing)}")
    return out


def _reshaped(value, shape, seed, key):
    torch = _torch()
    gen = torch.Generator()
    gen.manual_seed(_key_seed(seed, key, "reshape"))
    new = (torch.randn(shape, generator=gen) * _rms(value.float())).to(value.dtype)
    if len(shape) == value.dim():
        block = tuple(slice(0, min(a, b)) for a, b in zip(shape, value.shape))
        new[block] = value[block]
    return new


# =============================================================================================
# configs (what upstream stores next to the weights)

def gpt_config(version: str, *, scale: int = 1) -> dict:
    """The training yaml (s1longer.yaml / s1longer-v2.yaml) as the plain dict upstream stores."""
    sd_ = lambda d: scaled_dim(d, scale)  # noqa: E731
    vocab = sd_(1025)
    return {
        "train": {"seed": 1234, "epochs": 15, "batch_size": 8, "save_every_n_epoch": 1,
                  "precision": "16-mixed", "gradient_clip": 1.0},
        "optimizer": {"lr": 0.01, "lr_init": 0.00001, "lr_end": 0.0001, "warmup_steps": 2000,
                      "decay_steps": 40000},
        "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": 1024},
        "model": {"vocab_size": vocab, "phoneme_vocab_size": 512 if version == "v1" else 732,
                  "embedding_dim": sd_(512), "hidden_dim": sd_(512), "head": 16,
                  "linear_units": sd_(2048), "n_layer": 24, "dropout": 0, "EOS": vocab - 1,
                  "random_bert": 0},
        "inference": {"top_k": 15},
    }


def gpt_export_config(version: str, *, scale: int = 1, exp: str = "demo") -> dict:
    cfg = gpt_config(version, scale=scale)
    cfg["train"].update({"if_save_latest": True, "if_save_every_weights": True, "if_dpo": False,
                         "half_weights_save_dir": "GPT_weights" if version == "v1" else f"GPT_weights_{version}",
                         "exp_name": exp})
    cfg["train_semantic_path"] = f"logs/{exp}/6-name2semantic.tsv"
    cfg["train_phoneme_path"] = f"logs/{exp}/2-name2text.txt"
    cfg["output_dir"] = f"logs/{exp}/logs_s1_{version}"
    cfg["pretrained_s1"] = "GPT_SoVITS/pretrained_models/s1v3.ckpt"
    return cfg


def sovits_config(version: str, *, scale: int = 1, exp: str | None = None, lora_rank: int | None = None) -> dict:
    """s2.json-like nested dict; with `exp` it carries the webui extras a training run adds."""
    sd_ = lambda d: scaled_dim(d, scale)  # noqa: E731
    pro_plus = version == "v2ProPlus"
    ups_ch = sd_(768 if pro_plus else 512)
    model = {
        "inter_channels": sd_(192), "hidden_channels": sd_(192), "filter_channels": sd_(768),
        "n_heads": 2, "n_layers": 6, "kernel_size": 3, "p_dropout": 0.1, "resblock": "1",
        "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
        "upsample_rates": [10, 8, 2, 2, 2], "upsample_initial_channel": ups_ch,
        "upsample_kernel_sizes": [20 if pro_plus else 16, 16, 8, 2, 2], "n_layers_q": 3,
        "use_spectral_norm": False, "gin_channels": sd_(1024 if "Pro" in version else 512),
        "semantic_frame_rate": "25hz", "freeze_quantizer": True,
    }
    cfg = {
        "train": {"log_interval": 100, "eval_interval": 500, "seed": 1234, "epochs": 100,
                  "learning_rate": 0.0001, "betas": [0.8, 0.99], "eps": 1e-09, "batch_size": 32,
                  "fp16_run": True, "lr_decay": 0.999875, "segment_size": 20480, "init_lr_ratio": 1,
                  "warmup_epochs": 0, "c_mel": 45, "c_kl": 1.0, "text_low_lr_rate": 0.4},
        "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048,
                 "hop_length": 640, "win_length": 2048, "n_mel_channels": 128, "mel_fmin": 0.0,
                 "mel_fmax": None, "add_blank": True, "n_speakers": 300, "cleaned_text": True},
        "model": model,
        "s2_ckpt_dir": "logs/s2/big2k1",
        "content_module": "cnhubert",
    }
    if exp is not None:
        wdir = "SoVITS_weights" if version == "v1" else f"SoVITS_weights_{version}"
        cfg["train"].update({
            "pretrained_s2G": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2G2333k.pth",
            "pretrained_s2D": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2D2333k.pth",
            "if_save_latest": True, "if_save_every_weights": True, "save_every_epoch": 4,
            "gpu_numbers": "0", "grad_ckpt": False, "lora_rank": str(lora_rank or 32),
        })
        cfg["data"]["exp_dir"] = f"logs/{exp}"
        cfg["model"]["version"] = version
        cfg["s2_ckpt_dir"] = f"logs/{exp}"
        cfg["save_weight_dir"] = wdir
        cfg["name"] = exp
        cfg["version"] = version
    cfg["pretrain"] = None
    cfg["resume_step"] = None
    return cfg


def v1_pretrained_config(scale: int = 1) -> dict:
    """The HParams config of s2G488k.pth: keys train, data, model, s2_ckpt_dir, content_module,
    save_weight_dir, name, pretrain, resume_step."""
    cfg = sovits_config("v1", scale=scale)
    out = {k: cfg[k] for k in ("train", "data", "model", "s2_ckpt_dir", "content_module")}
    out.update({"save_weight_dir": "logs/s2/big2k1/weights", "name": "big2k1", "pretrain": None,
                "resume_step": None})
    return out


# =============================================================================================
# utils.HParams: pickled under upstream's module name without ever importing a `utils` module

class HParams:
    """Attribute bag standing in for GPT-SoVITS's `utils.HParams` (nested sections are HParams)."""

    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            self.__dict__[k] = HParams(**v) if isinstance(v, dict) else v

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()

    def __getitem__(self, key):
        return self.__dict__[key]

    def __contains__(self, key):
        return key in self.__dict__

    def __repr__(self):
        return repr(self.__dict__)


HPARAMS_GLOBAL = ("utils", "HParams")


class _UtilsPickler(OpaquePickler):
    """torch_writer's pure-Python pickler, also writing our HParams class as the global `utils.HParams`.

    The C pickler insists on importing the module to verify the name; writing the GLOBAL opcode
    ourselves (as torch_writer does for placeholders) avoids putting a fake `utils` into
    sys.modules even for a moment.
    """

    def save_global(self, obj, name=None):
        if obj is HParams:
            self._write_global(*HPARAMS_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


_UTILS_PICKLE = types.SimpleNamespace(Pickler=_UtilsPickler, __name__="gsvinspect_utils_pickle")


# =============================================================================================
# low-level writers

def _save_bytes(obj, *, hparams: bool) -> bytes:
    torch = _torch()
    buf = io.BytesIO()
    if hparams:
        torch.save(obj, buf, pickle_module=_UTILS_PICKLE)
    else:
        torch.save(obj, buf)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_named(obj, path: Path, archive: str, *, hparams: bool) -> None:
    """torch.save into a file whose stem is `archive` (the zip's inner folder), then move it.

    The temporary file lives in a private folder next to `path`, so nothing is overwritten
    half-way and the final rename stays on one filesystem.
    """
    torch = _torch()
    tmpdir = path.parent / f".gsvsynth-{os.getpid()}-{id(obj):x}"
    tmpdir.mkdir(parents=True, exist_ok=False)
    tmp = tmpdir / f"{archive}.pth"
    try:
        if hparams:
            torch.save(obj, str(tmp), pickle_module=_UTILS_PICKLE)
        else:
            torch.save(obj, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
        tmpdir.rmdir()


def _timestamp_archive(seed: int) -> str:
    """my_save names its temp file `<time.time()>.pth`; a fixed, seed-derived stand-in."""
    return f"{1795562077 + seed * 7919}.{2032812 + seed:07d}"


def _my_save(obj, path: Path, seed: int, *, hparams: bool = False) -> None:
    _save_named(obj, path, _timestamp_archive(seed), hparams=hparams)


def _my_save2(obj, path: Path, header: bytes, *, hparams: bool) -> None:
    """Serialise to memory (archive/), overwrite the 'PK' signature with 2 ASCII digits."""
    data = bytearray(_save_bytes(obj, hparams=hparams))
    if len(header) != 2:
        raise UsageError(f"header must be 2 bytes, got {header!r}")
    data[0:2] = header
    _atomic_write(path, bytes(data))


def _plain_save(obj, path: Path, *, hparams: bool = False) -> None:
    """torch.save(obj, path): the inner folder is the file's stem."""
    _save_named(obj, path, path.stem or path.name, hparams=hparams)


SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


def write_safetensors(path, tensors, metadata: dict | None = None) -> Path:
    """The safetensors format by hand: u64 LE header length, JSON header, raw little-endian data."""
    torch = _torch()
    path = Path(path)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    chunks, offset = [], 0
    for key, t in tensors.items():
        name = str(t.dtype).removeprefix("torch.")
        if name not in SAFETENSORS_DTYPES:
            raise UsageError(f"safetensors cannot hold dtype {name} ({key})")
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[key] = {"dtype": SAFETENSORS_DTYPES[name], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    _atomic_write(path, struct.pack("<Q", len(blob)) + blob + b"".join(chunks))
    return path


# =============================================================================================
# optimizer / trainer state

def _adamw_group_defaults(lr: float) -> dict:
    torch = _torch()
    p = torch.zeros(1, requires_grad=True)
    group = torch.optim.AdamW([p], lr=lr, betas=(0.8, 0.99), eps=1e-9).state_dict()["param_groups"][0]
    group.pop("params")
    return group


def _want_moments(optimizer, weights) -> bool:
    if optimizer == "full":
        return True
    if optimizer in ("light", False):
        return False
    return sum(v.numel() for v in weights.values()) <= 2_000_000


def _adamw_state(weights, groups: list[list[str]], *, lr: float, lr_now: float, steps: int,
                 optimizer, skip=(), seed: int = 0) -> dict:
    """torch AdamW state_dict over `groups` of keys (param indices numbered group by group)."""
    torch = _torch()
    defaults = _adamw_group_defaults(lr)
    moments = _want_moments(optimizer, weights)
    state, param_groups, idx = {}, [], 0
    gen = torch.Generator()
    low = [1.0, 0.4, 0.4, 0.4]
    for gi, keys in enumerate(groups):
        ids = []
        for key in keys:
            if optimizer is not False and not any(key.startswith(s) for s in skip):
                entry = {"step": torch.tensor(float(steps))}
                if moments:
                    v = weights[key]
                    gen.manual_seed(_key_seed(seed, key, "adam"))
                    entry["exp_avg"] = torch.randn(v.shape, generator=gen) * 1e-4
                    entry["exp_avg_sq"] = torch.rand(v.shape, generator=gen) * 1e-8
                state[idx] = entry
            ids.append(idx)
            idx += 1
        factor = low[gi] if len(groups) == 4 else 1.0
        group = dict(defaults)
        group["lr"] = lr_now * factor
        group["initial_lr"] = lr * factor
        group["params"] = ids
        param_groups.append(group)
    return {"state": state, "param_groups": param_groups}


def _param_keys(model: str, version: str, weights, *, lora_rank: int = 32) -> list[str]:
    """Keys of `weights` that are parameters (not buffers) according to the manifest."""
    try:
        entries = {e.key: e for e in model_entries(model, version, rank=lora_rank)}
    except UsageError:
        entries = {}
    out = []
    for k in weights:
        e = entries.get(k.removeprefix("module."))
        if e is not None and e.buffer:
            continue
        out.append(k)
    return out


def _g_groups(keys: list[str]) -> list[list[str]]:
    """s2_train's 4 AdamW groups: other params, text_embedding, encoder_text, mrte."""
    special = ("enc_p.text_embedding", "enc_p.encoder_text", "enc_p.mrte")
    groups: list[list[str]] = [[], [], [], []]
    for k in keys:
        bare = k.removeprefix("module.")
        for i, prefix in enumerate(special, start=1):
            if bare.startswith(prefix):
                groups[i].append(k)
                break
        else:
            groups[0].append(k)
    return groups


def _scaled_adam_state(weights, *, steps: int, optimizer, lr: float = 0.002) -> dict:
    """ScaledAdam (icefall) state: params bucketed by (dtype, shape), state on each bucket's first index."""
    torch = _torch()
    keys = list(weights)
    buckets: OrderedDict = OrderedDict()
    for i, k in enumerate(keys):
        v = weights[k]
        buckets.setdefault((str(v.dtype), tuple(v.shape)), []).append(i)
    moments = _want_moments(optimizer, weights)
    state = {}
    if optimizer is not False:
        for bi, ((_, shape), ids) in enumerate(buckets.items()):
            n = len(ids)
            entry: dict = {"step": steps}
            numel = math.prod(shape) if shape else 1
            if moments:
                entry["delta"] = torch.zeros((n,) + shape)
            if numel > 1:
                rms_shape = (n,) + (1,) * len(shape)
                stacked = torch.stack([weights[keys[i]].float() for i in ids])
                entry["param_rms"] = stacked.pow(2).mean(dim=tuple(range(1, stacked.dim())), keepdim=True).sqrt()
                entry["scale_exp_avg_sq"] = torch.full(rms_shape, 1e-6)
                entry["scale_grads"] = torch.zeros((4,) + rms_shape)
            if moments:
                entry["exp_avg_sq"] = torch.full((n,) + shape, 1e-8)
            if bi == 0:
                entry["model_norms"] = torch.rand(100) + 1.0
                entry["model_norm_threshold"] = 2.0
            state[ids[0]] = entry
    group = {"lr": lr, "betas": (0.9, 0.95), "scalar_lr_scale": 0.1, "eps": 1e-08,
             "param_min_rms": 1e-05, "param_max_rms": 3.0, "scalar_max": 10.0,
             "size_update_period": 4, "clipping_update_period": 100, "clipping_scale": 2.0,
             "initial_lr": lr, "params": list(range(len(keys)))}
    return {"state": state, "param_groups": [group]}


def _progress(n: int) -> dict:
    return {"ready": n, "started": n, "completed": n}


def _lightning_loops(epoch: int, step: int, batches: int) -> dict:
    epoch_prog = {"total": {**_progress(epoch + 1), "processed": epoch + 1},
                  "current": {**_progress(epoch + 1), "processed": epoch + 1}}
    batch_prog = {"total": {**_progress(batches), "processed": batches},
                  "current": {**_progress(batches // (epoch + 1)), "processed": batches // (epoch + 1)},
                  "is_last_batch": True}
    empty_eval = {"state_dict": {}, "batch_progress": {
        "total": {**_progress(0), "processed": 0}, "current": {**_progress(0), "processed": 0},
        "is_last_batch": False}}
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": step},
            "epoch_loop.batch_progress": batch_prog,
            "epoch_loop.scheduler_progress": {"total": _progress(step), "current": _progress(step)},
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
                "step": {"total": _progress(0), "current": _progress(0)},
                "zero_grad": {"total": _progress(0), "current": _progress(0)}}},
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": {"total": _progress(step),
                                                                     "current": _progress(step)},
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": empty_eval["batch_progress"],
            "epoch_progress": epoch_prog,
        },
        "validate_loop": empty_eval,
        "test_loop": empty_eval,
        "predict_loop": {"state_dict": {}, "batch_progress": {"total": _progress(0), "current": _progress(0)}},
    }


def callback_key(every_n_epochs: int = 1) -> str:
    """The `callbacks` key Lightning writes for GPT-SoVITS's my_model_ckpt."""
    return ("my_model_ckpt{'monitor': 'top_3_acc', 'mode': 'max', 'every_n_train_steps': 0, "
            f"'every_n_epochs': {every_n_epochs}, 'train_time_interval': None}}")


def grad_scaler_state(scale: float = 32768.0, growth_tracker: int = 117) -> dict:
    """torch.amp.GradScaler.state_dict() as Lightning's MixedPrecision plugin saves it."""
    return {"scale": scale, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
            "_growth_tracker": growth_tracker}


# =============================================================================================
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
        obj = OrderedDict(weight=w, config=gpt_export_config(version, scale=scale),
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
        obj = {"model": w, "iteration": iteration,
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
        "state_dict": w,
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


# =============================================================================================
# pairs and the demo

PAIR_KINDS = ("gpt", "gpt-export", "sovits-G", "sovits-G-export", "sovits-D", "sovits-G-ddp", "sovits-G-lora")

_PRETRAINED_NAMES = {
    "gpt": {"v1": "s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt",
            "v2": "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"},
    "sovits-G": {"v1": "s2G488k.pth", "v2": "gsv-v2final-pretrained/s2G2333k.pth",
                 "v3": "s2Gv3.pth", "v4": "gsv-v4-pretrained/s2Gv4.pth",
                 "v2Pro": "v2Pro/s2Gv2Pro.pth", "v2ProPlus": "v2Pro/s2Gv2ProPlus.pth"},
    "sovits-D": {"v1": "s2D488k.pth", "v2": "gsv-v2final-pretrained/s2D2333k.pth",
                 "v2Pro": "v2Pro/s2Dv2Pro.pth", "v2ProPlus": "v2Pro/s2Dv2ProPlus.pth"},
}


def pretrained_relpath(model: str, version: str) -> str:
    """Where upstream keeps the official pretrained file of `model` (under pretrained_models/)."""
    names = _PRETRAINED_NAMES[model]
    return "pretrained_models/" + names.get(version, "s1v3.ckpt" if model == "gpt" else f"s2X{version}.pth")


def _loaded_from_fp16(sd) -> OrderedDict:
    """What training starts from: the fp16 pretrained weights, upcast to fp32."""
    return cast(cast(sd, "float16"), "float32")


def _weights_dir(version: str, stem: str) -> str:
    return stem if version == "v1" else f"{stem}_{version}"


def write_pair(dir, kind: str, version: str, *, scale: int = 8, seed: int = 0,
               strength: float = 0.01, **options) -> tuple[Path, Path]:
    """(pretrained_path, finetuned_path) laid out like a GPT-SoVITS install under `dir`.

    kinds: gpt (pretrained vs Lightning ckpt with scaler), gpt-export (pretrained vs GPT_weights),
    sovits-G (pretrained vs G_*.pth), sovits-G-export (pretrained vs SoVITS_weights, enc_q gone),
    sovits-D, sovits-G-ddp (G_*.pth with keys prefixed "module."), sovits-G-lora (v3/v4 pretrained
    vs LoRA G_*.pth). `options` go to write_checkpoint of the fine-tuned file.
    """
    if kind not in PAIR_KINDS:
        raise UsageError(f"unknown pair kind {kind!r}; known: {', '.join(PAIR_KINDS)}")
    root = Path(dir)
    exp = f"synth_{kind.replace('-', '_')}"
    if kind.startswith("gpt"):
        base = state_dict("gpt", version, scale=scale, seed=seed)
        pre = write_checkpoint(root / pretrained_relpath("gpt", version), Layout.GPT_PRETRAINED, version,
                               weights=base, scale=scale, seed=seed)
        ft = fine_tune(_loaded_from_fp16(base), seed=seed + 1, strength=strength)
        if kind == "gpt":
            path = root / "logs" / exp / f"logs_s1_{version}" / "ckpt" / "epoch=14-step=1500.ckpt"
            out = write_checkpoint(path, Layout.GPT_LIGHTNING, version, weights=ft, scale=scale,
                                   seed=seed + 1, **options)
        else:
            path = root / _weights_dir(version, "GPT_weights") / f"{exp}-e15.ckpt"
            out = write_checkpoint(path, Layout.GPT_WEIGHTS, version, weights=ft, scale=scale,
                                   seed=seed + 1, **options)
        return pre, out
    if kind == "sovits-D":
        base = state_dict("sovits-D", version, scale=scale, seed=seed)
        pre = write_checkpoint(root / pretrained_relpath("sovits-D", version), Layout.SOVITS_D_PRETRAINED,
                               version, weights=base, scale=scale, seed=seed)
        ft = fine_tune(_loaded_from_fp16(base), seed=seed + 1, strength=strength)
        path = root / "logs" / exp / f"logs_s2_{version}" / "D_1000.pth"
        return pre, write_checkpoint(path, Layout.SOVITS_D_TRAIN, version, weights=ft, scale=scale,
                                     seed=seed + 1, **options)
    base = state_dict("sovits-G", version, scale=scale, seed=seed)
    pre = write_checkpoint(root / pretrained_relpath("sovits-G", version), Layout.SOVITS_G_PRETRAINED,
                           version, weights=base, scale=scale, seed=seed)
    if kind == "sovits-G-lora":
        rank = int(options.pop("lora_rank", 32))
        lora = state_dict("sovits-G-lora", version, scale=scale, seed=seed, rank=rank)
        start = _loaded_from_fp16(base)
        for k in lora:
            plain = _canonical_key(k)
            if plain in start:
                lora[k] = start[plain]
        trainable = {k: 0.02 for k in ("ref_enc", "bridge", "wns1", "linear_mel")}
        ft = fine_tune(lora, seed=seed + 1, strength=0.0, module_strength=trainable)
        path = root / "logs" / exp / f"logs_s2_{version}_lora_{rank}" / "G_1000.pth"
        return pre, write_checkpoint(path, Layout.SOVITS_G_LORA_TRAIN, version, weights=ft, scale=scale,
                                     seed=seed + 1, lora_rank=rank, **options)
    ft = fine_tune(_loaded_from_fp16(base), seed=seed + 1, strength=strength,
                   rename_prefix="module." if kind == "sovits-G-ddp" else None)
    if kind == "sovits-G-export":
        path = root / _weights_dir(version, "SoVITS_weights") / f"{exp}_e8_s1000.pth"
        return pre, write_checkpoint(path, Layout.SOVITS_WEIGHTS, version, weights=ft, scale=scale,
                                     seed=seed + 1, **options)
    path = root / "logs" / exp / f"logs_s2_{version}" / "G_1000.pth"
    return pre, write_checkpoint(path, Layout.SOVITS_G_TRAIN, version, weights=ft, scale=scale,
                                 seed=seed + 1, **options)


def symbol_rows(version: str, languages) -> list[int]:
    """Phoneme-embedding rows whose symbol belongs to one of `languages` (symbols.json tags)."""
    from .load.symbols import symbols

    langs = {languages} if isinstance(languages, str) else set(languages)
    return [s.index for s in symbols("v1" if version == "v1" else "v2") if s.language in langs]


DEMO_SCALE = 4
DEMO_FILES = {
    "sovits_pretrained": "pretrained_models/gsv-v2final-pretrained/s2G2333k.pth",
    "sovits_finetune": "logs/demo/logs_s2_v2/G_2000.pth",
    "sovits_export": "SoVITS_weights_v2/demo_e8_s2000.pth",
    "gpt_pretrained": "pretrained_models/gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
    "gpt_finetune": "logs/demo/logs_s1_v2/ckpt/epoch=14-step=1500.ckpt",
}
DEMO_MARKER = "gsvinspect-demo.json"


def write_demo(dir) -> dict[str, Path]:
    """The demo set: v2 SoVITS pretrained G, a DDP-prefixed G_*.pth fine-tune (needs a
    "strip module." rule to align), its SoVITS_weights export (no enc_q), and a v2 GPT pretrained
    + Lightning ckpt with MixedPrecision scaler state. English phoneme rows move strongly, the
    other rows barely; decoder/flow layers more than the rest. Re-uses a complete earlier set.
    """
    root = Path(dir)
    paths = {name: root / rel for name, rel in DEMO_FILES.items()}
    marker = root / DEMO_MARKER
    if marker.is_file():
        try:
            sizes = json.loads(marker.read_text())
            if all(paths[n].is_file() and paths[n].stat().st_size == sizes.get(n) for n in paths):
                return paths
        except (ValueError, OSError):
            pass
    version, scale = "v2", DEMO_SCALE
    en_rows = symbol_rows(version, "en")

    g_base = state_dict("sovits-G", version, scale=scale, seed=0)
    write_checkpoint(paths["sovits_pretrained"], Layout.SOVITS_G_PRETRAINED, version, weights=g_base, scale=scale)
    g_ft = fine_tune(_loaded_from_fp16(g_base), seed=1, strength=0.005,
                     module_strength={"dec.": 0.03, "flow.": 0.02, "enc_q.": 0.02, "ref_enc.": 0.03,
                                      "enc_p.text_embedding": 0.002, "quantizer.": 0.0, "enc_p.ssl_proj": 0.0},
                     rows=en_rows, row_strength=0.2)
    ddp = OrderedDict(("module." + k, v) for k, v in g_ft.items())
    write_checkpoint(paths["sovits_finetune"], Layout.SOVITS_G_TRAIN, version, weights=ddp, scale=scale,
                     seed=1, iteration=8, step=2000)
    write_checkpoint(paths["sovits_export"], Layout.SOVITS_WEIGHTS, version, weights=g_ft, scale=scale,
                     seed=2, iteration=8, step=2000)

    gpt_base = state_dict("gpt", version, scale=scale, seed=0)
    write_checkpoint(paths["gpt_pretrained"], Layout.GPT_PRETRAINED, version, weights=gpt_base, scale=scale)
    gpt_ft = fine_tune(_loaded_from_fp16(gpt_base), seed=1, strength=0.004,
                       module_strength={"model.h.": 0.02, "model.ar_text_embedding": 0.001},
                       rows=en_rows, row_strength=0.15)
    write_checkpoint(paths["gpt_finetune"], Layout.GPT_LIGHTNING, version, weights=gpt_ft, scale=scale,
                     epoch=14, step=1500, amp_scaler=True)
    _atomic_write(marker, json.dumps({n: p.stat().st_size for n, p in paths.items()}, indent=1).encode())
    return paths


# =============================================================================================
# scale tests

def wide_state_dict(n_keys: int = 20000, seed: int = 0) -> OrderedDict:
    """`n_keys` small float32 tensors named like a deep net (stack.N.block.M.sub.leaf)."""
    torch = _torch()
    gen = torch.Generator()
    gen.manual_seed(seed)
    subs = [("attn.q_proj", (16, 16)), ("attn.k_proj", (16, 16)), ("attn.v_proj", (16, 16)),
            ("attn.out_proj", (16, 16)), ("mlp.fc1", (32, 16)), ("mlp.fc2", (16, 32)),
            ("norm1", (16,)), ("norm2", (16,))]
    stacks = ("encoder", "decoder", "bridge", "postnet")
    out: OrderedDict = OrderedDict()
    i = 0
    while len(out) < n_keys:
        stack = stacks[(i // 400) % len(stacks)]
        group, layer = i // 1600, (i // 16) % 25
        sub, shape = subs[(i // 2) % len(subs)]
        leaf = "weight" if i % 2 == 0 else "bias"
        if leaf == "bias":
            shape = shape[:1]
        key = f"{stack}.groups.{group}.layers.{layer}.{sub}.{leaf}"
        if key not in out:
            out[key] = torch.randn(shape, generator=gen) * 0.02
        i += 1
    return out
