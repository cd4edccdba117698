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
tensors hold the same values once cast to fp16 (fp32 → fp16 rounds to nearest, as ``.half()``
does). The sample (``fingerprint``) is ``SAMPLE`` small tensors picked by name, so each file is
fingerprinted once, possibly in a worker process, and no pair ever re-reads a file; two
checkpoints trained apart never agree on them bit for bit.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import PurePath

from .entry import ScanEntry

SAMPLE = 8
SAMPLE_MAX_NUMEL = 8192       # sampled tensors are small ones (biases, norms): a few kB read per file
_DROPPED_BY_EXPORT = ("enc_q.",)


def canonical(key: str) -> str:
    return key.removeprefix("module.")


def shape_text(shape) -> str:
    """A shape as FileMeta keeps it: ``"(192, 768)"``; compared, never parsed."""
    return str(tuple(shape))


def _signature(shapes: dict, *, drop_export: bool) -> frozenset:
    out = []
    for k, s in shapes.items():
        c = canonical(k)
        if drop_export and c.startswith(_DROPPED_BY_EXPORT):
            continue
        out.append((c, s))
    return frozenset(out)


def _tail_match(a: str, b: str) -> int:
    """How many trailing path components two paths share."""
    pa, pb = PurePath(a.replace("\\", "/")).parts, PurePath(str(b)).parts
    n = 0
    while n < min(len(pa), len(pb)) and pa[-1 - n] == pb[-1 - n]:
        n += 1
    return n


def tie_bases(entries: list[ScanEntry], cks: dict) -> None:
    """Set ``base``/``base_rule`` on every readable fine-tuned entry (cks: path -> FileMeta)."""
    pretrained = [e for e in entries if e.ok and e.stage == "pretrained" and e.path in cks]
    memo: dict[int, frozenset] = {}      # files from the scan cache share their key tables

    def sig(shapes: dict) -> frozenset:
        s = memo.get(id(shapes))
        if s is None:
            s = memo[id(shapes)] = _signature(shapes, drop_export=True)
        return s

    sigs = {e.path: sig(cks[e.path].shapes) for e in pretrained}
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
        mine = sig(cks[e.path].shapes)
        hits = [p for p in same_model if p.version == e.version and sigs[p.path] == mine]
        if len(hits) == 1:
            note = f"; config names {e.config_base}, not scanned" if e.config_base else ""
            e.base, e.base_rule = str(hits[0].path), f"same keys and version{note}"
        elif len(hits) > 1:
            e.base_rule = "ambiguous: " + ", ".join(str(p.path) for p in hits)
        elif e.config_base:
            e.base_rule = f"config names {e.config_base}, not scanned"


@dataclass
class FileMeta:
    """What relations need of a file, small enough to come back from a worker process and to be
    kept as JSON by the scan cache (plain strings only: loading it back builds nothing per key)."""

    shapes: dict                        # key -> shape_text(shape)
    fingerprint: dict                   # canonical key -> hex digest of its values cast to fp16


def sample(ck) -> list[tuple[str, str]]:
    """(canonical key, key) of the up to SAMPLE small float tensors ``fingerprint`` reads, picked
    by their names alone (so two files with the same keys pick the same tensors)."""
    cands = []
    for k, t in ck.weights.items():
        c = canonical(k)
        if t.dtype in ("float16", "float32") and 0 < t.numel <= SAMPLE_MAX_NUMEL and not c.startswith(_DROPPED_BY_EXPORT):
            cands.append((zlib.crc32(c.encode()), c, k))
    return [(c, k) for _, c, k in sorted(cands)[:SAMPLE]]


def fingerprint(ck, picks: list | None = None) -> dict:
    """Digests of the ``sample`` tensors' values cast to fp16 (round to nearest, as ``.half()``;
    an fp16 file's values are taken as they are). picks: ``sample(ck)`` when already known."""
    import hashlib

    out = {}
    for c, k in (sample(ck) if picks is None else picks):
        half = _as_half_bytes(ck, k)
        out[c] = hashlib.blake2b(half, digest_size=16).digest()
    return out


def _as_half_bytes(ck, key: str) -> bytes:
    """The tensor's values as fp16 bytes. Read straight from the file and cast with ``struct``
    (its ``e`` format rounds to nearest even, as numpy and ``.half()`` do) so a metadata scan
    never imports numpy; numpy does it where the values are not all finite or do not fit fp16
    (NaN payloads, overflow to Inf), or the tensor is not one contiguous span."""
    raw = ck.span_bytes(key)
    dtype = ck.weights[key].dtype
    if raw is not None and dtype == "float16":
        return raw
    if raw is not None:
        n = len(raw) // 4
        vals = struct.unpack(f"<{n}f", raw)
        if math.isfinite(sum(vals)):
            try:
                return struct.pack(f"<{n}e", *vals)
            except OverflowError:
                pass
    import numpy as np

    arr = np.ascontiguousarray(ck.array(key))
    if arr.dtype != np.float16:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.astype(np.float16)
    return arr.tobytes()


def file_meta(ck, picks: list | None = None) -> FileMeta:
    return FileMeta({k: shape_text(t.shape) for k, t in ck.weights.items()},
                    {c: d.hex() for c, d in fingerprint(ck, picks).items()})


def find_copies(entries: list[ScanEntry], metas: dict) -> None:
    """Set ``copy_of``/``copy_note`` on exports that hold a training checkpoint's weights
    (metas: path -> FileMeta)."""
    training = [e for e in entries if e.ok and e.stage in ("s1 GPT", "s2 G") and e.path in metas]
    memo: dict[int, dict] = {}           # files from the scan cache share their key tables

    def canon(shapes: dict) -> dict:
        c = memo.get(id(shapes))
        if c is None:
            c = memo[id(shapes)] = {canonical(k): s for k, s in shapes.items()}
        return c

    for ex in entries:
        if not ex.ok or ex.stage != "exports" or ex.path not in metas or ex.model not in ("gpt", "sovits-G"):
            continue
        mine = metas[ex.path]
        shapes = canon(mine.shapes)
        cands = [t for t in training if t.model == ex.model]
        cands.sort(key=lambda t: (t.experiment != ex.experiment, t.epoch != ex.epoch, t.step != ex.step))
        for tr in cands:
            theirs = metas[tr.path]
            tr_shapes = canon(theirs.shapes)
            if any(tr_shapes.get(c) != shape for c, shape in shapes.items()):
                continue
            common = [c for c in mine.fingerprint if c in theirs.fingerprint]
            if len(common) < min(3, len(mine.fingerprint)) or not common:
                continue
            if all(mine.fingerprint[c] == theirs.fingerprint[c] for c in common):
                ex.copy_of = str(tr.path)
                ex.copy_note = (f"{len(common)} of {len(mine.shapes)} tensors compared, equal after the cast "
                                f"to float16")
                for attr in ("epoch", "step"):
                    if getattr(ex, attr) is None and getattr(tr, attr) is not None:
                        setattr(ex, attr, getattr(tr, attr))
                        setattr(ex, attr + "_from", "copy")
                break
