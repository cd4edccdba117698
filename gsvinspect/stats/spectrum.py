"""The shape of one weight's change: is Δ = ft - pre low-rank (LoRA-like) or a rewrite?

A norm says *how much* a layer moved; the singular values of Δ say *how*. A fine-tune that
touches a layer along a few directions (as a LoRA of rank r does by construction) has nearly all
of ‖Δ‖² in its top r singular values; one that rewrote the layer spreads it over many.

Measures (all from Δ reshaped to 2-D: conv weights ``(out, in, k...)`` become ``(out, in*k...)``):

* ``singular_values``: the top `k`, descending;
* ``effective_rank``: the *stable rank* ``‖Δ‖_F² / σ₁²`` — exact from σ₁ and the Frobenius norm,
  so it needs no full SVD; it equals r for a rank-r change with equal singular values and is
  about min(m, n)/4 for a random (full) rewrite of a square matrix;
* ``rank90``: the fewest singular values holding 90 % of ‖Δ‖² (from the full spectrum when a
  full SVD ran; with a randomized SVD, None when the top `k` do not reach 90 %);
* ``energy_top_k``: the share of ‖Δ‖² in the top `k`.

Where it runs: ``device="auto"`` uses CUDA (``torch.linalg``) only for matrices of at least 4M
elements and only when an NVIDIA driver is present (importing torch costs more than a CPU SVD of
GPT-SoVITS's largest layer, 2048x512); otherwise numpy: a full ``svd`` for up to 16M elements with
min(m, n) <= 2048, a randomized SVD (4 power iterations) beyond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .device import _cuda_available, _cuda_driver_present
from .kernels import read_f64

_GPU_MIN_ELEMS = 1 << 22
_FULL_MAX_ELEMS = 1 << 24
_FULL_MAX_SIDE = 2048


@dataclass(slots=True)
class Spectrum:
    """Singular-value summary of one weight's change."""

    key: str
    shape: tuple[int, int]                 # the 2-D shape the SVD saw
    singular_values: list[float]           # top k, descending
    effective_rank: float                  # stable rank ‖Δ‖_F² / σ₁² (0 when Δ = 0)
    energy_top_k: float                    # Σ top-k σ² / ‖Δ‖_F² (1.0 when Δ = 0)
    rank90: int | None                     # fewest σ holding 90 % of ‖Δ‖², None if more than computed
    frobenius: float                       # ‖Δ‖_F
    rel_change: float                      # ‖Δ‖_F / ‖pre‖_F
    method: str                            # "full" | "randomized"
    device_used: str                       # "cpu" | "cuda"

    @property
    def verdict(self) -> str:
        """One line for the detail panel."""
        if self.frobenius == 0.0:
            return "unchanged"
        small = min(self.shape)
        if small < MIN_SIDE:
            return f"too narrow to tell: a {self.shape[0]}×{self.shape[1]} change has at most {small} direction(s)"
        if self.rank90 is not None and self.rank90 <= max(4, small // 20):
            return f"low-rank (LoRA-like): 90% of the change lies in {self.rank90} direction(s)"
        if self.effective_rank >= small / 8:
            return "spread over many directions: the fine-tune rewrote this layer"
        return "moderately concentrated change"


MIN_SIDE = 16   # below this many rows or columns a spectrum cannot tell low-rank from a rewrite


def matrix_shape(shape) -> tuple[int, int] | None:
    """The 2-D shape the SVD sees: size-1 dims dropped, then (first dim, the rest flattened).

    ``(out, in, k)`` conv weights become ``(out, in*k)``; GPT-SoVITS's relative-position tables
    ``(1, 2w+1, c)`` become ``(2w+1, c)`` rather than a single row. None when fewer than two
    dims are left (a vector has no spectrum).
    """
    dims = [d for d in shape if d != 1]
    if len(dims) < 2:
        return None
    rest = 1
    for d in dims[1:]:
        rest *= d
    return dims[0], rest


def _delta_2d(pre_ck, ft_ck, pre_key: str, ft_key: str) -> tuple[np.ndarray, float]:
    pi, fi = pre_ck.weights[pre_key], ft_ck.weights[ft_key]
    if tuple(pi.shape) != tuple(fi.shape):
        raise UsageError(f"spectrum: shapes differ: {pre_key} {tuple(pi.shape)} vs {ft_key} {tuple(fi.shape)}")
    mshape = matrix_shape(pi.shape)
    if mshape is None:
        raise UsageError(f"spectrum: {pre_key} {tuple(pi.shape)} is effectively 1-D; it needs a 2-D or conv weight")
    a = read_f64(pre_ck, pre_key, "spectrum: ")
    b = read_f64(ft_ck, ft_key, "spectrum: ")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise UsageError(f"spectrum: {pre_key} holds NaN or Inf; no SVD of a non-finite change")
    norm_pre = float(np.sqrt(np.dot(a, a)))
    d = (b - a).reshape(mshape)
    return d, norm_pre


def _randomized_svdvals(d: np.ndarray, k: int, iters: int = 4, seed: int = 0) -> np.ndarray:
    """Top-k singular values by the Halko-Martinsson-Tropp range finder with power iterations."""
    m, n = d.shape
    q = min(k + 10, m, n)
    rng = np.random.default_rng(seed)
    y = d @ rng.standard_normal((n, q)).astype(d.dtype)
    for _ in range(iters):
        y, _ = np.linalg.qr(y)
        y, _ = np.linalg.qr(d.T @ y)
        y = d @ y
    qm, _ = np.linalg.qr(y)
    return np.linalg.svd(qm.T @ d, compute_uv=False)[:k]


def check_device(device: str) -> None:
    """Refuse an unknown device, or ``cuda`` without CUDA (callers check once, before reading).

    Raises:
        UsageError: with the reason torch gives.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if device == "cuda":
        ok, why = _cuda_available()
        if not ok:
            raise UsageError(f"device 'cuda' requested but CUDA is not available ({why}); use --device cpu")


def spectrum(pre_ck, ft_ck, pre_key: str, ft_key: str, *, k: int = 16, device: str = "auto") -> Spectrum:
    """Top-k singular values and effective rank of ``ft - pre`` for one 2-D (or conv) weight.

    Raises:
        UsageError: shapes differ, 1-D tensor, non-float dtype, NaN/Inf, or ``cuda`` without CUDA.
    """
    d, norm_pre = _delta_2d(pre_ck, ft_ck, pre_key, ft_key)
    fro2 = float(np.einsum("ij,ij->", d, d))
    m, n = d.shape
    k = max(1, min(k, m, n))
    check_device(device)
    use_cuda = device == "cuda"
    if device == "auto" and d.size >= _GPU_MIN_ELEMS and _cuda_driver_present():
        use_cuda = _cuda_available()[0]
    full = min(m, n) <= _FULL_MAX_SIDE and d.size <= _FULL_MAX_ELEMS
    if fro2 == 0.0:
        sv = np.zeros(k)
    elif use_cuda:
        import torch

        t = torch.from_numpy(d.astype(np.float32)).cuda()
        if full:
            sv = torch.linalg.svdvals(t).double().cpu().numpy()
        else:
            sv = torch.svd_lowrank(t, q=min(k + 10, m, n), niter=4)[1][:k].double().cpu().numpy()
    elif full:
        x = d if d.size <= (1 << 20) else d.astype(np.float32)
        sv = np.linalg.svd(x, compute_uv=False).astype(np.float64)
    else:
        sv = _randomized_svdvals(d.astype(np.float32), k).astype(np.float64)
    sv = np.sort(sv)[::-1]
    energy = np.cumsum(sv * sv)
    rank90 = None
    if fro2 > 0.0:
        hit = np.nonzero(energy >= 0.9 * fro2 * (1 - 1e-6))[0]
        rank90 = int(hit[0]) + 1 if hit.size else None
        if rank90 is None and full:
            rank90 = len(sv)
    else:
        rank90 = 0
    energy_k = float(energy[min(k, len(sv)) - 1]) if len(sv) else 0.0
    sv = sv[:k]
    return Spectrum(
        key=ft_key, shape=(m, n), singular_values=[float(s) for s in sv],
        effective_rank=fro2 / float(sv[0]) ** 2 if fro2 > 0.0 and sv[0] > 0 else 0.0,
        energy_top_k=min(1.0, energy_k / fro2) if fro2 > 0.0 else 1.0,
        rank90=rank90, frobenius=math.sqrt(fro2),
        rel_change=math.sqrt(fro2) / norm_pre if norm_pre > 0 else (0.0 if fro2 == 0 else math.inf),
        method="full" if full else "randomized", device_used="cuda" if use_cuda else "cpu")
