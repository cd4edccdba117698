"""One row of a scan: what a file is, read from its metadata only (nothing executed, no tensor data).

Epoch and step come from the file first and from the name second, and each says which:

* Lightning ``epoch`` (0-based in the file) and ``global_step``;
* ``G_*.pth``/``D_*.pth``: ``iteration`` holds the epoch (FORMATS.md §5), the step is in the name;
* exports: ``info`` strings ``<e>epoch_<s>iteration`` (SoVITS) and ``GPT-e<e>`` (GPT).

Epochs are shown as epochs *done* (1-based, the webui's ``-e<N>`` numbering): a Lightning file with
``epoch=14`` is epoch 15, like the ``GPT-e15`` export written at the same point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import GsvError, RefusedGlobalError
from ..meta import Layout

STAGES = ("pretrained", "s1 GPT", "s2 G", "s2 D", "exports", "other", "unreadable")

_STAGE = {
    Layout.GPT_PRETRAINED: "pretrained", Layout.SOVITS_G_PRETRAINED: "pretrained",
    Layout.SOVITS_D_PRETRAINED: "pretrained", Layout.VOCODER: "pretrained",
    Layout.GPT_LIGHTNING: "s1 GPT", Layout.SOVITS_G_TRAIN: "s2 G", Layout.SOVITS_G_LORA_TRAIN: "s2 G",
    Layout.SOVITS_D_TRAIN: "s2 D", Layout.GPT_WEIGHTS: "exports", Layout.SOVITS_WEIGHTS: "exports",
    Layout.SOVITS_WEIGHTS_LORA: "exports",
}
_MODEL = {
    Layout.GPT_PRETRAINED: "gpt", Layout.GPT_LIGHTNING: "gpt", Layout.GPT_WEIGHTS: "gpt",
    Layout.SOVITS_G_PRETRAINED: "sovits-G", Layout.SOVITS_G_TRAIN: "sovits-G", Layout.SOVITS_WEIGHTS: "sovits-G",
    Layout.SOVITS_D_PRETRAINED: "sovits-D", Layout.SOVITS_D_TRAIN: "sovits-D",
    Layout.SOVITS_G_LORA_TRAIN: "sovits-G-lora", Layout.SOVITS_WEIGHTS_LORA: "sovits-G-lora",
    Layout.VOCODER: "vocoder",
}
# config entry naming the base a fine-tune was trained from
CONFIG_BASE_KEY = {"gpt": "pretrained_s1", "sovits-G": "pretrained_s2G", "sovits-D": "pretrained_s2D",
                   "sovits-G-lora": "pretrained_s2G"}
LATEST_STEP = 233333333333          # G_/D_ name when the webui keeps only the latest checkpoint


@dataclass
class ScanEntry:
    """One file of a scan (``error`` set: it could not be read; only path/size/group are known)."""

    path: Path
    size: int = 0
    layout: str | None = None
    version: str | None = None
    container: str | None = None
    model: str | None = None
    stage: str = "other"
    experiment: str = ""
    epoch: int | None = None
    step: int | None = None
    epoch_from: str | None = None          # "file" | "name"
    step_from: str | None = None
    dtypes: dict[str, int] = field(default_factory=dict)    # dtype -> bytes of weights
    n_tensors: int = 0
    scaler: bool | None = None
    base_use: str = ""                     # yes / risky / no / not directly ..., with the reason
    missing: list[str] = field(default_factory=list)     # top-level modules a base of its kind has
    config_base: str | None = None         # pretrained path named in its config
    error: str | None = None
    refused: bool = False
    base: str | None = None                # path of the base it came from (relations)
    base_rule: str | None = None
    copy_of: str | None = None             # export: path of the training checkpoint it copies
    copy_note: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["path"] = str(self.path)
        return d


def _plain(o: Any, depth: int = 0) -> Any:
    if depth > 6:
        return None
    if hasattr(o, "as_plain") and hasattr(o, "fullname"):
        return _plain(o.as_plain(), depth + 1)
    if isinstance(o, dict):
        return {str(k): _plain(v, depth + 1) for k, v in o.items()}
    return o


def _int(v) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


# upstream's info strings; `gsvinspect export` writes the same followed by " (gsvinspect …)"
_INFO_SOVITS = re.compile(r"(\d+)epoch_(\d+)iteration\b")
_INFO_GPT = re.compile(r"GPT-e(\d+)\b")
_NAME_LIGHTNING = re.compile(r"epoch=(\d+)-step=(\d+)")
_NAME_SOVITS = re.compile(r"_e(\d+)_s(\d+)(?:_l\d+)?$")
_NAME_GPT = re.compile(r"-e(\d+)$")
_NAME_GD = re.compile(r"^[GD]_(\d+)$")


def epoch_step_from_file(layout: Layout, extras: dict) -> tuple[int | None, int | None]:
    """(epochs done, step) as the file itself records them."""
    if layout == Layout.GPT_LIGHTNING:
        e = _int(extras.get("epoch"))
        return (None if e is None else e + 1), _int(extras.get("global_step"))
    if layout in (Layout.SOVITS_G_TRAIN, Layout.SOVITS_D_TRAIN, Layout.SOVITS_G_LORA_TRAIN):
        return _int(extras.get("iteration")), None
    info = extras.get("info")
    if isinstance(info, str):
        m = _INFO_SOVITS.match(info)
        if m:
            return int(m.group(1)), int(m.group(2))
        m = _INFO_GPT.match(info)
        if m:
            return int(m.group(1)), None
    return None, None


def epoch_step_from_name(path: Path) -> tuple[int | None, int | None]:
    stem = path.stem
    m = _NAME_LIGHTNING.search(stem)
    if m:
        return int(m.group(1)) + 1, int(m.group(2))
    m = _NAME_SOVITS.search(stem)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = _NAME_GD.match(stem)
    if m:
        step = int(m.group(1))
        return None, (None if step == LATEST_STEP else step)
    m = _NAME_GPT.search(stem)
    if m:
        return int(m.group(1)), None
    return None, None


def experiment_of(path: Path, stage: str, config: dict | None) -> str:
    """The experiment a file belongs to: its config's name, else the folder layout of the webui."""
    if stage == "pretrained":
        return "pretrained"
    if isinstance(config, dict):
        for k in ("exp_name",):
            v = (config.get("train") or {}).get(k) if isinstance(config.get("train"), dict) else None
            if isinstance(v, str) and v:
                return v
        v = config.get("name")
        if isinstance(v, str) and v and stage == "exports":
            return v
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "logs" and i + 2 < len(parts) and parts[i + 2].startswith("logs_s"):
            return parts[i + 1]
    if parts[-2:-1] and re.match(r"^(GPT|SoVITS)_weights", parts[-2]):
        stem = path.stem
        m = _NAME_SOVITS.search(stem) or _NAME_GPT.search(stem)
        if m:
            return stem[:m.start()]
    return path.parent.name


@lru_cache(maxsize=None)
def _expected_modules(model: str, version: str) -> dict[str, int]:
    from ..load.manifest import model_entries

    out: dict[str, int] = {}
    try:
        entries = model_entries(model, version)
    except GsvError:
        return out
    for e in entries:
        top = e.key.split(".", 1)[0]
        out[top] = out.get(top, 0) + 1
    return out


def top_module(key: str) -> str:
    """First key component, after DDP's ``module.`` (GPT keys keep ``model.``: it is the net)."""
    key = key.removeprefix("module.")
    if key.startswith("model."):
        parts = key.split(".", 2)
        return ".".join(parts[:2])
    return key.split(".", 1)[0]


def missing_modules(model: str | None, version: str | None, keys) -> list[str]:
    """Top-level modules a base of this kind and version has and these keys lack (e.g. enc_q)."""
    if model not in ("sovits-G", "sovits-D", "gpt") or not version:
        return []
    expected = _expected_modules(model, version)
    present = {k.removeprefix("module.").split(".", 1)[0] for k in keys}
    return [f"{m} ({n} keys)" for m, n in expected.items() if m not in present]


def read_entry(path: Path, *, trust: bool = False, keep_open: bool = False):
    """(ScanEntry, open Checkpoint or None). Any failure becomes the entry's one-line error."""
    from ..load.checkpoint import open_checkpoint
    from ..load.detect import base_verdict

    e = ScanEntry(path=path)
    try:
        e.size = path.stat().st_size
    except OSError:
        pass
    try:
        ck = open_checkpoint(path, trust=trust)
    except RefusedGlobalError as exc:
        e.error, e.refused = exc.problem, True
    except GsvError as exc:
        e.error = getattr(exc, "problem", None) or str(exc)
    except (MemoryError, RecursionError) as exc:
        e.error = f"cannot be read ({type(exc).__name__})"
    except Exception as exc:  # a loader bug must not stop the scan: one row, named
        e.error = f"internal error while reading: {type(exc).__name__}: {exc}"
    if e.error is not None:
        e.stage = "unreadable"
        e.experiment = experiment_of(path, "unreadable", None)
        return e, None
    try:
        _fill(e, ck, base_verdict(ck))
    except Exception as exc:
        e.error = f"internal error while describing: {type(exc).__name__}: {exc}"
        e.stage = "unreadable"
    if not keep_open:
        ck.close()
        ck = None
    return e, ck


def _fill(e: ScanEntry, ck, verdict: str) -> None:
    layout = Layout(ck.layout)
    e.layout, e.version, e.container = layout.value, ck.version, ck.container
    e.model = _MODEL.get(layout)
    e.stage = _STAGE.get(layout, "other")
    extras = ck.extras
    config = _plain(extras.get("config"))
    if config is None and isinstance(extras.get("hyper_parameters"), dict):
        config = _plain(extras["hyper_parameters"].get("config"))
    e.experiment = experiment_of(e.path, e.stage, config if isinstance(config, dict) else None)
    fe, fs = epoch_step_from_file(layout, extras)
    ne, ns = epoch_step_from_name(e.path)
    e.epoch, e.epoch_from = (fe, "file") if fe is not None else ((ne, "name") if ne is not None else (None, None))
    e.step, e.step_from = (fs, "file") if fs is not None else ((ns, "name") if ns is not None else (None, None))
    e.dtypes = ck.bytes_by_dtype()
    e.n_tensors = len(ck.weights)
    e.scaler = ck.scaler is not None
    e.base_use = verdict
    if e.stage in ("exports", "pretrained"):
        e.missing = missing_modules(e.model, e.version, ck.weights)
    if isinstance(config, dict) and e.model in CONFIG_BASE_KEY:
        key = CONFIG_BASE_KEY[e.model]
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        v = config.get(key) or train.get(key)
        e.config_base = v if isinstance(v, str) and v else None
