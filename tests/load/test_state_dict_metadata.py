"""Real state dicts: `nn.Module.state_dict()` returns an OrderedDict carrying `_metadata`, which the pickle
sets with BUILD. Every G_*.pth and Lightning ckpt has one; they must open. Other attributes stay refused."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")

from gsvinspect.errors import CheckpointError  # noqa: E402
from gsvinspect.load.checkpoint import open_checkpoint  # noqa: E402


def test_module_state_dict_with_metadata_opens_like_torch_load(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sd = net.state_dict()
    assert getattr(sd, "_metadata", None)          # what torch really writes
    path = tmp_path / "G_1.pth"
    torch.save({"model": sd, "iteration": 1, "learning_rate": 1e-4}, path)
    with open_checkpoint(path) as ck:
        assert list(ck.weights) == list(torch.load(path, weights_only=True)["model"])
        assert ck.array("0.weight").tolist() == sd["0.weight"].tolist()
    r = subprocess.run([sys.executable, "-m", "gsvinspect", "info", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


def _rezip_with_pickle(src, dst, data_pkl: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            body = data_pkl if info.filename.endswith("/data.pkl") else zin.read(info)
            zout.writestr(info, body)


def test_ordered_dict_with_other_attributes_is_refused(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"weight": OrderedDict(w=torch.zeros(2))}, good)
    od = OrderedDict(w=1)
    od.evil = "x"                                   # a BUILD that is not torch's _metadata
    bad = tmp_path / "bad.pth"
    _rezip_with_pickle(good, bad, pickle.dumps({"weight": od}, protocol=2))
    with pytest.raises(CheckpointError, match="evil"):
        open_checkpoint(bad)
