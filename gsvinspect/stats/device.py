"""Which device runs the stats: the cost model behind ``device="auto"`` and CUDA availability."""

from __future__ import annotations

import os
import sys

from ..errors import UsageError

# auto-device model (see choose_device): CPU measured on a 2-core EPYC VM, rounded down; GPU estimated
_CPU_BYTES_PER_S_PER_CORE = 3.0e9
_GPU_BYTES_PER_S = 6.0e9             # pinned-buffer fill + PCIe, not the GPU, is the limit
_TORCH_IMPORT_S = 1.2
_CUDA_INIT_S = 1.3


def _cpu_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))



def _cuda_driver_present() -> bool:
    """Cheap hint (no torch import) that an NVIDIA driver is loaded."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def choose_device(device: str, total_bytes: int) -> str:
    """Resolve ``device`` to ``"cpu"``, ``"cuda"`` or ``"torch-cpu"``.

    The ``"auto"`` rule: the CPU path streams ~3 GB/s per core (up to 8 cores; measured 3.5-4.8 on
    a 2-core EPYC VM); the CUDA path streams ~6 GB/s (limited by filling pinned buffers and PCIe,
    an estimate: no GPU was lent to measure it) after a start-up of ~1.2 s to import torch (0 if
    already imported) and ~1.3 s to initialise CUDA (0 if already initialised). CUDA is chosen
    when a driver is present, torch reports CUDA available, and its estimated time including
    start-up is below 80 % of the CPU estimate. On one core that needs ~25 GB of tensors; with two
    or more the CPU path always wins: reading the bytes, not the arithmetic, is the limit, and the
    GPU is fed through the same reads plus PCIe.
    """
    if device in ("cpu", "torch-cpu"):
        return device
    if device == "cuda":
        ok, why = _cuda_available()
        if not ok:
            raise UsageError(f"device 'cuda' requested but CUDA is not available ({why}); use --device cpu")
        return "cuda"
    if device != "auto":
        raise UsageError(f"unknown device {device!r} (use auto, cpu or cuda)")
    torch = sys.modules.get("torch")
    if torch is None and not _cuda_driver_present():
        return "cpu"
    startup = 0.0
    if torch is None:
        startup += _TORCH_IMPORT_S + _CUDA_INIT_S
    elif not (hasattr(torch, "cuda") and torch.cuda.is_initialized()):
        startup += _CUDA_INIT_S
    cpu_s = total_bytes / (_CPU_BYTES_PER_S_PER_CORE * _cpu_workers())
    gpu_s = startup + total_bytes / _GPU_BYTES_PER_S
    if gpu_s >= 0.8 * cpu_s:
        return "cpu"
    ok, _ = _cuda_available()
    return "cuda" if ok else "cpu"


def _cuda_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:   # pragma: no cover - torch is a dependency
        return False, f"torch not importable: {exc}"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA device"
    return True, ""
