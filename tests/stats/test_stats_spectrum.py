"""Spectrum of a change: low-rank (LoRA-like) vs full rewrites, full and randomized SVD."""

from __future__ import annotations

import numpy as np
import pytest

from gsvinspect.errors import UsageError
from gsvinspect.stats.spectrum import spectrum
from helpers_stats import FakeCk


def _pair(pre, delta, dt="float32"):
    return FakeCk({"w": (pre.astype(dt), dt)}), FakeCk({"w": ((pre + delta).astype(np.float32), "float32")})


def test_lora_like_change_is_low_rank():
    rng = np.random.default_rng(0)
    pre = rng.standard_normal((512, 384)).astype(np.float32)
    u = np.linalg.qr(rng.standard_normal((512, 4)))[0]
    v = np.linalg.qr(rng.standard_normal((384, 4)))[0]
    delta = (u * np.array([3.0, 2.0, 1.0, 0.5])) @ v.T
    pc, fc = _pair(pre, delta.astype(np.float32))
    sp = spectrum(pc, fc, "w", "w", k=8, device="cpu")
    assert sp.shape == (512, 384) and sp.method == "full" and sp.device_used == "cpu"
    assert sp.singular_values[:4] == pytest.approx([3.0, 2.0, 1.0, 0.5], rel=1e-4)
    assert sp.rank90 == 2                       # 9+4 of 14.25 = 91% >= 90%; 9 alone = 63%
    assert sp.effective_rank == pytest.approx(14.25 / 9, rel=1e-4)
    assert sp.energy_top_k == pytest.approx(1.0, abs=1e-6)
    assert "low-rank" in sp.verdict


def test_full_rewrite_is_spread_and_conv_is_reshaped():
    rng = np.random.default_rng(1)
    pre = rng.standard_normal((96, 64, 3)).astype(np.float32)
    delta = 0.1 * rng.standard_normal(pre.shape).astype(np.float32)
    pc, fc = _pair(pre, delta, "float16")
    sp = spectrum(pc, fc, "w", "w", k=16, device="cpu")
    assert sp.shape == (96, 192)
    assert sp.rank90 is not None and sp.rank90 > 40
    assert sp.effective_rank > 96 / 8 and "rewrote" in sp.verdict
    assert sp.energy_top_k < 0.5


def test_randomized_svd_for_big_matrices_matches_full(monkeypatch):
    import gsvinspect.stats.spectrum as spm

    monkeypatch.setattr(spm, "_FULL_MAX_SIDE", 256)   # what a >2048-wide layer gets, on a small matrix
    rng = np.random.default_rng(2)
    pre = np.zeros((700, 500), np.float32)
    u = rng.standard_normal((700, 6)).astype(np.float32)
    v = rng.standard_normal((6, 500)).astype(np.float32)
    delta = u @ (v * np.array([[10], [8], [6], [4], [2], [1]], np.float32)) + \
        1e-3 * rng.standard_normal((700, 500)).astype(np.float32)
    pc, fc = _pair(pre, delta)
    sp = spectrum(pc, fc, "w", "w", k=6, device="cpu")
    assert sp.method == "randomized"
    top = np.sort(np.linalg.eigvalsh((delta.T @ delta).astype(np.float64)))[::-1][:6] ** 0.5
    assert sp.singular_values == pytest.approx(top, rel=1e-3)
    assert sp.rank90 is not None and sp.rank90 <= 6


def test_spectrum_refuses_what_it_cannot_do():
    pc = FakeCk({"b": (np.ones(8, np.float32), "float32"), "w": (np.ones((4, 4), np.float32), "float32")})
    fc = FakeCk({"b": (np.ones(8, np.float32), "float32"), "w": (np.ones((4, 5), np.float32), "float32")})
    with pytest.raises(UsageError):
        spectrum(pc, fc, "b", "b")
    with pytest.raises(UsageError):
        spectrum(pc, fc, "w", "w")
    same = spectrum(pc, pc, "w", "w")
    assert same.verdict == "unchanged" and same.singular_values == [0.0] * 4 and same.rank90 == 0
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA"):
            spectrum(pc, pc, "w", "w", device="cuda")


@pytest.mark.parametrize("shape,want", [((64, 48), (64, 48)), ((32, 16, 3), (32, 48)), ((1, 9, 96), (9, 96)),
                                        ((192, 1, 5), (192, 5)), ((64,), None), ((1, 64), None), ((64, 1, 1), None)])
def test_matrix_shape_drops_size_1_dims(shape, want):
    """What the SVD sees: GPT-SoVITS's relative-position tables (1, 2w+1, c) are (2w+1) x c, not one row."""
    from gsvinspect.stats.spectrum import matrix_shape

    assert matrix_shape(shape) == want


def test_relative_position_table_is_seen_as_a_matrix():
    rng = np.random.default_rng(4)
    pre = rng.standard_normal((1, 9, 96)).astype(np.float32)
    delta = np.zeros_like(pre)
    delta[0] = 0.01 * np.outer(rng.standard_normal(9), rng.standard_normal(96))   # rank 1 over 9 x 96
    pc, fc = _pair(pre, delta)
    sp = spectrum(pc, fc, "w", "w", device="cpu")
    assert sp.shape == (9, 96) and sp.rank90 == 1
    assert sp.verdict.startswith("too narrow to tell: a 9×96 change has at most 9 direction(s)")
