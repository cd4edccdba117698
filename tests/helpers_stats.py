"""Shared helpers of the stats tests (engine, roll-ups, spectrum)."""

from __future__ import annotations

import os

import numpy as np

from gsvinspect.stats import cpu as stats_cpu
from gsvinspect.meta import TensorInfo



def _devices() -> list[str]:
    """The engine's devices under test; "cuda" joins on a machine with a GPU (GSV_TEST_CUDA=0: not)."""
    devices = ["cpu", "cpu-forked", "torch-cpu"]
    if os.environ.get("GSV_TEST_CUDA", "") != "0":
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    return devices


# "cpu-forked" is the CPU engine with its worker processes forced on, however small the input
DEVICES = _devices()


def engine_device(device: str, monkeypatch) -> str:
    """The device to pass to compute_stats for a DEVICES entry (patching the CPU path, where the names are used, for cpu-forked)."""
    if device != "cpu-forked":
        return device
    run_jobs = stats_cpu.run_jobs

    def forced(n_jobs, work, done, *, processes, width, cancel=None):
        assert processes == 3
        return run_jobs(n_jobs, work, done, processes=processes, width=width, cancel=cancel)

    monkeypatch.setattr(stats_cpu, "_FORK_MIN_BYTES", 0)
    monkeypatch.setattr(stats_cpu, "_cpu_workers", lambda: 3)
    monkeypatch.setattr(stats_cpu, "run_jobs", forced)
    return "cpu"


class FakeCk:
    """The three Checkpoint members the stats code uses, over in-memory numpy arrays."""

    def __init__(self, arrays: dict[str, tuple[np.ndarray, str]]):
        self._a, self.weights = {}, {}
        for k, (arr, dt) in arrays.items():
            arr = np.asarray(arr)
            self._a[k] = arr
            self.weights[k] = TensorInfo(k, tuple(arr.shape), dt)

    def array(self, key):
        a = self._a[key].view()
        a.flags.writeable = False
        return a

    def tensor(self, key):
        import torch

        t = torch.from_numpy(self._a[key].copy())
        return t.view(torch.bfloat16) if self.weights[key].dtype == "bfloat16" else t


def write_spectrum_pair(root):
    """A small pre/ft pair written by torch.save, for the change-spectrum tests (CLI and app).

    ``enc.low.weight`` gets a rank-2 change, ``enc.full.weight`` and the conv ``enc.conv.weight``
    a full-rank one; around them: a changed 1-D bias, a key only in each file, one of another shape,
    ``norm.*`` (1-D only), ``bad.nan.weight`` (NaN in ft) and 18 ``blocks.*`` weights scaled by
    0.1 % to 1.8 % (blocks.17 most). Returns (pre_path, ft_path).
    """
    import torch

    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    pre = {"enc.low.weight": randn(64, 48), "enc.full.weight": randn(64, 48), "enc.full.bias": randn(64),
           "enc.conv.weight": randn(32, 16, 3), "enc.gone.weight": randn(8, 8), "enc.shape.weight": randn(8, 8),
           "norm.weight": randn(16), "norm.bias": randn(16), "bad.nan.weight": randn(4, 4)}
    pre.update({f"blocks.{i}.weight": randn(8, 8) for i in range(18)})
    ft = {k: v.clone() for k, v in pre.items() if k != "enc.gone.weight"}
    ft["enc.low.weight"] += 0.1 * randn(64, 2) @ randn(2, 48)
    ft["enc.full.weight"] += 0.1 * randn(64, 48)
    ft["enc.full.bias"] += 0.1
    ft["enc.conv.weight"] += 0.05 * randn(32, 16, 3)
    ft["enc.shape.weight"] = randn(8, 4)
    ft["enc.new.weight"] = randn(4, 4)
    ft["bad.nan.weight"][0, 0] = float("nan")
    for i in range(18):
        ft[f"blocks.{i}.weight"] *= 1 + 0.001 * (i + 1)
    root.mkdir(parents=True, exist_ok=True)
    paths = root / "pre.pth", root / "ft.pth"
    torch.save(pre, paths[0])
    torch.save(ft, paths[1])
    return paths


def zero_init_sovits_pair(root, *, scale: int = 8):
    """A v2 SoVITS pair as upstream writes them (fp16 pretrained G, fp32 G_*.pth training ckpt)
    where the tensors upstream initialises to zero are zero on the pretrained side: every
    ``norm_layers*.beta`` and the flow's ``flow.flows.*.post`` convs. Fine-tuning moves each
    tensor by ~1 % of its rms, so those zero tensors move by ~2e-4 absolute (infinite relative
    change), ``dec.ups.*.bias`` (tiny) by 30 %, the quantizer not at all (frozen, as the demo
    has it). Returns (pre_path, ft_path, zero_keys).
    """
    from gsvinspect.meta import Layout
    from gsvinspect.synth import cast, fine_tune, state_dict, write_checkpoint

    base = state_dict("sovits-G", "v2", scale=scale, seed=0)
    zero = [k for k in base if (".norm_layers" in k and k.endswith(".beta")) or
            (k.startswith("flow.flows.") and ".post." in k)]
    for k in zero:
        base[k] = base[k] * 0
    start = cast(cast(base, "float16"), "float32")
    tiny = {k: 0.3 for k in base if k.startswith("dec.ups.") and k.endswith(".bias")}
    ft = fine_tune(start, seed=1, strength=0.01, module_strength={**tiny, "quantizer.": 0.0})   # frozen, as in s2 training
    pre_p = write_checkpoint(root / "s2G2333k.pth", Layout.SOVITS_G_PRETRAINED, "v2", weights=base, scale=scale)
    ft_p = write_checkpoint(root / "G_2000.pth", Layout.SOVITS_G_TRAIN, "v2", weights=ft, scale=scale,
                            optimizer=False)
    return pre_p, ft_p, zero
