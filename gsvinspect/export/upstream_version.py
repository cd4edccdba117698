"""What GPT-SoVITS itself will decide a SoVITS file is, computed the way GPT-SoVITS computes it.

Upstream never reads a version field: it hashes the first 8 KiB, then looks at the 2-byte header,
then falls back to the file *size* (FORMATS.md §2.3). A dataset-preparation script uses a second,
different size ladder. An exported base model that lands on the wrong side of one of these lines is
silently loaded as the wrong model, so the exporter checks its output with this emulation.
Pure Python: no torch, no numpy.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

KIB = 1024
MIB = 1024 * 1024

# md5 of the first 8192 bytes -> [symbol_version, model_version, is_lora] (FORMATS §2.3 step 1)
HASH_PRETRAINED: dict[str, tuple[str, str, bool]] = {
    "dc3c97e17592963677a4a1681f30c653": ("v2", "v2", False),  # s2G488k.pth (v1; sic)
    "6642b37f3dbb1f76882b69937c95a5f3": ("v2", "v2", False),  # s2G2333k.pth
    "43797be674a37c1c83ee81081941ed0f": ("v2", "v3", False),  # s2Gv3.pth
    "4f26b9476d0c5033e04162c486074374": ("v2", "v4", False),  # s2Gv4.pth
    "c7e9fce2223f3db685cdfa1e6368728a": ("v2", "v2Pro", False),  # s2Gv2Pro.pth
    "66b313e39455b57ab1b0bc0b239c9d0a": ("v2", "v2ProPlus", False),  # s2Gv2ProPlus.pth
}

# bytes 0-1 -> [symbol_version, model_version, is_lora] (FORMATS §2.2)
HEAD2VERSION: dict[bytes, tuple[str, str, bool]] = {
    b"00": ("v1", "v1", False),
    b"01": ("v2", "v2", False),
    b"02": ("v2", "v3", False),
    b"03": ("v2", "v3", True),
    b"04": ("v2", "v4", True),
    b"05": ("v2", "v2Pro", False),
    b"06": ("v2", "v2ProPlus", False),
}

# process_ckpt size ladder (strict "<" comparisons)
FAST_V1_BELOW = 82978 * KIB
FAST_V2_BELOW = 700 * MIB
# prepare_datasets/3-get-semantic.py size ladder
SEMANTIC_LADDER: tuple[tuple[int, str], ...] = (
    (82978 * KIB, "v1"),
    (100 * MIB, "v2"),
    (103520 * KIB, "v1"),
    (700 * MIB, "v2"),
)
V2_BASE_G_MIN = 103520 * KIB  # 106,004,480: a v2 base G must be at least this big
V1_BASE_G_RANGE = (100 * MIB, 103520 * KIB)  # a v1 base G must be in [lo, hi)


def fast_version(path: str | os.PathLike) -> tuple[tuple[str, str, bool], str]:
    """Emulate ``process_ckpt.get_sovits_version_from_path_fast``.

    Returns ``((symbol_version, model_version, is_lora), step)`` where step is "hash", "header" or
    "size". Raises KeyError for an unknown 2-byte header, exactly like upstream.
    """
    with open(path, "rb") as f:  # upstream opens the file twice (hash, then header): same bytes
        head8k = f.read(8192)
    digest = hashlib.md5(head8k).hexdigest()
    if digest in HASH_PRETRAINED:
        return HASH_PRETRAINED[digest], "hash"
    head = head8k[:2]
    if head != b"PK":
        return HEAD2VERSION[head], "header"
    size = os.path.getsize(path)
    if size < FAST_V1_BELOW:
        return ("v1", "v1", False), "size"
    if size < FAST_V2_BELOW:
        return ("v2", "v2", False), "size"
    return ("v2", "v3", False), "size"


def semantic_version(size: int) -> str:
    """Emulate the size ladder of ``prepare_datasets/3-get-semantic.py`` (pretrained_s2G)."""
    for below, version in SEMANTIC_LADDER:
        if size < below:
            return version
    return "v3"


@dataclass
class UpstreamVerdict:
    """How GPT-SoVITS would classify one file, and whether that is what we meant it to be."""

    kind: str                      # "sovits-g" | "sovits-d" | "gpt" | "sovits-weights" | "other"
    intended: str                  # the version the file is meant to be
    fast: tuple[str, str, bool] | None = None   # process_ckpt verdict
    fast_step: str | None = None   # "hash" | "header" | "size"
    semantic: str | None = None    # 3-get-semantic verdict (base G only)
    symbols: str | None = None     # symbol set inference derives from text_embedding rows
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.fast is not None:
            parts.append(f"process_ckpt: {list(self.fast)} (by {self.fast_step})")
        if self.semantic is not None:
            parts.append(f"3-get-semantic: {self.semantic}")
        if self.symbols is not None:
            parts.append(f"symbols: {self.symbols}")
        head = "OK" if self.ok else "WRONG"
        return f"{head} as {self.intended}: " + ("; ".join(parts) or "no upstream detection applies")

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "intended": self.intended,
            "fast": list(self.fast) if self.fast else None, "fast_step": self.fast_step,
            "semantic": self.semantic, "symbols": self.symbols, "ok": self.ok, "notes": list(self.notes),
        }


def symbols_from_rows(text_embedding_rows: int | None) -> str:
    """Inference re-derives the symbol set: 322 rows => v1, anything else (or none) => v2."""
    return "v1" if text_embedding_rows == 322 else "v2"


def expected_fast(intended: str, *, base: bool, lora: bool = False) -> tuple[str, str, bool]:
    """What process_ckpt should say for a correct file of this kind (hash aside).

    Bases are plain PK: v1/v2 fall to the size ladder like the official files; Pro bases and full
    v4 have no plain-PK representation (FORMATS §2.3, §7), so the nearest upstream reading is
    accepted and reported as a note.
    """
    if lora:
        return ("v2", intended, True)
    if intended == "v1":
        return ("v2", "v2", False) if base else ("v1", "v1", False)
    if intended in ("v2Pro", "v2ProPlus"):
        return ("v2", "v2", False) if base else ("v2", intended, False)
    if intended in ("v3", "v4"):
        return ("v2", "v3", False)
    return ("v2", "v2", False)


def classify_sovits_g(path: str | os.PathLike, intended: str, *, base: bool,
                      text_embedding_rows: int | None, lora: bool = False) -> UpstreamVerdict:
    """Classify a SoVITS generator file the way upstream does and compare with ``intended``."""
    path = Path(path)
    v = UpstreamVerdict(kind="sovits-g" if base else "sovits-weights", intended=intended)
    try:
        v.fast, v.fast_step = fast_version(path)
    except KeyError as exc:  # raised by HEAD2VERSION[head]: the key is the header
        v.ok = False
        v.notes.append(f"process_ckpt raises KeyError: unknown header {exc.args[0]!r}")
        return v
    size = path.stat().st_size
    if base:
        v.semantic = semantic_version(size)
    v.symbols = symbols_from_rows(text_embedding_rows) if intended in ("v1", "v2") else "v2"
    want = expected_fast(intended, base=base, lora=lora)
    if v.fast_step != "hash" and tuple(v.fast) != want:
        v.ok = False
        v.notes.append(f"process_ckpt reads {list(v.fast)}, expected {list(want)}")
    if base:
        want_sem = "v1" if intended == "v1" else ("v3" if intended in ("v3", "v4") else "v2")
        if v.semantic != want_sem:
            v.ok = False
            v.notes.append(
                f"3-get-semantic reads {v.semantic} from the size ({size:,} B), expected {want_sem}")
    if intended in ("v1", "v2") and v.symbols != intended:
        v.ok = False
        v.notes.append(f"text_embedding has {text_embedding_rows} rows: inference picks symbols {v.symbols}")
    if base and intended in ("v2Pro", "v2ProPlus"):
        v.notes.append("a plain-PK Pro base is read as v2 by inference (only the official md5 says Pro); "
                       "training uses the version chosen in the webui (FORMATS §8)")
    if intended == "v4" and not lora:
        v.notes.append("no header or size class says 'full v4'; upstream reads it as v3 (same keys and "
                       "shapes); fine as pretrained_s2G for v4 training (FORMATS §7)")
    return v


def classify_gpt(config: object, embedding_rows: int | None, intended: str) -> UpstreamVerdict:
    """GPT files carry no version marker: inference builds the net from ``config["model"]`` and
    loads strict, so the config's phoneme vocabulary must equal the embedding's rows."""
    v = UpstreamVerdict(kind="gpt", intended=intended)
    want_rows = 512 if intended == "v1" else 732
    vocab = None
    if isinstance(config, dict):
        model = config.get("model")
        if isinstance(model, dict):
            vocab = model.get("phoneme_vocab_size")
        data = config.get("data")
        if not (isinstance(data, dict) and "max_sec" in data):
            v.notes.append("config has no data.max_sec (inference needs it)")
    else:
        v.notes.append("config is not a plain dict")
    if embedding_rows is not None and embedding_rows != want_rows:
        v.ok = False
        v.notes.append(f"phoneme embedding has {embedding_rows} rows, {intended} needs {want_rows}")
    if vocab is not None and embedding_rows is not None and vocab != embedding_rows:
        v.ok = False
        v.notes.append(f"config model.phoneme_vocab_size={vocab} but the embedding has {embedding_rows} rows")
    v.symbols = "v1" if embedding_rows == 512 else "v2"
    return v


def upstream_reading(path: str | os.PathLike, *, layout: str, version: str, fits: tuple[str, ...],
                     text_embedding_rows: int | None, config: object = None, gpt_rows: int | None = None,
                     full_size: bool = True) -> tuple[str, str]:
    """(inference, training): how GPT-SoVITS's own code reads this file's version, in one line each,
    starting "yes" when that is the version the file is (or a sibling of an identical net)."""
    want = set(fits) | {version}
    train = _training(layout, path, full_size)
    if layout in ("sovits-weights", "sovits-weights-lora", "sovits-g-pretrained"):
        try:
            (_, model_v, lora), step = fast_version(path)
        except KeyError as exc:
            return f"no: process_ckpt raises KeyError on the header {exc.args[0]!r}", train
        symbols = symbols_from_rows(text_embedding_rows) if model_v in ("v1", "v2") else "v2"
        read = "v1" if model_v == "v2" and symbols == "v1" else model_v
        how = f"reads it as {read}{' LoRA' if lora else ''} (by {step})"
        if step == "size" and not full_size:
            return f"{how}; a scaled-down file: the size thresholds say nothing about it", train
        if read in want or (read == "v3" and "v4" in want and layout == "sovits-g-pretrained"):
            return f"yes: {how}", train
        why = {"v2Pro": "a plain-PK Pro file is only recognised by its 05 header or the official md5",
               "v2ProPlus": "a plain-PK Pro file is only recognised by its 06 header or the official md5",
               "v4": "a plain-PK file >= 700 MiB is always v3"}.get(version, "the size ladder decides")
        return f"no: {how}, not {version}: {why}", train
    if layout in ("gpt-pretrained", "gpt-weights"):
        v = classify_gpt(config, gpt_rows, version)
        if v.ok:
            return "yes: builds the net from config['model'] and loads strictly", train
        return "no: " + "; ".join(v.notes), train
    if layout == "gpt-lightning":
        return "no: inference reads 'weight', a Lightning checkpoint has 'state_dict' (export it)", \
            "resumes through Lightning (needs torch.load(weights_only=True) to succeed)"
    if layout in ("sovits-g-train", "sovits-d-train", "sovits-g-lora-train"):
        return "no: inference reads 'weight', a training checkpoint has 'model' (export it)", \
            "resumes through utils.load_checkpoint; the network comes from the version chosen in the webui"
    if layout == "sovits-d-pretrained":
        return "not read by inference", train
    return "no version detection applies", "no version detection applies"


def _training(layout: str, path, full_size: bool = True) -> str:
    if layout == "sovits-g-pretrained":
        sem = semantic_version(os.path.getsize(path))
        scaled = "; a scaled-down file: the size thresholds say nothing about it" if not full_size else ""
        return (f"the network is the version chosen in the webui; dataset preparation (3-get-semantic) reads "
                f"{sem} from the size{scaled}")
    if layout in ("sovits-weights", "sovits-weights-lora"):
        return "not a training base (inference export)"
    return "the network is the version chosen in the webui (no detection)"
