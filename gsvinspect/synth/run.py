"""Whole GPT-SoVITS training-run trees with a drift that is known in advance (for ``scan`` tests,
the run demo and the scan bench).

``write_run(dir, version="v2", *, exp="myvoice", epochs=(2, 4, 6, 8), scale=16, strength=0.02,
language="en", language_strength=0.25, nan_at=None, jump_at=None, seed=0) -> RunTree``

lays out what the webui leaves behind after one fine-tune (FORMATS.md §3, §5, §6):

* ``pretrained_models/…``: the official GPT, SoVITS G and (where it exists) D of ``version``;
* ``logs/<exp>/logs_s1_<v>/ckpt/epoch=<e-1>-step=<S>.ckpt``: Lightning checkpoints with GradScaler
  state (``epoch`` is 0-based in the file);
* ``logs/<exp>/logs_s2_<v>/G_<S>.pth`` and ``D_<S>.pth``: ``iteration`` holds the epoch;
* ``GPT_weights_<v>/<exp>-e<e>.ckpt`` and ``SoVITS_weights_<v>/<exp>_e<e>_s<S>.pth``: the fp16
  exports the webui writes at the same save points (the weights of the training checkpoint of that
  epoch, cast to fp16, ``enc_q`` dropped), so each is a copy of one training checkpoint.

The drift is linear in the epoch: with ``E = max(epochs)``, the weights at epoch ``e`` are
``start + (e / E) * D``, where ``start`` is the fp16 base upcast to fp32 (what training loads) and
``D`` a fixed random direction of relative size ``strength`` per tensor. The phoneme-embedding rows
of ``language`` move by ``language_strength`` instead, the other rows not at all (bit-identical). So a checkpoint's
change from its base is ``(e / E) * strength`` and its change from the previous checkpoint
``(e - e_prev) / E * strength``; ``jump_at=e`` adds an extra ``3 * strength`` step at epoch ``e``
(and every later epoch keeps it), and ``nan_at=e`` puts NaN into one tensor of every checkpoint
from epoch ``e`` on (``RunTree.nan_key`` names it).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..load.manifest import D_VERSIONS
from ..meta import Layout
from .containers import _atomic_write
from .layouts import write_checkpoint
from .pairs import _loaded_from_fp16, _weights_dir, pretrained_relpath, symbol_rows
from .weights import cast, fine_tune, state_dict

STEPS_PER_EPOCH = {"gpt": 12, "sovits": 25}
NAN_KEYS = {"gpt": "model.h.layers.3.linear1.weight", "sovits-G": "dec.conv_pre.weight",
            "sovits-D": "discriminators.1.convs.0.weight_v"}


@dataclass
class RunTree:
    """What write_run put where, and what a scan must find."""

    root: Path
    version: str
    exp: str
    epochs: tuple[int, ...]
    strength: float
    language: str
    language_strength: float
    nan_at: int | None
    jump_at: int | None
    pretrained: dict[str, Path] = field(default_factory=dict)      # model -> path
    training: dict[str, list[Path]] = field(default_factory=dict)   # gpt / sovits-G / sovits-D -> per epoch
    exports: dict[str, list[Path]] = field(default_factory=dict)    # gpt / sovits-G -> per epoch
    nan_key: dict[str, str] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)

    def progress_at(self, epoch: int) -> float:
        """How far along the direction D the weights of `epoch` are: e / E, plus 3 after a jump."""
        jump = 3.0 if self.jump_at is not None and epoch >= self.jump_at else 0.0
        return epoch / max(self.epochs) + jump

    def expected_rel_from_base(self, epoch: int) -> float:
        """Relative change from the base a plain (non-embedding) tensor has at `epoch`."""
        return self.progress_at(epoch) * self.strength

    def expected_language_from_base(self, epoch: int) -> float:
        """Relative change from the base of the moving language's phoneme rows at `epoch`."""
        return self.progress_at(epoch) * self.language_strength

    def files(self) -> list[Path]:
        out = list(self.pretrained.values())
        for paths in (*self.training.values(), *self.exports.values()):
            out.extend(paths)
        return out


def _direction(start, *, seed: int, strength: float, rows, language_strength: float):
    """D: the fixed change direction (fine_tune of the start point minus the start point)."""
    tables = {"enc_p.text_embedding.": 0.0, "model.ar_text_embedding.": 0.0}   # only `rows` move there
    moved = fine_tune(start, seed=seed, strength=strength, module_strength=tables, rows=rows,
                      row_strength=language_strength)
    return OrderedDict((k, moved[k] - v) if v.is_floating_point() else (k, None) for k, v in start.items())


def _at(start, direction, t: float, extra: float, nan_key: str | None):
    """start + (t + extra) * D, NaN in `nan_key` when given."""
    out = OrderedDict()
    for k, v in start.items():
        d = direction[k]
        out[k] = v.clone() if d is None else v + (t + extra) * d
        if nan_key is not None and k == nan_key:
            flat = out[k].view(-1)
            flat[:: max(1, flat.numel() // 7)] = float("nan")
    return out


def _trajectory(model: str, version: str, run: RunTree, *, scale: int, seed: int, rows):
    base = state_dict(model, version, scale=scale, seed=seed)
    start = _loaded_from_fp16(base)
    emb_rows = rows if model != "sovits-D" else None
    direction = _direction(start, seed=seed + 7, strength=run.strength, rows=emb_rows,
                           language_strength=run.language_strength)
    e_max = max(run.epochs)
    key = NAN_KEYS[model]
    if key not in start:
        raise UsageError(f"write_run: {key} is not in the {model} {version} manifest")
    run.nan_key[model] = key
    for e in run.epochs:
        jump = 3.0 if run.jump_at is not None and e >= run.jump_at else 0.0
        nan = key if run.nan_at is not None and e >= run.nan_at else None
        yield e, base, _at(start, direction, e / e_max, jump, nan)


def write_run(dir, version: str = "v2", *, exp: str = "myvoice", epochs=(2, 4, 6, 8), scale: int = 16,
              strength: float = 0.02, language: str = "en", language_strength: float = 0.25,
              nan_at: int | None = None, jump_at: int | None = None, seed: int = 0) -> RunTree:
    """Write a whole run tree under `dir` (see the module docstring); returns its RunTree."""
    epochs = tuple(sorted(int(e) for e in epochs))
    if not epochs or epochs[0] < 1:
        raise UsageError("write_run: epochs must be positive integers")
    for name, e in (("nan_at", nan_at), ("jump_at", jump_at)):
        if e is not None and e not in epochs:
            raise UsageError(f"write_run: {name}={e} is not one of the epochs {epochs}")
    root = Path(dir)
    run = RunTree(root, version, exp, epochs, strength, language, language_strength, nan_at, jump_at)
    rows = symbol_rows(version, language)
    _write_gpt(run, scale=scale, seed=seed, rows=rows)
    _write_sovits(run, scale=scale, seed=seed, rows=rows)
    _atomic_write(root / "gsvinspect-run.json", json.dumps({
        "version": version, "exp": exp, "epochs": list(epochs), "strength": strength, "language": language,
        "language_strength": language_strength, "nan_at": nan_at, "jump_at": jump_at}, indent=1).encode())
    return run


def _write_gpt(run: RunTree, *, scale: int, seed: int, rows) -> None:
    v, exp, root = run.version, run.exp, run.root
    # the trained GPT of v3/v4/v2Pro starts from s1v3.ckpt, which carries the v2 phoneme table
    run.training["gpt"], run.exports["gpt"], run.steps["gpt"] = [], [], []
    for e, base, w in _trajectory("gpt", v, run, scale=scale, seed=seed, rows=rows):
        if "gpt" not in run.pretrained:
            run.pretrained["gpt"] = write_checkpoint(root / pretrained_relpath("gpt", v), Layout.GPT_PRETRAINED,
                                                     v, weights=base, scale=scale, seed=seed)
        step = e * STEPS_PER_EPOCH["gpt"]
        ck = root / "logs" / exp / f"logs_s1_{v}" / "ckpt" / f"epoch={e - 1}-step={step}.ckpt"
        run.training["gpt"].append(write_checkpoint(ck, Layout.GPT_LIGHTNING, v, weights=w, scale=scale,
                                                    seed=seed + e, epoch=e - 1, step=step, optimizer="light"))
        ex = root / _weights_dir(v, "GPT_weights") / f"{exp}-e{e}.ckpt"
        run.exports["gpt"].append(write_checkpoint(ex, Layout.GPT_WEIGHTS, v, weights=cast(w, "float16"),
                                                   scale=scale, seed=seed + e, epoch=e - 1))
        run.steps["gpt"].append(step)


def _write_sovits(run: RunTree, *, scale: int, seed: int, rows) -> None:
    v, exp, root = run.version, run.exp, run.root
    models = ["sovits-G"] + (["sovits-D"] if v in D_VERSIONS else [])
    run.exports["sovits-G"] = []
    for model in models:
        layout_pre = Layout.SOVITS_G_PRETRAINED if model == "sovits-G" else Layout.SOVITS_D_PRETRAINED
        layout_train = Layout.SOVITS_G_TRAIN if model == "sovits-G" else Layout.SOVITS_D_TRAIN
        run.training[model], run.steps[model] = [], []
        for e, base, w in _trajectory(model, v, run, scale=scale, seed=seed + 1, rows=rows):
            if model not in run.pretrained:
                run.pretrained[model] = write_checkpoint(root / pretrained_relpath(model, v), layout_pre, v,
                                                         weights=base, scale=scale, seed=seed + 1)
            step = e * STEPS_PER_EPOCH["sovits"]
            letter = "G" if model == "sovits-G" else "D"
            path = root / "logs" / exp / f"logs_s2_{v}" / f"{letter}_{step}.pth"
            run.training[model].append(write_checkpoint(path, layout_train, v, weights=w, scale=scale,
                                                        seed=seed + e, iteration=e, step=step,
                                                        optimizer="light"))
            run.steps[model].append(step)
            if model == "sovits-G":
                ex = root / _weights_dir(v, "SoVITS_weights") / f"{exp}_e{e}_s{step}.pth"
                run.exports[model].append(write_checkpoint(ex, Layout.SOVITS_WEIGHTS, v, weights=w, scale=scale,
                                                           seed=seed + e, iteration=e, step=step))
