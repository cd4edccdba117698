"""The loader on real files written by torch.save: tensors, containers, extras, scaler state.

Every assertion compares what our lazy loader reports with what plain `torch.load` reads.
"""

from __future__ import annotations

import collections
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import CheckpointError
from gsvinspect.meta import Layout
from gsvinspect.load.safe_unpickle import Opaque


def _gpt_sd(dtype=torch.float16, rows=732):
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    sd["model.ar_text_embedding.word_embeddings.weight"] = torch.randn(rows, 8, generator=g).to(dtype)
    sd["model.h.layers.0.self_attn.in_proj_weight"] = torch.randn(24, 8, generator=g).to(dtype)
    sd["model.h.layers.0.self_attn.in_proj_bias"] = torch.randn(24, generator=g).to(dtype)
    sd["model.ar_text_position.alpha"] = torch.ones(1, dtype=dtype)
    return sd


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16, torch.float64, torch.int64])
def test_arrays_and_tensors_equal_torch_load(tmp_path, dtype):
    sd = _gpt_sd(torch.float32)
    sd = collections.OrderedDict((k, (v * 100).to(dtype)) for k, v in sd.items())
    p = tmp_path / "s1.ckpt"
    torch.save({"weight": sd, "config": {"model": {"phoneme_vocab_size": 732}}}, p)
    ref = torch.load(p, weights_only=False)["weight"]
    with open_checkpoint(p) as ck:
        assert list(ck.weights) == list(ref)
        for k, t in ref.items():
            info = ck.weights[k]
            assert info.shape == tuple(t.shape) and info.dtype == str(t.dtype).replace("torch.", "")
            assert info.nbytes == t.numel() * t.element_size()
            assert torch.equal(ck.tensor(k), t)
            arr = ck.array(k)
            if dtype == torch.bfloat16:
                assert arr.dtype == np.uint16
                assert np.array_equal(arr, t.view(torch.int16).numpy().view(np.uint16))
            else:
                assert np.array_equal(arr, t.numpy())
            assert not arr.flags.writeable


def test_views_shared_storage_and_parameters(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    sd = collections.OrderedDict(
        full=base, col=base[:, 3], block=base[1:4, 2:7], t=base.t(),
        p=torch.nn.Parameter(torch.ones(3)), empty=torch.zeros(0, 4), scalar=torch.tensor(2.5))
    p = tmp_path / "views.pth"
    torch.save(sd, p)
    ref = torch.load(p)
    with open_checkpoint(p) as ck:
        assert ck.layout == Layout.STATE_DICT and ck.weights_path == ()
        for k, t in ref.items():
            assert torch.equal(ck.tensor(k), t), k
            assert np.array_equal(ck.array(k), t.detach().numpy()), k
        assert ck.weights["scalar"].shape == ()
        # a tensor handed out never writes through to the file
        before = p.read_bytes()
        ck.tensor("full").add_(1)
    assert p.read_bytes() == before


def test_headered_export_reads_without_restoring_pk(tmp_path):
    sd = _gpt_sd()
    p = tmp_path / "plain.pth"
    torch.save({"weight": sd, "config": {}, "info": "8epoch_1000iteration"}, p)
    h = tmp_path / "headered.pth"
    h.write_bytes(b"06" + p.read_bytes()[2:])
    with pytest.raises(Exception):
        torch.load(h, weights_only=False)  # upstream can't, we can
    with open_checkpoint(h) as ck:
        assert ck.container == "torch-zip-headered" and ck.header == b"06"
        assert ck.version == "v2ProPlus"
        for k, t in sd.items():
            assert torch.equal(ck.tensor(k), t)
    assert h.read_bytes()[:2] == b"06"  # input untouched


def test_lightning_extras_placeholders_and_scaler(tmp_path):
    scaler = {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    obj = {
        "epoch": 14, "global_step": 45, "pytorch-lightning_version": "2.6.6",
        "state_dict": collections.OrderedDict((k, v.float()) for k, v in _gpt_sd().items()),
        "loops": {"fit_loop": {}}, "callbacks": {}, "optimizer_states": [{"state": {}, "param_groups": []}],
        "lr_schedulers": [{}], "MixedPrecision": scaler, "hparams_name": "kwargs",
        "hyper_parameters": {"config": {"train": {"epochs": 15}}, "output_dir": pathlib.PosixPath("/logs/es24h"),
                             "is_train": True},
    }
    p = tmp_path / "epoch=14-step=45.ckpt"
    torch.save(obj, p)
    with open_checkpoint(p) as ck:
        assert ck.layout == Layout.GPT_LIGHTNING and ck.version == "v2"
        assert ck.weights_path == ("state_dict",)
        assert ck.scaler is not None and ck.scaler.path == ("MixedPrecision",)
        assert ck.scaler.state == scaler
        assert "pathlib.PosixPath" in ck.globals and "pathlib.PosixPath" in ck.opaque
        od = ck.extras["hyper_parameters"]["output_dir"]
        assert isinstance(od, Opaque) and od.as_plain() == "/logs/es24h"
        assert set(ck.extras) == set(obj) - {"state_dict"}


@pytest.mark.parametrize("key", ["MixedPrecisionPlugin", "native_amp_scaling_state", "scaler_state_dict", "grad_scaler"])
def test_scaler_found_under_every_known_name(tmp_path, key):
    st = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 100, "_growth_tracker": 0}
    p = tmp_path / "x.ckpt"
    torch.save({"state_dict": _gpt_sd(torch.float32), "epoch": 0, "loops": {}, key: st}, p)
    with open_checkpoint(p) as ck:
        assert ck.scaler.path == (key,) and ck.scaler.state == st


def test_sovits_training_checkpoint_says_no_scaler(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = collections.OrderedDict()
    sd["enc_p.text_embedding.weight"] = torch.randn(322, 4, generator=g)
    sd["enc_q.pre.weight"] = torch.randn(4, 4, 1, generator=g)
    sd["dec.conv_pre.weight"] = torch.randn(8, 4, 7, generator=g)
    p = tmp_path / "G_1000.pth"
    torch.save({"model": sd, "iteration": 8, "optimizer": {"state": {}, "param_groups": [{"params": [0, 1, 2]}]},
                "learning_rate": 0.0001}, p)
    with open_checkpoint(p) as ck:
        assert ck.layout == Layout.SOVITS_G_TRAIN and ck.version == "v1"
        assert ck.scaler is None and "never saves one" in ck.scaler_note


def test_hparams_config_is_an_inert_placeholder(tmp_path):
    # Pickle a config as utils.HParams without a real `utils` module lying around.
    import types

    mod = types.ModuleType("utils")

    class HParams:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    HParams.__module__ = "utils"
    HParams.__qualname__ = "HParams"
    mod.HParams = HParams
    sys.modules["utils"] = mod
    try:
        cfg = HParams(train=HParams(epochs=8), model=HParams(version="v2"), name="es24h")
        p = tmp_path / "es24h_e8_s1000.pth"
        torch.save({"weight": {"enc_p.text_embedding.weight": torch.zeros(732, 4).half(),
                               "dec.conv_pre.weight": torch.zeros(8, 4, 7).half()},
                    "config": cfg, "info": "8epoch_1000iteration"}, p)
    finally:
        del sys.modules["utils"]
    with open_checkpoint(p) as ck:
        cfg = ck.extras["config"]
        assert isinstance(cfg, Opaque) and cfg.fullname == "utils.HParams"
        assert cfg.as_plain() == {"train": {"epochs": 8}, "model": {"version": "v2"}, "name": "es24h"}
        assert ck.layout == Layout.SOVITS_WEIGHTS and ck.version == "v2"
    assert "utils" not in sys.modules


def test_safetensors_file(tmp_path):
    import json
    import struct

    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    b = np.ones(5, dtype=np.float32)
    header = {"a": {"dtype": "F16", "shape": [3, 4], "data_offsets": [0, a.nbytes]},
              "b": {"dtype": "F32", "shape": [5], "data_offsets": [a.nbytes, a.nbytes + b.nbytes]},
              "__metadata__": {"format": "pt"}}
    hb = json.dumps(header).encode()
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + a.tobytes() + b.tobytes())
    with open_checkpoint(p) as ck:
        assert ck.layout == Layout.SAFETENSORS and list(ck.weights) == ["a", "b"]
        assert np.array_equal(ck.array("a"), a) and np.array_equal(ck.array("b"), b)


def test_trust_mode_uses_torch_load(tmp_path):
    p = tmp_path / "t.ckpt"
    torch.save({"weight": _gpt_sd(), "config": {"x": pathlib.PosixPath("/a")}}, p)
    with open_checkpoint(p, trust=True) as ck:
        assert ck.trusted and isinstance(ck.extras["config"]["x"], pathlib.PurePath)
        assert torch.equal(ck.tensor("model.ar_text_position.alpha"), torch.ones(1, dtype=torch.float16))
        assert ck.version == "v2"


def test_weights_entry_override_and_errors(tmp_path):
    p = tmp_path / "two.pth"
    torch.save({"weight": _gpt_sd(), "ema": _gpt_sd(torch.float32)}, p)
    with open_checkpoint(p, weights_entry="ema") as ck:
        assert ck.weights_path == ("ema",)
        assert ck.weights["model.ar_text_position.alpha"].dtype == "float32"
    with pytest.raises(CheckpointError, match="no entry 'nope'"):
        open_checkpoint(p, weights_entry="nope")


def test_open_and_info_read_no_tensor_record(tmp_path):
    """Opening is lazy (README): only the zip directory and the pickle are read. With every tensor
    record's local header smashed, the file still opens and `info`'s summary builds; reading a
    tensor is what finds the damage, and it says so."""
    import zipfile

    from gsvinspect.report.summary import info_dict

    sd = _gpt_sd()
    p = tmp_path / "lazy.pth"
    torch.save({"weight": sd, "config": {}}, p)
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        storages = [i.header_offset for i in z.infolist() if "/data/" in i.filename]
    assert len(storages) == len(sd)
    for h in storages:
        raw[h:h + 4] = b"XXXX"
    p.write_bytes(bytes(raw))
    with open_checkpoint(p) as ck:
        assert list(ck.weights) == list(sd)
        assert info_dict(ck)["tensors"] == len(sd)
        with pytest.raises(CheckpointError, match="bad local header"):
            ck.array(next(iter(sd)))


def test_zip64_offsets_beyond_4gib(tmp_path):
    """A record whose local header sits past 4 GiB needs the ZIP64 extra field (sparse file)."""
    import zipfile

    src = tmp_path / "small.pth"
    t = torch.arange(6, dtype=torch.float32)
    torch.save({"weight": {"model.x": t}}, src)
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("data/0"):
                zout.fp.seek((1 << 32) + 4096)  # sparse gap: costs no disk
                zout.start_dir = zout.fp.tell()
            zout.writestr(name, data)
    assert big.stat().st_size > (1 << 32)
    with open_checkpoint(big) as ck:
        assert np.array_equal(ck.array("model.x"), t.numpy())
    with zipfile.ZipFile(big) as z:  # stdlib agrees it is a ZIP64 archive
        assert any(i.header_offset > 0xFFFFFFFF for i in z.infolist())


def test_library_never_imports_textual_and_info_never_imports_torch(tmp_path):
    p = tmp_path / "g.ckpt"
    torch.save({"weight": _gpt_sd(), "config": {}}, p)
    code = (
        "import sys, pkgutil, importlib, gsvinspect\n"
        "from gsvinspect.cli.main import main\n"
        f"rc = main(['info', {str(p)!r}]); assert rc == 0, rc\n"
        f"rc = main(['ls', {str(p)!r}, '--json']); assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'info/ls imported torch'\n"
        "for m in pkgutil.walk_packages(gsvinspect.__path__, 'gsvinspect.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "assert 'textual' not in sys.modules, 'the library imported textual'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_state_dict_metadata_attribute_is_honest_but_other_attributes_are_not(tmp_path):
    """module.state_dict() pickles its `_metadata` attribute with BUILD: that must load; any other
    attribute set on an OrderedDict by BUILD is refused."""
    import io

    import torch

    from gsvinspect.errors import CheckpointError
    from gsvinspect.load.safe_unpickle import safe_loads

    sd = torch.nn.Linear(2, 2).state_dict()
    assert hasattr(sd, "_metadata")
    buf = io.BytesIO()
    torch.save({"weight": sd}, buf)
    path = tmp_path / "sd.pth"
    path.write_bytes(buf.getvalue())
    with open_checkpoint(path) as ck:
        assert sorted(ck.weights) == ["bias", "weight"]
    sd2 = torch.nn.Linear(2, 2).state_dict()
    sd2.__setstate__ = "x"
    buf = io.BytesIO()
    torch.save({"weight": sd2}, buf)
    import zipfile

    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with pytest.raises(CheckpointError, match="other than torch's _metadata"):
        safe_loads(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))), "mem", None)


def test_a_path_replaced_right_after_mapping_still_reads_the_file_mapped(tmp_path, monkeypatch):
    """The shrink guard (ZipIndex._check_not_shrunk) compares against the file *mapped*: a path
    replaced by a smaller file between the mapping and the first record read (a trainer's
    os.replace) is no false 'file shrank', and the tensors are the ones mapped."""
    import os

    from gsvinspect.load import checkpoint as ckmod

    p = tmp_path / "G_1.pth"
    sd = _gpt_sd(torch.float32)
    torch.save({"weight": sd, "config": {}}, p)
    small = tmp_path / "small.pth"
    torch.save({"weight": {"x": torch.zeros(1)}}, small)
    real_map = ckmod.map_file

    def map_then_replace(path):
        out = real_map(path)
        os.replace(small, p)
        return out

    monkeypatch.setattr(ckmod, "map_file", map_then_replace)
    with open_checkpoint(p) as ck:
        assert list(ck.weights) == list(sd)
        for k, t in sd.items():
            assert bytes(ck.span_bytes(k)) == t.numpy().tobytes()
