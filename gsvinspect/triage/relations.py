"""How the files of a scan relate: the base each fine-tune came from, and exports that are copies.

Base (``tie_bases``), rules tried in order, the one that matched is recorded:

1. ``config``: the file's config names its pretrained file (``pretrained_s2G``/``pretrained_s2D``
   of a SoVITS export, ``pretrained_s1`` of a GPT export) and a scanned pretrained file has that
   name (the longest matching path tail wins);
2. ``same keys and version``: the one scanned pretrained file of the same model and version whose
   keys and shapes equal the file's (``module.`` prefixes ignored; an export's dropped ``enc_q``
   ignored).

Copies (``find_copies``): an export is a copy of a training checkpoint of the same model when its
keys and shapes are a subset of the training file's (cheap, metadata only) and then sampled
tensors hold the same values once the training tensor is cast to the export's dtype (fp32 → fp16
rounds to nearest, as ``.half()`` does). Candidates with the same epoch/step are tried first, so
a run normally costs one comparison per export. ``SAMPLE`` tensors spread over the file (taken
among those of at most 64K elements, so a full-size file costs no more than a small one) are
compared in full: two checkpoints trained apart never agree on them bit for bit.
"""

from __future__ import annotations

from pathlib import PurePath

from .entry import ScanEntry

SAMPLE = 6
SAMPLE_MAX_NUMEL = 1 << 16    # sampled tensors are taken among the small ones (biases, norms, convs)
_DROPPED_BY_EXPORT = ("enc_q.",)


def canonical(key: str) -> str:
    return key.removeprefix("module.")


def _signature(weights, *, drop_export: bool) -> frozenset:
    out = []
    for k, t in weights.items():
        c = canonical(k)
        if drop_export and c.startswith(_DROPPED_BY_EXPORT):
            continue
        out.append((c, tuple(t.shape)))
    return frozenset(out)


def _tail_match(a: str, b: str) -> int:
    """How many trailing path components two paths share."""
    pa, pb = PurePath(a.replace("\\", "/")).parts, PurePath(str(b)).parts
    n = 0
    while n < min(len(pa), len(pb)) and pa[-1 - n] == pb[-1 - n]:
        n += 1
    return n


def tie_bases(entries: list[ScanEntry], cks: dict) -> None:
    """Set ``base``/``base_rule`` on every readable fine-tuned entry (cks: path -> open Checkpoint)."""
    pretrained = [e for e in entries if e.ok and e.stage == "pretrained" and e.path in cks]
    sigs = {e.path: _signature(cks[e.path].weights, drop_export=True) for e in pretrained}
    for e in entries:
        if not e.ok or e.stage in ("pretrained", "unreadable") or e.path not in cks:
            continue
        same_model = [p for p in pretrained if p.model == e.model or
                      (e.model == "sovits-G-lora" and p.model == "sovits-G")]
        if e.config_base:
            scored = sorted(((_tail_match(e.config_base, p.path), p) for p in same_model),
                            key=lambda sp: -sp[0])
            if scored and scored[0][0] >= 1 and (len(scored) == 1 or scored[0][0] > scored[1][0]):
                e.base, e.base_rule = str(scored[0][1].path), f"config ({e.config_base})"
                continue
        mine = _signature(cks[e.path].weights, drop_export=True)
        hits = [p for p in same_model if p.version == e.version and sigs[p.path] == mine]
        if len(hits) == 1:
            note = f"; config names {e.config_base}, not scanned" if e.config_base else ""
            e.base, e.base_rule = str(hits[0].path), f"same keys and version{note}"
        elif len(hits) > 1:
            e.base_rule = "ambiguous: " + ", ".join(str(p.path) for p in hits)
        elif e.config_base:
            e.base_rule = f"config names {e.config_base}, not scanned"


def _sample_keys(keys: list[str], n: int = SAMPLE) -> list[str]:
    if len(keys) <= n:
        return keys
    step = (len(keys) - 1) / (n - 1)
    return [keys[round(i * step)] for i in range(n)]


def same_values(exp_ck, exp_key: str, tr_ck, tr_key: str) -> bool:
    """The export's tensor equals the training tensor cast to the export's dtype, bit for bit."""
    import numpy as np

    a, b = exp_ck.weights[exp_key], tr_ck.weights[tr_key]
    if a.shape != b.shape:
        return False
    x, y = exp_ck.array(exp_key), tr_ck.array(tr_key)
    if a.dtype == b.dtype:
        return x.tobytes() == y.tobytes()
    if a.dtype == "float16" and b.dtype == "float32":
        with np.errstate(over="ignore", invalid="ignore"):
            return np.ascontiguousarray(x).view(np.uint16).tobytes() == \
                np.asarray(y, dtype=np.float32).astype(np.float16).view(np.uint16).tobytes()
    return False


def find_copies(entries: list[ScanEntry], cks: dict) -> None:
    """Set ``copy_of``/``copy_note`` on exports that hold a training checkpoint's weights."""
    training = [e for e in entries if e.ok and e.stage in ("s1 GPT", "s2 G") and e.path in cks]
    for ex in entries:
        if not ex.ok or ex.stage != "exports" or ex.path not in cks or ex.model not in ("gpt", "sovits-G"):
            continue
        ex_ck = cks[ex.path]
        ex_map = {canonical(k): k for k, t in ex_ck.weights.items()}
        cands = [t for t in training if t.model == ex.model]
        cands.sort(key=lambda t: (t.experiment != ex.experiment, t.epoch != ex.epoch, t.step != ex.step))
        floats = [k for k, t in ex_ck.weights.items() if t.dtype in ("float16", "float32")
                  and t.numel <= SAMPLE_MAX_NUMEL] or \
            [k for k, t in ex_ck.weights.items() if t.dtype in ("float16", "float32")]
        for tr in cands:
            tr_ck = cks[tr.path]
            tr_map = {canonical(k): k for k in tr_ck.weights}
            if not all(c in tr_map and tuple(tr_ck.weights[tr_map[c]].shape) == tuple(ex_ck.weights[k].shape)
                       for c, k in ex_map.items()):
                continue
            sample = _sample_keys(floats)
            if sample and all(same_values(ex_ck, k, tr_ck, tr_map[canonical(k)]) for k in sample):
                ex.copy_of = str(tr.path)
                for attr in ("epoch", "step"):
                    if getattr(ex, attr) is None and getattr(tr, attr) is not None:
                        setattr(ex, attr, getattr(tr, attr))
                        setattr(ex, attr + "_from", "copy")
                ex.copy_note = (f"{len(sample)} of {len(ex_ck.weights)} tensors compared, equal after the "
                                f"cast to {ex_ck.weights[sample[0]].dtype}")
                break
