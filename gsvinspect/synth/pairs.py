"""Pairs laid out like a GPT-SoVITS install, and the demo set."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

from ..errors import UsageError
from ..meta import Layout
from .containers import _atomic_write
from .layouts import write_checkpoint
from .weights import _canonical_key, cast, fine_tune, state_dict

# pairs and the demo

PAIR_KINDS = ("gpt", "gpt-export", "sovits-G", "sovits-G-export", "sovits-D", "sovits-G-ddp", "sovits-G-lora")

_PRETRAINED_NAMES = {
    "gpt": {"v1": "s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt",
            "v2": "s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"},
    "sovits-G": {"v1": "s2G488k.pth", "v2": "gsv-v2final-pretrained/s2G2333k.pth",
                 "v3": "s2Gv3.pth", "v4": "gsv-v4-pretrained/s2Gv4.pth",
                 "v2Pro": "v2Pro/s2Gv2Pro.pth", "v2ProPlus": "v2Pro/s2Gv2ProPlus.pth"},
    "sovits-D": {"v1": "s2D488k.pth", "v2": "gsv-v2final-pretrained/s2D2333k.pth",
                 "v2Pro": "v2Pro/s2Dv2Pro.pth", "v2ProPlus": "v2Pro/s2Dv2ProPlus.pth"},
}


def pretrained_relpath(model: str, version: str) -> str:
    """Where upstream keeps the official pretrained file of `model` (under pretrained_models/)."""
    names = _PRETRAINED_NAMES[model]
    return "pretrained_models/" + names.get(version, "s1v3.ckpt" if model == "gpt" else f"s2X{version}.pth")


def _loaded_from_fp16(sd) -> OrderedDict:
    """What training starts from: the fp16 pretrained weights, upcast to fp32."""
    return cast(cast(sd, "float16"), "float32")


def _weights_dir(version: str, stem: str) -> str:
    return stem if version == "v1" else f"{stem}_{version}"


def write_pair(dir, kind: str, version: str, *, scale: int = 8, seed: int = 0,
               strength: float = 0.01, **options) -> tuple[Path, Path]:
    """(pretrained_path, finetuned_path) laid out like a GPT-SoVITS install under `dir`.

    kinds: gpt (pretrained vs Lightning ckpt with scaler), gpt-export (pretrained vs GPT_weights),
    sovits-G (pretrained vs G_*.pth), sovits-G-export (pretrained vs SoVITS_weights, enc_q gone),
    sovits-D, sovits-G-ddp (G_*.pth with keys prefixed "module."), sovits-G-lora (v3/v4 pretrained
    vs LoRA G_*.pth). `options` go to write_checkpoint of the fine-tuned file.
    """
    if kind not in PAIR_KINDS:
        raise UsageError(f"unknown pair kind {kind!r}; known: {', '.join(PAIR_KINDS)}")
    root = Path(dir)
    exp = f"synth_{kind.replace('-', '_')}"
    if kind.startswith("gpt"):
        base = state_dict("gpt", version, scale=scale, seed=seed)
        pre = write_checkpoint(root / pretrained_relpath("gpt", version), Layout.GPT_PRETRAINED, version,
                               weights=base, scale=scale, seed=seed)
        ft = fine_tune(_loaded_from_fp16(base), seed=seed + 1, strength=strength)
        if kind == "gpt":
            path = root / "logs" / exp / f"logs_s1_{version}" / "ckpt" / "epoch=14-step=1500.ckpt"
            out = write_checkpoint(path, Layout.GPT_LIGHTNING, version, weights=ft, scale=scale,
                                   seed=seed + 1, **options)
        else:
            path = root / _weights_dir(version, "GPT_weights") / f"{exp}-e15.ckpt"
            out = write_checkpoint(path, Layout.GPT_WEIGHTS, version, weights=ft, scale=scale,
                                   seed=seed + 1, **options)
        return pre, out
    if kind == "sovits-D":
        base = state_dict("sovits-D", version, scale=scale, seed=seed)
        pre = write_checkpoint(root / pretrained_relpath("sovits-D", version), Layout.SOVITS_D_PRETRAINED,
                               version, weights=base, scale=scale, seed=seed)
        ft = fine_tune(_loaded_from_fp16(base), seed=seed + 1, strength=strength)
        path = root / "logs" / exp / f"logs_s2_{version}" / "D_1000.pth"
        return pre, write_checkpoint(path, Layout.SOVITS_D_TRAIN, version, weights=ft, scale=scale,
                                     seed=seed + 1, **options)
    base = state_dict("sovits-G", version, scale=scale, seed=seed)
    pre = write_checkpoint(root / pretrained_relpath("sovits-G", version), Layout.SOVITS_G_PRETRAINED,
                           version, weights=base, scale=scale, seed=seed)
    if kind == "sovits-G-lora":
        rank = int(options.pop("lora_rank", 32))
        lora = state_dict("sovits-G-lora", version, scale=scale, seed=seed, rank=rank)
        start = _loaded_from_fp16(base)
        for k in lora:
            plain = _canonical_key(k)
            if plain in start:
                lora[k] = start[plain]
        trainable = {k: 0.02 for k in ("ref_enc", "bridge", "wns1", "linear_mel")}
        ft = fine_tune(lora, seed=seed + 1, strength=0.0, module_strength=trainable)
        path = root / "logs" / exp / f"logs_s2_{version}_lora_{rank}" / "G_1000.pth"
        return pre, write_checkpoint(path, Layout.SOVITS_G_LORA_TRAIN, version, weights=ft, scale=scale,
                                     seed=seed + 1, lora_rank=rank, **options)
    ft = fine_tune(_loaded_from_fp16(base), seed=seed + 1, strength=strength,
                   rename_prefix="module." if kind == "sovits-G-ddp" else None)
    if kind == "sovits-G-export":
        path = root / _weights_dir(version, "SoVITS_weights") / f"{exp}_e8_s1000.pth"
        return pre, write_checkpoint(path, Layout.SOVITS_WEIGHTS, version, weights=ft, scale=scale,
                                     seed=seed + 1, **options)
    path = root / "logs" / exp / f"logs_s2_{version}" / "G_1000.pth"
    return pre, write_checkpoint(path, Layout.SOVITS_G_TRAIN, version, weights=ft, scale=scale,
                                 seed=seed + 1, **options)


def symbol_rows(version: str, languages) -> list[int]:
    """Phoneme-embedding rows whose symbol belongs to one of `languages` (symbols.json tags)."""
    from ..load.symbols import symbols

    langs = {languages} if isinstance(languages, str) else set(languages)
    return [s.index for s in symbols("v1" if version == "v1" else "v2") if s.language in langs]


DEMO_SCALE = 4
DEMO_FILES = {
    "sovits_pretrained": "pretrained_models/gsv-v2final-pretrained/s2G2333k.pth",
    "sovits_finetune": "logs/demo/logs_s2_v2/G_2000.pth",
    "sovits_export": "SoVITS_weights_v2/demo_e8_s2000.pth",
    "gpt_pretrained": "pretrained_models/gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
    "gpt_finetune": "logs/demo/logs_s1_v2/ckpt/epoch=14-step=1500.ckpt",
}
DEMO_MARKER = "gsvinspect-demo.json"


def write_demo(dir) -> dict[str, Path]:
    """The demo set: v2 SoVITS pretrained G, a DDP-prefixed G_*.pth fine-tune (needs a
    "strip module." rule to align), its SoVITS_weights export (no enc_q), and a v2 GPT pretrained
    + Lightning ckpt with MixedPrecision scaler state. English phoneme rows move strongly, the
    other rows barely; decoder/flow layers more than the rest. Re-uses a complete earlier set.
    """
    root = Path(dir)
    paths = {name: root / rel for name, rel in DEMO_FILES.items()}
    marker = root / DEMO_MARKER
    if marker.is_file():
        try:
            sizes = json.loads(marker.read_text())
            if all(paths[n].is_file() and paths[n].stat().st_size == sizes.get(n) for n in paths):
                return paths
        except (ValueError, OSError):
            pass
    version, scale = "v2", DEMO_SCALE
    en_rows = symbol_rows(version, "en")

    g_base = state_dict("sovits-G", version, scale=scale, seed=0)
    write_checkpoint(paths["sovits_pretrained"], Layout.SOVITS_G_PRETRAINED, version, weights=g_base, scale=scale)
    g_ft = fine_tune(_loaded_from_fp16(g_base), seed=1, strength=0.005,
                     module_strength={"dec.": 0.03, "flow.": 0.02, "enc_q.": 0.02, "ref_enc.": 0.03,
                                      "enc_p.text_embedding": 0.002, "quantizer.": 0.0, "enc_p.ssl_proj": 0.0},
                     rows=en_rows, row_strength=0.2)
    ddp = OrderedDict(("module." + k, v) for k, v in g_ft.items())
    write_checkpoint(paths["sovits_finetune"], Layout.SOVITS_G_TRAIN, version, weights=ddp, scale=scale,
                     seed=1, iteration=8, step=2000)
    write_checkpoint(paths["sovits_export"], Layout.SOVITS_WEIGHTS, version, weights=g_ft, scale=scale,
                     seed=2, iteration=8, step=2000)

    gpt_base = state_dict("gpt", version, scale=scale, seed=0)
    write_checkpoint(paths["gpt_pretrained"], Layout.GPT_PRETRAINED, version, weights=gpt_base, scale=scale)
    gpt_ft = fine_tune(_loaded_from_fp16(gpt_base), seed=1, strength=0.004,
                       module_strength={"model.h.": 0.02, "model.ar_text_embedding": 0.001},
                       rows=en_rows, row_strength=0.15)
    write_checkpoint(paths["gpt_finetune"], Layout.GPT_LIGHTNING, version, weights=gpt_ft, scale=scale,
                     epoch=14, step=1500, amp_scaler=True)
    _atomic_write(marker, json.dumps({n: p.stat().st_size for n, p in paths.items()}, indent=1).encode())
    return paths
