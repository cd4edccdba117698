"""Every synthetic layout read back with plain torch.load (and our loader), fine_tune, pairs, demo."""

from __future__ import annotations

import io
import json
import pathlib
import pickletools
import struct
import sys
import types
import zipfile
from collections import OrderedDict

import pytest
import torch

from gsvinspect.load import manifest
from gsvinspect import synth
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import UsageError
from gsvinspect.meta import Layout

SCALE = 8
TIMESTAMP = synth._timestamp_archive(0)

# the model-agnostic containers (safetensors, bare state dict, unknown) at two versions only
_GENERIC = {Layout.SAFETENSORS, Layout.STATE_DICT, Layout.UNKNOWN}
ALL_CASES = [(layout, v) for layout in Layout for v in synth.layout_versions(layout)
             if layout not in _GENERIC or v in ("v1", "v2Pro")]

TOP_KEYS = {
    Layout.GPT_PRETRAINED: ["weight", "config"],
    Layout.GPT_WEIGHTS: ["weight", "config", "info"],
    Layout.GPT_LIGHTNING: ["epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops",
                           "callbacks", "optimizer_states", "lr_schedulers", "MixedPrecision",
                           "hparams_name", "hyper_parameters"],
    Layout.SOVITS_G_PRETRAINED: ["weight", "config", "info"],
    Layout.SOVITS_D_PRETRAINED: ["weight", "config"],
    Layout.SOVITS_G_TRAIN: ["model", "iteration", "optimizer", "learning_rate"],
    Layout.SOVITS_D_TRAIN: ["model", "iteration", "optimizer", "learning_rate"],
    Layout.SOVITS_G_LORA_TRAIN: ["model", "iteration", "optimizer", "learning_rate"],
    Layout.SOVITS_WEIGHTS: ["weight", "config", "info"],
    Layout.SOVITS_WEIGHTS_LORA: ["weight", "config", "info", "lora_rank"],
    Layout.UNKNOWN: ["ema_weights", "step", "note"],
}
WEIGHTS_AT = {Layout.GPT_LIGHTNING: "state_dict", Layout.SOVITS_G_TRAIN: "model", Layout.SOVITS_D_TRAIN: "model",
              Layout.SOVITS_G_LORA_TRAIN: "model", Layout.UNKNOWN: "ema_weights"}
FP32_LAYOUTS = {Layout.GPT_LIGHTNING, Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN, Layout.SOVITS_G_LORA_TRAIN,
                Layout.VOCODER, Layout.STATE_DICT, Layout.UNKNOWN}
EXPECTED_HEADER = {(Layout.SOVITS_WEIGHTS, "v2Pro"): b"05", (Layout.SOVITS_WEIGHTS, "v2ProPlus"): b"06",
                   (Layout.SOVITS_WEIGHTS_LORA, "v3"): b"03", (Layout.SOVITS_WEIGHTS_LORA, "v4"): b"04"}


def _name(layout, version) -> str:
    ext = ".safetensors" if layout == Layout.SAFETENSORS else ".pth"
    return f"{layout.value}_{version}{ext}"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every (layout, version) written once at scale 8."""
    root = tmp_path_factory.mktemp("layouts")
    return {(layout, v): synth.write_checkpoint(root / _name(layout, v), layout, v, scale=SCALE)
            for layout, v in ALL_CASES}


class _Stub:
    """Stands in for GPT-SoVITS's utils.HParams while unpickling."""


@pytest.fixture
def utils_stub(monkeypatch):
    mod = types.ModuleType("utils")
    mod.HParams = _Stub
    monkeypatch.setitem(sys.modules, "utils", mod)
    return _Stub


def _read(path: pathlib.Path) -> tuple[bytes, object]:
    data = path.read_bytes()
    head = data[:2]
    obj = torch.load(io.BytesIO(b"PK" + data[2:]), weights_only=False)
    return head, obj


def _data_pkl(path: pathlib.Path) -> tuple[str, bytes]:
    data = b"PK" + path.read_bytes()[2:]
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        # the first member's local header is broken in headered files: read it through a fixed copy
        return name, z.read(name)


def _globals(pkl: bytes) -> set[str]:
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(pkl):
        if op.name == "GLOBAL":
            out.add(arg.replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            out.add(".".join(strings[-2:]))
    return out


# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,version", [c for c in ALL_CASES if c[0] != Layout.SAFETENSORS],
                         ids=lambda x: getattr(x, "value", x))
def test_layout_reads_back_with_plain_torch_load(written, utils_stub, layout, version):
    path = written[(layout, version)]
    head, obj = _read(path)
    assert head == EXPECTED_HEADER.get((layout, version), b"PK")
    if layout in (Layout.VOCODER, Layout.STATE_DICT):
        assert isinstance(obj, OrderedDict)
        weights = obj
    else:
        assert list(obj) == TOP_KEYS[layout]
        weights = obj[WEIGHTS_AT.get(layout, "weight")]
    dtype = torch.float32 if layout in FP32_LAYOUTS else torch.float16
    assert weights and all(t.dtype == dtype for t in weights.values())

    model = synth._LAYOUT_MODEL.get(layout, "sovits-G")
    expected = synth.planned_shapes(model, version, scale=SCALE)
    if layout == Layout.SOVITS_WEIGHTS:
        expected = {k: s for k, s in expected.items() if "enc_q" not in k}
        assert isinstance(weights, dict) and not isinstance(weights, OrderedDict)  # savee's plain dict
    elif layout == Layout.SOVITS_WEIGHTS_LORA:
        keep = set(manifest.expected_weights(f"sovits-G-{version}-lora-export"))
        expected = {k: s for k, s in expected.items() if k in keep}
    assert list(weights) == list(expected)
    assert {k: tuple(t.shape) for k, t in weights.items()} == dict(expected)


@pytest.mark.parametrize("layout,version", [c for c in ALL_CASES if c[0] != Layout.SAFETENSORS],
                         ids=lambda x: getattr(x, "value", x))
def test_inner_folder_names_follow_the_writer(written, layout, version):
    path = written[(layout, version)]
    name, _ = _data_pkl(path)
    folder = name.split("/")[0]
    if (layout, version) in EXPECTED_HEADER or layout == Layout.GPT_LIGHTNING:
        assert folder == "archive"  # my_save2 / Lightning serialise to a BytesIO
    elif layout in (Layout.GPT_WEIGHTS, Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN,
                    Layout.SOVITS_G_LORA_TRAIN, Layout.SOVITS_WEIGHTS):
        assert folder == TIMESTAMP  # my_save: <time.time()>.pth then move
    else:
        assert folder == path.stem


@pytest.mark.parametrize("layout,version", sorted(EXPECTED_HEADER, key=str), ids=str)
def test_headered_files_defeat_plain_torch_load(written, layout, version):
    path = written[(layout, version)]
    with pytest.raises(Exception):
        torch.load(path, weights_only=False)
    with zipfile.ZipFile(path) as z:  # the central directory is intact
        assert any(n.endswith("/data.pkl") for n in z.namelist())


def test_hparams_configs_are_pickled_as_utils_hparams(written, utils_stub):
    assert "utils" in sys.modules  # only our stub, for loading
    hparams_files = [(Layout.SOVITS_WEIGHTS, v) for v in ("v1", "v2", "v2Pro", "v2ProPlus", "v3")]
    hparams_files += [(Layout.SOVITS_WEIGHTS_LORA, "v3"), (Layout.SOVITS_WEIGHTS_LORA, "v4"),
                      (Layout.SOVITS_G_PRETRAINED, "v1")]
    for case in hparams_files:
        _, pkl = _data_pkl(written[case])
        assert "utils.HParams" in _globals(pkl), case
        _, obj = _read(written[case])
        cfg = obj["config"]
        assert isinstance(cfg, _Stub) and isinstance(cfg.model, _Stub) and isinstance(cfg.train, _Stub)
    for case in [(Layout.SOVITS_G_PRETRAINED, "v2"), (Layout.SOVITS_D_PRETRAINED, "v2"),
                 (Layout.GPT_PRETRAINED, "v2"), (Layout.SOVITS_G_TRAIN, "v2")]:
        _, pkl = _data_pkl(written[case])
        assert not any(g.startswith("utils.") for g in _globals(pkl)), case
        assert torch.load(written[case], weights_only=True) is not None  # plain globals only


def test_writing_hparams_leaves_no_utils_module(tmp_path):
    sys.modules.pop("utils", None)
    path = synth.write_checkpoint(tmp_path / "x_e8_s100.pth", Layout.SOVITS_WEIGHTS, "v2", scale=16)
    assert "utils" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        torch.load(path, weights_only=False)  # upstream's module is genuinely needed to unpickle


def test_export_contents(written, utils_stub):
    _, obj = _read(written[(Layout.SOVITS_WEIGHTS, "v2")])
    assert obj["info"] == "8epoch_1500iteration"
    assert not any("enc_q" in k for k in obj["weight"])
    assert obj["config"].model.version == "v2" and obj["config"].pretrain is None
    _, lora = _read(written[(Layout.SOVITS_WEIGHTS_LORA, "v4")])
    assert lora["lora_rank"] == 32 and type(lora["lora_rank"]) is int
    assert lora["config"].train.lora_rank == "32"
    assert sum(1 for k in lora["weight"] if ".lora_A." in k) == 88


def test_gpt_files(written):
    _, pre = _read(written[(Layout.GPT_PRETRAINED, "v1")])
    assert pre["config"]["model"]["phoneme_vocab_size"] == 512
    assert pre["weight"]["model.ar_text_embedding.word_embeddings.weight"].shape[0] == 512
    _, exp = _read(written[(Layout.GPT_WEIGHTS, "v2")])
    assert isinstance(exp, OrderedDict) and exp["info"] == "GPT-e15"
    assert exp["config"]["data"]["max_sec"] == 54


def test_lightning_checkpoint_details(written):
    path = written[(Layout.GPT_LIGHTNING, "v2")]
    _, pkl = _data_pkl(path)
    assert "pathlib.PosixPath" in _globals(pkl)
    _, ck = _read(path)
    assert ck["MixedPrecision"] == {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                    "growth_interval": 2000, "_growth_tracker": 117}
    assert ck["hparams_name"] == "kwargs"
    assert isinstance(ck["hyper_parameters"]["output_dir"], pathlib.PurePath)
    assert ck["hyper_parameters"]["is_train"] is True
    (cb_key,) = ck["callbacks"]
    assert cb_key.startswith("my_model_ckpt{'monitor': 'top_3_acc'")
    opt = ck["optimizer_states"][0]
    assert opt["param_groups"][0]["params"] == list(range(295))
    # ScaledAdam buckets: state only on the first index of each (dtype, shape) bucket
    shapes = [tuple(t.shape) for t in ck["state_dict"].values()]
    firsts = sorted({shapes.index(s) for s in shapes})
    assert sorted(opt["state"]) == firsts
    first_layer = opt["state"][shapes.index(tuple(ck["state_dict"]["model.h.layers.0.linear1.weight"].shape))]
    assert first_layer["param_rms"].shape[0] == 24


@pytest.mark.parametrize("key", synth.SCALER_KEYS)
def test_scaler_key_variants(tmp_path, key):
    path = synth.write_checkpoint(tmp_path / "e.ckpt", Layout.GPT_LIGHTNING, "v2", scale=16, scaler_key=key)
    ck = torch.load(path, weights_only=False)
    assert set(ck) & set(synth.SCALER_KEYS) == {key}


def test_fp32_run_has_no_scaler_and_str_output_dir_is_weights_only_loadable(tmp_path):
    path = synth.write_checkpoint(tmp_path / "e.ckpt", Layout.GPT_LIGHTNING, "v1", scale=16,
                                  amp_scaler=False, path_object=False)
    ck = torch.load(path, weights_only=True)
    assert not set(ck) & set(synth.SCALER_KEYS)
    assert ck["hyper_parameters"]["output_dir"].endswith("logs_s1_v1")
    assert ck["hyper_parameters"]["config"]["train"]["precision"] == "32"
    with pytest.raises(Exception):  # the PosixPath default trips torch's weights_only loader
        torch.load(synth.write_checkpoint(tmp_path / "p.ckpt", Layout.GPT_LIGHTNING, "v1", scale=16),
                   weights_only=True)


def test_sovits_g_train_optimizer_groups(written):
    _, ck = _read(written[(Layout.SOVITS_G_TRAIN, "v2")])
    keys = list(ck["model"])
    assert ck["iteration"] == 8 and ck["learning_rate"] == 0.0001
    groups = ck["optimizer"]["param_groups"]
    assert len(groups) == 4
    assert [round(g["initial_lr"] / 0.0001, 3) for g in groups] == [1.0, 0.4, 0.4, 0.4]
    params = [manifest.load_manifest("sovits_G_v2").entry(k) for k in keys]
    n_params = sum(1 for e in params if not e.buffer)
    assert sorted(i for g in groups for i in g["params"]) == list(range(n_params))
    # group 1 is the text embedding alone; ssl_proj never got a gradient
    assert len(groups[1]["params"]) == 1
    state = ck["optimizer"]["state"]
    assert len(state) == n_params - 2
    assert 0 not in state and 1 not in state  # enc_p.ssl_proj.weight/bias come first in the net
    assert set(state[2]) == {"step", "exp_avg", "exp_avg_sq"}


def test_lora_train_optimizer_has_trainable_params_only(written):
    _, ck = _read(written[(Layout.SOVITS_G_LORA_TRAIN, "v3")])
    (group,) = ck["optimizer"]["param_groups"]
    m = manifest.load_manifest("sovits_G_v3_lora_r32")
    trainable = [k for k in ck["model"] if not m.entry(k).buffer and m.entry(k).requires_grad is not False]
    assert len(group["params"]) == len(trainable) == 258 - 5  # LoRA export minus its 5 buffers
    assert any(".lora_A." in k for k in trainable) and not any(".base_layer." in k for k in trainable)


def test_optimizer_options(tmp_path):
    light = synth.write_checkpoint(tmp_path / "D_1.pth", Layout.SOVITS_D_TRAIN, "v2", scale=16, optimizer="light")
    none = synth.write_checkpoint(tmp_path / "D_2.pth", Layout.SOVITS_D_TRAIN, "v2", scale=16, optimizer=False)
    a, b = torch.load(light, weights_only=True), torch.load(none, weights_only=True)
    assert all(set(s) == {"step"} for s in a["optimizer"]["state"].values())
    assert b["optimizer"]["state"] == {} and len(b["optimizer"]["param_groups"]) == 1
    assert light.stat().st_size < 2 * 1024 * 1024


def test_pretrained_info_and_config(written, utils_stub):
    _, v4 = _read(written[(Layout.SOVITS_G_PRETRAINED, "v4")])
    assert v4["info"] == "pretrained_s2G_v4" and isinstance(v4["config"], dict)
    _, v1 = _read(written[(Layout.SOVITS_G_PRETRAINED, "v1")])
    assert isinstance(v1, OrderedDict) and v1["info"] == "pretrained_s2G_v1"
    assert list(vars(v1["config"])) == ["train", "data", "model", "s2_ckpt_dir", "content_module",
                                        "save_weight_dir", "name", "pretrain", "resume_step"]
    assert any(k.startswith("enc_q.") for k in v1["weight"])
    _, d = _read(written[(Layout.SOVITS_D_PRETRAINED, "v2Pro")])
    assert len({k.split(".")[1] for k in d["weight"]}) == 8


def test_safetensors_written_by_hand(written):
    path = written[(Layout.SAFETENSORS, "v2Pro")]
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    header = json.loads(data[8:8 + n])
    assert header.pop("__metadata__") == {"format": "pt"}
    expected = synth.state_dict("sovits-G", "v2Pro", scale=SCALE, dtype="float16")
    assert list(header) == list(expected)
    end = 0
    for key, meta in header.items():
        assert meta["dtype"] == "F16" and meta["shape"] == list(expected[key].shape)
        b, e = meta["data_offsets"]
        assert b == end
        end = e
        got = torch.frombuffer(bytearray(data[8 + n + b:8 + n + e]), dtype=torch.float16).reshape(meta["shape"])
        assert torch.equal(got, expected[key]), key
    assert 8 + n + end == len(data)


def test_layout_version_mismatch_is_refused(tmp_path):
    for layout, version in [(Layout.SOVITS_D_TRAIN, "v3"), (Layout.VOCODER, "v2"),
                            (Layout.SOVITS_WEIGHTS_LORA, "v2"), (Layout.SOVITS_WEIGHTS, "v4")]:
        with pytest.raises(UsageError):
            synth.write_checkpoint(tmp_path / "x.pth", layout, version, scale=16)
    assert not list(tmp_path.iterdir())


def test_given_weights_are_cast_and_filtered(tmp_path, utils_stub):
    sd = synth.state_dict("sovits-G", "v2Pro", scale=16)
    path = synth.write_checkpoint(tmp_path / "a_e1_s2.pth", Layout.SOVITS_WEIGHTS, "v2Pro", weights=sd,
                                  header=b"PK", info="1epoch_2iteration")
    head, obj = _read(path)
    assert head == b"PK" and obj["info"] == "1epoch_2iteration"
    assert torch.equal(obj["weight"]["sv_emb.weight"], sd["sv_emb.weight"].half())
    assert len(obj["weight"]) == len(sd) - 103


def test_writing_is_deterministic(tmp_path):
    a = synth.write_checkpoint(tmp_path / "a" / "G_5.pth", Layout.SOVITS_G_TRAIN, "v2", scale=16, seed=2)
    b = synth.write_checkpoint(tmp_path / "b" / "G_5.pth", Layout.SOVITS_G_TRAIN, "v2", scale=16, seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in a.parent.iterdir()) == ["G_5.pth"]  # no temp files left


# ------------------------------------------------------------------------------------------
# fine_tune

@pytest.fixture(scope="module")
def base():
    return synth.state_dict("sovits-G", "v2", scale=8)


def _moved(a, b):
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_fine_tune_strength_is_relative(base):
    ft = synth.fine_tune(base, strength=0.05)
    key = "dec.conv_pre.weight"
    rel = float((ft[key] - base[key]).pow(2).mean().sqrt() / base[key].pow(2).mean().sqrt())
    assert 0.04 < rel < 0.06
    assert torch.equal(ft["quantizer.vq.layers.0._codebook.inited"], base["quantizer.vq.layers.0._codebook.inited"])
    assert list(ft) == list(base) and all(ft[k].shape == base[k].shape for k in base)


def test_fine_tune_module_strength(base):
    ft = synth.fine_tune(base, strength=0.0, module_strength={"dec.": 0.02, "dec.ups.": 0.0})
    moved = _moved(base, ft)
    assert moved and all(k.startswith("dec.") and not k.startswith("dec.ups.") for k in moved)
    assert {k for k in base if k.startswith("dec.") and not k.startswith("dec.ups.")} == moved


def test_fine_tune_rows(base):
    key = "enc_p.text_embedding.weight"
    only = synth.fine_tune(base, strength=0.1, rows=[5, 7, 700])
    changed = (only[key] != base[key]).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 7, 700]
    both = synth.fine_tune(base, strength=0.001, rows=slice(0, 10), row_strength=0.5)
    d = (both[key] - base[key]).abs().mean(dim=1)
    assert float(d[:10].min()) > 20 * float(d[10:].max())


def test_fine_tune_rename_shape_nan(base):
    ft = synth.fine_tune(base, strength=0.0, rename_prefix="module.",
                         change_shape={"enc_p.text_embedding.weight": (800, 24)},
                         nan_key="dec.conv_post.weight")
    assert all(k.startswith("module.") for k in ft)
    emb = ft["module.enc_p.text_embedding.weight"]
    assert emb.shape == (800, 24) and torch.equal(emb[:732], base["enc_p.text_embedding.weight"])
    assert torch.isnan(ft["module.dec.conv_post.weight"]).any()
    assert torch.isfinite(base["dec.conv_post.weight"]).all()  # input untouched
    with pytest.raises(UsageError):
        synth.fine_tune(base, nan_key="no.such.key")


def test_fine_tune_is_deterministic_by_seed(base):
    a, b, c = (synth.fine_tune(base, seed=s) for s in (4, 4, 5))
    assert not _moved(a, b)
    assert len(_moved(a, c)) > 0.9 * len(base)


# ------------------------------------------------------------------------------------------
# pairs, demo, wide

@pytest.mark.parametrize("kind,version", [("gpt", "v2"), ("gpt-export", "v1"), ("sovits-G", "v2Pro"),
                                          ("sovits-G-export", "v2ProPlus"), ("sovits-D", "v2"),
                                          ("sovits-G-ddp", "v1"), ("sovits-G-lora", "v4")])
def test_write_pair(tmp_path, utils_stub, kind, version):
    pre, ft = synth.write_pair(tmp_path, kind, version, scale=16, seed=1)
    assert pre.is_file() and ft.is_file() and "pretrained_models" in pre.parts
    _, p = _read(pre)
    _, f = _read(ft)
    pw = p["weight"]
    fw = f.get("weight") or f.get("model") or f.get("state_dict")
    if kind == "sovits-G-ddp":
        assert all(k.startswith("module.") for k in fw)
        fw = {k.removeprefix("module."): v for k, v in fw.items()}
    if kind == "sovits-G-export":
        assert set(fw) == {k for k in pw if "enc_q" not in k}
    if kind == "sovits-G-lora":
        assert f["model"]  # peft keys; base layers equal the fp16 pretrained values
        k = "cfm.estimator.transformer_blocks.0.attn.to_q.weight"
        wrapped = "cfm.base_model.model.estimator.transformer_blocks.0.attn.to_q.base_layer.weight"
        assert torch.equal(f["model"][wrapped], pw[k].float())
        assert not torch.equal(f["model"]["ref_enc.fc.fc.weight"], pw["ref_enc.fc.fc.weight"].float())
        return
    common = [k for k in pw if k in fw and pw[k].is_floating_point()]
    assert len(common) > 50
    moved = sum(1 for k in common if not torch.equal(pw[k].float(), fw[k].float().half().float()))
    assert moved > 0.5 * len(common)


def test_write_demo(tmp_path, utils_stub):
    paths = synth.write_demo(tmp_path)
    assert set(paths) == {"sovits_pretrained", "sovits_finetune", "sovits_export", "gpt_pretrained", "gpt_finetune"}
    stamps = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    assert synth.write_demo(tmp_path) == paths
    assert {n: p.stat().st_mtime_ns for n, p in paths.items()} == stamps  # re-used, not rewritten

    _, pre = _read(paths["sovits_pretrained"])
    _, ft = _read(paths["sovits_finetune"])
    _, ex = _read(paths["sovits_export"])
    _, gft = _read(paths["gpt_finetune"])
    assert all(k.startswith("module.") for k in ft["model"])
    assert not any("enc_q" in k for k in ex["weight"]) and any(k.startswith("enc_q.") for k in pre["weight"])
    assert "MixedPrecision" in gft
    key = "enc_p.text_embedding.weight"
    delta = (ft["model"]["module." + key] - pre["weight"][key].float()).abs().mean(dim=1)
    en = synth.symbol_rows("v2", "en")
    others = sorted(set(range(732)) - set(en))
    assert float(delta[en].mean()) > 20 * float(delta[others].mean())
    gft_size = paths["gpt_finetune"].stat().st_size

    paths["gpt_finetune"].unlink()  # an incomplete set is written again
    assert synth.write_demo(tmp_path)["gpt_finetune"].stat().st_size == gft_size


def test_wide_state_dict():
    sd = synth.wide_state_dict(3000, seed=1)
    assert len(sd) == 3000 and len(set(sd)) == 3000
    assert all(k.count(".") >= 5 for k in sd)
    assert all(torch.equal(a, b) for a, b in zip(sd.values(), synth.wide_state_dict(3000, seed=1).values()))
    assert len(synth.wide_state_dict()) == 20000


# ------------------------------------------------------------------------------------------
# our loader agrees with what we wrote

# what can be told apart at all: one GPT net serves v2..v2ProPlus, one D net serves v1/v2 and Pro/ProPlus
_GPT_SAME = {"v3": "v2", "v4": "v2", "v2Pro": "v2", "v2ProPlus": "v2"}
_D_SAME = {"v1": "v2", "v2ProPlus": "v2Pro"}


def _detectable(layout, version):
    if layout.is_gpt:
        return {version, _GPT_SAME.get(version, version)}
    if layout in (Layout.SOVITS_D_PRETRAINED, Layout.SOVITS_D_TRAIN):
        return {version, _D_SAME.get(version, version)}
    return {version}


@pytest.mark.parametrize("layout,version", ALL_CASES, ids=lambda x: getattr(x, "value", x))
def test_our_loader_detects_what_we_wrote(written, layout, version):
    path = written[(layout, version)]
    with open_checkpoint(path) as ck:
        assert ck.layout == layout, ck.evidence
        if layout not in (Layout.SAFETENSORS, Layout.STATE_DICT, Layout.UNKNOWN):
            assert ck.version in _detectable(layout, version), ck.evidence
        assert ck.header == EXPECTED_HEADER.get((layout, version), b"PK" if layout != Layout.SAFETENSORS else ck.header)
        if layout == Layout.GPT_LIGHTNING:
            assert ck.scaler is not None and ck.scaler.path == ("MixedPrecision",)
        n_expected = len(synth.planned_shapes(synth._LAYOUT_MODEL.get(layout, "sovits-G"), version, scale=SCALE))
        if layout not in (Layout.SOVITS_WEIGHTS, Layout.SOVITS_WEIGHTS_LORA):
            assert len(ck.weights) == n_expected


def test_pickle_protocol_matches_torch_default(written):
    _, pkl = _data_pkl(written[(Layout.SOVITS_WEIGHTS, "v2")])
    first = next(pickletools.genops(pkl))
    assert first[0].name == "PROTO" and first[1] == 2  # torch.save's default, also for our pickler
