"""Key sets for the alignment tests: the real classes' manifests, as a file would hold them."""

from __future__ import annotations

from gsvinspect.load.manifest import expected_weights
from gsvinspect.meta import TensorInfo


def weights(name: str, prefix: str = "", dtype: str = "float16") -> dict[str, TensorInfo]:
    """`expected_weights(name)` in `dtype`, every key behind `prefix` (e.g. a DDP `module.`)."""
    return {prefix + k: TensorInfo(prefix + k, t.shape, t.dtype)
            for k, t in expected_weights(name, dtype=dtype).items()}
