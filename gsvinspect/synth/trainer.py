"""Optimizer and trainer state as upstream training writes it: AdamW states, Lightning loops,
the GradScaler state."""

from __future__ import annotations

import math
from collections import OrderedDict

from ..errors import UsageError
from ..load.manifest import model_entries
from .weights import _key_seed, _torch

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
