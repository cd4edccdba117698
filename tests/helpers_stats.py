"""Shared helpers of the stats tests (engine, roll-ups, spectrum)."""

from __future__ import annotations

import numpy as np

from gsvinspect.meta import TensorInfo


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
