"""The object `torch.save` writes: computed tensors in place, config and scaler state materialised
from the inputs (pathlib objects as strings, HParams-like configs as plain dicts on request), and
`info` padded until GPT-SoVITS's size-based version detection reads the file right.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import ExportError
from ..load.safe_unpickle import Opaque
from .layouts import find_config
from .plan_data import ExportPlan

PADDING_NOTE = " [padded so GPT-SoVITS's size-based version detection reads it right]"


def _path_string(o: Opaque) -> str | None:
    """A pickled pathlib object as the string it stands for (FORMATS §11.10: write paths as str)."""
    if not (o.module == "pathlib" or o.module.startswith("pathlib.")) or not o.qualname.endswith("Path"):
        return None
    parts = [a for a in (o.args or ()) if isinstance(a, str)]
    if not parts and isinstance(o.state, tuple):
        parts = [p for p in o.state if isinstance(p, str)]
    if not parts:
        return ""
    if "Windows" in o.qualname:
        return str(PureWindowsPath(*parts))
    return str(PurePosixPath(*parts))


def materialize(ck, obj: Any, *, plain: bool, memo: dict | None = None) -> Any:
    """Copy a piece of ``ck.root`` for writing: tensors mapped from the file (no copy), pathlib
    objects as strings, other placeholders as plain dicts (`plain`) or unchanged."""
    def convert(o: Any) -> Any:
        if isinstance(o, Opaque):
            s = _path_string(o)
            if s is not None:
                return s
            if plain:
                return o.as_plain()
        return o

    return ck.materialize(obj, clone=False, convert=convert, memo=memo)



def _config_value(plan: ExportPlan) -> Any:
    for ck in (plan.ft, plan.pre):
        found = find_config(ck)
        if found is not None:
            cfg = materialize(ck, found[0], plain=plan.config_mode == "plain")
            return with_version(cfg, plan.version, sovits=plan.kind != "gpt")
    return None


def with_version(cfg: Any, version: str, *, sovits: bool) -> Any:
    """`cfg` with ``model.version`` (and, for SoVITS, the top-level ``version`` upstream's
    training hparams carry) set to `version`: where GPT-SoVITS's savers put it and other engines
    look for it (FORMATS §6). Placeholders (``--config keep``) are copied, never changed in place."""
    from ..meta import VERSIONS

    if version not in VERSIONS:
        return cfg
    fields = _fields(cfg)
    if fields is None:
        return cfg
    if isinstance(cfg, Opaque):
        cfg = _copy_opaque(cfg)
        fields = cfg.state
    model = fields.get("model")
    if isinstance(model, Opaque) and isinstance(model.state, dict):
        model = _copy_opaque(model)
        model.state["version"] = version
    elif isinstance(model, dict):
        model = type(model)(model)
        model["version"] = version
    elif model is None:
        model = {"version": version}
    else:
        return cfg
    fields["model"] = model
    if sovits:
        fields["version"] = version
    return cfg


def _fields(cfg: Any) -> dict | None:
    if isinstance(cfg, dict):
        return cfg
    if isinstance(cfg, Opaque) and not cfg.args and isinstance(cfg.state, dict):
        return cfg.state
    return None


def _copy_opaque(o: Opaque) -> Opaque:
    new = object.__new__(type(o))
    new.__dict__.update(o.__dict__)
    new.state = dict(o.state)
    return new


def _scaler_value(plan: ExportPlan) -> Any:
    ck = plan.ft if plan.scaler_from == "fine-tuned" else plan.pre
    return materialize(ck, ck.scaler.state, plain=False)


def _put(root: dict, path: tuple[str, ...], value: Any) -> None:
    node = root
    for p in path[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[path[-1]] = value


def build_object(plan: ExportPlan, weights: dict, info: str | None) -> Any:
    """The object `torch.save` will write, with `weights` (computed tensors) in place."""
    if plan.layout_choice == "same":
        ft = plan.ft
        memo: dict = {}
        root = OrderedDict() if plan.top_ordered else {}
        for name, value in ft.root.items():
            if name == plan.weights_container:
                root[name] = weights
            elif name in ("config", "hyper_parameters"):
                root[name] = materialize(ft, value, plain=plan.config_mode == "plain", memo=memo)
            else:
                root[name] = materialize(ft, value, plain=False, memo=memo)
        if plan.scaler_where and plan.scaler_from == "pretrained":
            _put(root, plan.scaler_where, _scaler_value(plan))
        return root
    root = OrderedDict() if plan.top_ordered else {}
    for e in plan.entries:
        if e.what == "weights":
            root[e.name] = weights
        elif e.what == "config":
            root[e.name] = _config_value(plan)
        elif e.what == "info":
            root[e.name] = info
        elif e.what == "lora_rank":
            root[e.name] = int(plan.lora_rank or 0)
        elif e.what == "copy":
            root[e.name] = materialize(plan.pre, plan.pre.root[e.name], plain=False)
        elif e.what == "scaler":
            _put(root, plan.scaler_where, _scaler_value(plan))
    return root



def _padded_info(info: str, pad: int) -> str:
    if pad <= 0:
        return info
    note = PADDING_NOTE
    return info + note + " " * max(0, pad - len(note.encode("utf-8")))


def fit_size(plan: ExportPlan, weights: dict, info: str | None) -> tuple[str | None, int]:
    """Pad `info` until the output lands in the size range GPT-SoVITS needs, or refuse."""
    from . import torch_writer

    lo, hi = plan.size_rule  # type: ignore[misc]
    size = torch_writer.saved_size(build_object(plan, weights, info))
    if hi is not None and size >= hi:
        raise ExportError(plan.ft_path, _size_explanation(plan, size))
    if size >= lo:
        return info, 0
    if info is None:
        raise ExportError(plan.ft_path, _size_explanation(plan, size) + " (no `info` entry to pad)")
    base_info = info
    pad = lo - size
    for _ in range(6):
        info = _padded_info(base_info, pad)
        size = torch_writer.saved_size(build_object(plan, weights, info))
        if size >= lo:
            if hi is not None and size >= hi:
                break
            return info, len(info.encode("utf-8")) - len(base_info.encode("utf-8"))
        pad += (lo - size) + 64  # the zip aligns each tensor record to 64 bytes
    raise ExportError(plan.ft_path, _size_explanation(plan, size))


def _size_explanation(plan: ExportPlan, size: int) -> str:
    lo, hi = plan.size_rule  # type: ignore[misc]
    what = "base G" if plan.layout_choice == "pretrained" else "SoVITS_weights export"
    rng = f"[{lo:,}, {hi:,})" if hi else f">= {lo:,}"
    extra = ""
    if plan.dtype_mode == "float":
        extra = "; use --dtype half"
    return (f"a {plan.version} {what} of {size:,} B would be misread by GPT-SoVITS's size-based version "
            f"detection (needs {rng} bytes, FORMATS §2.3){extra}")

