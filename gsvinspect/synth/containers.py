"""What upstream stores next to the weights (configs, ``utils.HParams``) and the low-level writers
(torch.save under a named/timestamp/BytesIO archive, the 2-byte header, safetensors by hand)."""

from __future__ import annotations

import io
import json
import os
import struct
import types
from pathlib import Path

from ..errors import UsageError
from ..export.torch_writer import OpaquePickler
from .weights import _torch, scaled_dim

# configs (what upstream stores next to the weights)

def gpt_config(version: str, *, scale: int = 1) -> dict:
    """The training yaml (s1longer.yaml / s1longer-v2.yaml) as the plain dict upstream stores."""
    sd_ = lambda d: scaled_dim(d, scale)  # noqa: E731
    vocab = sd_(1025)
    return {
        "train": {"seed": 1234, "epochs": 15, "batch_size": 8, "save_every_n_epoch": 1,
                  "precision": "16-mixed", "gradient_clip": 1.0},
        "optimizer": {"lr": 0.01, "lr_init": 0.00001, "lr_end": 0.0001, "warmup_steps": 2000,
                      "decay_steps": 40000},
        "data": {"max_eval_sample": 8, "max_sec": 54, "num_workers": 4, "pad_val": 1024},
        "model": {"vocab_size": vocab, "phoneme_vocab_size": 512 if version == "v1" else 732,
                  "embedding_dim": sd_(512), "hidden_dim": sd_(512), "head": 16,
                  "linear_units": sd_(2048), "n_layer": 24, "dropout": 0, "EOS": vocab - 1,
                  "random_bert": 0},
        "inference": {"top_k": 15},
    }


def gpt_export_config(version: str, *, scale: int = 1, exp: str = "demo") -> dict:
    cfg = gpt_config(version, scale=scale)
    cfg["train"].update({"if_save_latest": True, "if_save_every_weights": True, "if_dpo": False,
                         "half_weights_save_dir": "GPT_weights" if version == "v1" else f"GPT_weights_{version}",
                         "exp_name": exp})
    cfg["train_semantic_path"] = f"logs/{exp}/6-name2semantic.tsv"
    cfg["train_phoneme_path"] = f"logs/{exp}/2-name2text.txt"
    cfg["output_dir"] = f"logs/{exp}/logs_s1_{version}"
    cfg["pretrained_s1"] = "GPT_SoVITS/pretrained_models/" + {
        "v1": "s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt",
        "v2": "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"}.get(version, "s1v3.ckpt")
    return cfg


def sovits_config(version: str, *, scale: int = 1, exp: str | None = None, lora_rank: int | None = None) -> dict:
    """s2.json-like nested dict; with `exp` it carries the webui extras a training run adds."""
    sd_ = lambda d: scaled_dim(d, scale)  # noqa: E731
    pro_plus = version == "v2ProPlus"
    ups_ch = sd_(768 if pro_plus else 512)
    model = {
        "inter_channels": sd_(192), "hidden_channels": sd_(192), "filter_channels": sd_(768),
        "n_heads": 2, "n_layers": 6, "kernel_size": 3, "p_dropout": 0.1, "resblock": "1",
        "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
        "upsample_rates": [10, 8, 2, 2, 2], "upsample_initial_channel": ups_ch,
        "upsample_kernel_sizes": [20 if pro_plus else 16, 16, 8, 2, 2], "n_layers_q": 3,
        "use_spectral_norm": False, "gin_channels": sd_(1024 if "Pro" in version else 512),
        "semantic_frame_rate": "25hz", "freeze_quantizer": True,
    }
    cfg = {
        "train": {"log_interval": 100, "eval_interval": 500, "seed": 1234, "epochs": 100,
                  "learning_rate": 0.0001, "betas": [0.8, 0.99], "eps": 1e-09, "batch_size": 32,
                  "fp16_run": True, "lr_decay": 0.999875, "segment_size": 20480, "init_lr_ratio": 1,
                  "warmup_epochs": 0, "c_mel": 45, "c_kl": 1.0, "text_low_lr_rate": 0.4},
        "data": {"max_wav_value": 32768.0, "sampling_rate": 32000, "filter_length": 2048,
                 "hop_length": 640, "win_length": 2048, "n_mel_channels": 128, "mel_fmin": 0.0,
                 "mel_fmax": None, "add_blank": True, "n_speakers": 300, "cleaned_text": True},
        "model": model,
        "s2_ckpt_dir": "logs/s2/big2k1",
        "content_module": "cnhubert",
    }
    if exp is not None:
        wdir = "SoVITS_weights" if version == "v1" else f"SoVITS_weights_{version}"
        cfg["train"].update({
            "pretrained_s2G": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2G2333k.pth",
            "pretrained_s2D": "GPT_SoVITS/pretrained_models/gsv-v2final-pretrained/s2D2333k.pth",
            "if_save_latest": True, "if_save_every_weights": True, "save_every_epoch": 4,
            "gpu_numbers": "0", "grad_ckpt": False, "lora_rank": str(lora_rank or 32),
        })
        cfg["data"]["exp_dir"] = f"logs/{exp}"
        cfg["model"]["version"] = version
        cfg["s2_ckpt_dir"] = f"logs/{exp}"
        cfg["save_weight_dir"] = wdir
        cfg["name"] = exp
        cfg["version"] = version
    cfg["pretrain"] = None
    cfg["resume_step"] = None
    return cfg


def v1_pretrained_config(scale: int = 1) -> dict:
    """The HParams config of s2G488k.pth: keys train, data, model, s2_ckpt_dir, content_module,
    save_weight_dir, name, pretrain, resume_step."""
    cfg = sovits_config("v1", scale=scale)
    out = {k: cfg[k] for k in ("train", "data", "model", "s2_ckpt_dir", "content_module")}
    out.update({"save_weight_dir": "logs/s2/big2k1/weights", "name": "big2k1", "pretrain": None,
                "resume_step": None})
    return out


# utils.HParams: pickled under upstream's module name without ever importing a `utils` module

class HParams:
    """Attribute bag standing in for GPT-SoVITS's `utils.HParams` (nested sections are HParams)."""

    def __init__(self, **kwargs):
        for k, v in kwargs.items():
            self.__dict__[k] = HParams(**v) if isinstance(v, dict) else v

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()

    def __getitem__(self, key):
        return self.__dict__[key]

    def __contains__(self, key):
        return key in self.__dict__

    def __repr__(self):
        return repr(self.__dict__)


HPARAMS_GLOBAL = ("utils", "HParams")


class _UtilsPickler(OpaquePickler):
    """torch_writer's pure-Python pickler, also writing our HParams class as the global `utils.HParams`.

    The C pickler insists on importing the module to verify the name; writing the GLOBAL opcode
    ourselves (as torch_writer does for placeholders) avoids putting a fake `utils` into
    sys.modules even for a moment.
    """

    RENAMES = {HParams: HPARAMS_GLOBAL}  # so the writer's allow-list check sees the name it writes

    def save_global(self, obj, name=None):
        if obj is HParams:
            self._write_global(*HPARAMS_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


_UTILS_PICKLE = types.SimpleNamespace(Pickler=_UtilsPickler, __name__="gsvinspect_utils_pickle")


# low-level writers

def _save_bytes(obj, *, hparams: bool) -> bytes:
    torch = _torch()
    buf = io.BytesIO()
    if hparams:
        torch.save(obj, buf, pickle_module=_UTILS_PICKLE)
    else:
        torch.save(obj, buf)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_named(obj, path: Path, archive: str, *, hparams: bool) -> None:
    """torch.save into a file whose stem is `archive` (the zip's inner folder), then move it.

    The temporary file lives in a private folder next to `path`, so nothing is overwritten
    half-way and the final rename stays on one filesystem.
    """
    torch = _torch()
    tmpdir = path.parent / f".gsvsynth-{os.getpid()}-{id(obj):x}"
    tmpdir.mkdir(parents=True, exist_ok=False)
    tmp = tmpdir / f"{archive}.pth"
    try:
        if hparams:
            torch.save(obj, str(tmp), pickle_module=_UTILS_PICKLE)
        else:
            torch.save(obj, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
        tmpdir.rmdir()


def _timestamp_archive(seed: int) -> str:
    """my_save names its temp file `<time.time()>.pth`; a fixed, seed-derived stand-in."""
    return f"{1795562077 + seed * 7919}.{2032812 + seed:07d}"


def _my_save(obj, path: Path, seed: int, *, hparams: bool = False) -> None:
    _save_named(obj, path, _timestamp_archive(seed), hparams=hparams)


def _my_save2(obj, path: Path, header: bytes, *, hparams: bool) -> None:
    """Serialise to memory (archive/), overwrite the 'PK' signature with 2 ASCII digits."""
    data = bytearray(_save_bytes(obj, hparams=hparams))
    if len(header) != 2:
        raise UsageError(f"header must be 2 bytes, got {header!r}")
    data[0:2] = header
    _atomic_write(path, bytes(data))


def _plain_save(obj, path: Path, *, hparams: bool = False) -> None:
    """torch.save(obj, path): the inner folder is the file's stem."""
    _save_named(obj, path, path.stem or path.name, hparams=hparams)


SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


def write_safetensors(path, tensors, metadata: dict | None = None) -> Path:
    """The safetensors format by hand: u64 LE header length, JSON header, raw little-endian data."""
    torch = _torch()
    path = Path(path)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    chunks, offset = [], 0
    for key, t in tensors.items():
        name = str(t.dtype).removeprefix("torch.")
        if name not in SAFETENSORS_DTYPES:
            raise UsageError(f"safetensors cannot hold dtype {name} ({key})")
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[key] = {"dtype": SAFETENSORS_DTYPES[name], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    _atomic_write(path, struct.pack("<Q", len(blob)) + blob + b"".join(chunks))
    return path
