"""Synthetic weights: manifest shapes (scaled), seeded values, fine-tuned partners, wide test dicts."""

from __future__ import annotations

import zlib
from collections import OrderedDict

from ..errors import UsageError
from ..load.manifest import ManifestEntry, model_entries

# (key, axis) pairs whose size detection relies on: never scaled
PHONEME_TABLES = {
    "model.ar_text_embedding.word_embeddings.weight": 0,
    "enc_p.text_embedding.weight": 0,
}
MIN_SCALED_DIM = 8
SCALE_FROM_DIM = 64

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
