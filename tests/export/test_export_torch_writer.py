"""torch_writer: placeholders written back under their own global names, header variants, sizes."""

from __future__ import annotations

import io
import pickletools
import sys
import zipfile
from collections import OrderedDict

import pytest
import torch

from gsvinspect.export import torch_writer
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.load.safe_unpickle import safe_loads

UTILS_STUB = '''
class HParams:
    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            if isinstance(v, dict):
                v = HParams(**v)
            setattr(self, k, v)
    def __eq__(self, other):
        return type(other) is HParams and vars(self) == vars(other)
'''


@pytest.fixture
def utils_module(tmp_path, monkeypatch):
    """A stand-in for GPT-SoVITS's top-level `utils` module (so plain torch.load can resolve it)."""
    d = tmp_path / "stub"
    d.mkdir()
    (d / "utils.py").write_text(UTILS_STUB)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.delitem(sys.modules, "utils", raising=False)
    import utils  # noqa: F401

    yield sys.modules["utils"]
    sys.modules.pop("utils", None)


def _placeholder_root(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    name = next(n for n in z.namelist() if n.endswith("data.pkl"))
    root, _ = safe_loads(z.read(name), "mem", None)
    return root


def test_opaque_written_back_under_original_global(utils_module, tmp_path):
    import pathlib

    cfg = utils_module.HParams(train={"lr": 1e-4, "betas": [0.8, 0.99]}, name="exp", pretrain=None)
    obj = OrderedDict(weight={"a": torch.arange(6, dtype=torch.float16).reshape(2, 3)}, config=cfg,
                      out=pathlib.PurePosixPath("/logs/exp"), info="x")
    root = _placeholder_root(obj)
    assert type(root["config"]).__name__ == "HParams"  # an Opaque placeholder, utils never imported by us
    root["weight"] = obj["weight"]
    out = tmp_path / "o.pth"
    with open(out, "wb") as f:
        n = torch_writer.save(root, f)
    assert n == out.stat().st_size
    with zipfile.ZipFile(out) as z:
        pkl = z.read(next(x for x in z.namelist() if x.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    assert ("GLOBAL", "utils HParams") in ops
    back = torch.load(out, weights_only=False)
    assert back["config"] == cfg
    assert back["out"] == obj["out"]
    assert torch.equal(back["weight"]["a"], obj["weight"]["a"])
    assert list(back) == list(obj) and type(back) is OrderedDict


@pytest.mark.parametrize("header", [b"03", b"04", b"05", b"06"])
def test_header_variants_only_change_two_bytes(tmp_path, header):
    obj = {"weight": {"w": torch.ones(3, dtype=torch.float16)}, "lora_rank": 32}
    plain, hdr = tmp_path / "plain.pth", tmp_path / "hdr.pth"
    with open(plain, "wb") as f:
        torch_writer.save(obj, f)
    with open(hdr, "wb") as f:
        torch_writer.save(obj, f, header=header)
    a, b = plain.read_bytes(), hdr.read_bytes()
    assert b[:2] == header and a[:4] == b"PK\x03\x04" and a[2:] == b[2:]
    ck = open_checkpoint(hdr)
    assert ck.header == header and ck.container == "torch-zip-headered"
    assert ck.root["lora_rank"] == 32
    ck.close()
    with pytest.raises(Exception):
        torch.load(hdr, weights_only=False)  # exactly like upstream: headered files need the PK fix


def test_saved_size_matches_real_size(tmp_path):
    obj = {"weight": {f"k{i}": torch.randn(i + 1, 7) for i in range(20)}, "info": "é中"}
    p = tmp_path / "s.pth"
    with open(p, "wb") as f:
        torch_writer.save(obj, f)
    assert torch_writer.saved_size(obj) == p.stat().st_size


def test_rejects_unknown_header(tmp_path):
    with pytest.raises(ValueError):
        torch_writer.save({}, io.BytesIO(), header=b"99")
