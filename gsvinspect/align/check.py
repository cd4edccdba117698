"""One file against the key set a GPT-SoVITS loader expects: `gsvinspect check`, and export's
check of what it wrote (so both give one verdict).

Reports exactly what `load_state_dict` would find (missing, unexpected, shape-mismatched keys),
what the loader that reads such a file does with them, and the findings (`knowledge.diagnose`) that
follow; a file whose keys all match but whose widths are scaled or re-configured gets one finding
that says so instead of a shape error per key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import UsageError
from ..load.identity import check_name
from ..load.manifest import describe_name, expected_weights, manifest_names, resolve_name
from ..meta import Layout, TensorInfo
from .alignment import Alignment, Status, align
from .knowledge import Finding, _lora_rank, diagnose

# one file against the key set a GPT-SoVITS loader expects

@dataclass(slots=True)
class CheckResult:
    """What GPT-SoVITS's loader would find loading one file into the network `name`."""

    name: str
    description: str
    loader: str                                   # how upstream loads it (strictness, consequence)
    strict: bool
    missing: list[str]
    unexpected: list[str]
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]   # key, expected, found
    n_expected: int
    n_found: int
    findings: list[Finding] = field(default_factory=list)
    alignment: Alignment | None = None
    auto: bool = False                             # name picked from the detected layout/version

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatched)

    @property
    def widths_only(self) -> bool:
        """Every key there, and the only differences are widths (same ranks): a scaled-down or
        re-configured network, not a broken file."""
        return (not self.missing and not self.unexpected and bool(self.shape_mismatched)
                and all(len(e) == len(f) for _, e, f in self.shape_mismatched))

    @property
    def verdict(self) -> str:
        """The one-line answer `check` and `export` both give."""
        if self.ok:
            return f"OK: all {self.n_expected} expected keys present with the expected shapes"
        if self.widths_only:
            return (f"keys match, widths do not: all {self.n_expected} expected keys present, "
                    f"{len(self.shape_mismatched)} with non-standard widths; it loads only into a network built "
                    "from its own config, not upstream's default")
        return (f"NOT loadable as-is: {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.shape_mismatched)} shape-mismatched (expected {self.n_expected} keys, found {self.n_found})")

    def as_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "loader": self.loader, "strict": self.strict,
            "auto": self.auto, "ok": self.ok, "widths_only": self.widths_only, "verdict": self.verdict,
            "n_expected": self.n_expected, "n_found": self.n_found,
            "missing": self.missing, "unexpected": self.unexpected,
            "shape_mismatched": [{"key": k, "expected": list(e), "found": list(f)}
                                 for k, e, f in self.shape_mismatched],
            "findings": [f.as_dict() for f in self.findings],
        }


_LOADERS = {
    "gpt": (True, "s1 training (pretrained_s1) and inference call load_state_dict strictly: any missing, "
                  "unexpected or shape-mismatched key is a load error"),
    "sovits-G": (False, "s2_train.py loads pretrained_s2G with strict=False: missing keys stay randomly "
                        "initialised without a word, unexpected keys are ignored, a shape mismatch is still "
                        "a load error; resuming (utils.load_checkpoint) keeps the fresh init for missing and "
                        "shape-mismatched keys"),
    "sovits-G-v3": (False, "s2_train_v3_lora.py loads pretrained_s2G with strict=False before peft wrapping: "
                           "keys must be plain (cfm.estimator.…); missing keys stay random silently"),
    "sovits-G-lora": (False, "resuming LoRA training (utils.load_checkpoint) copies keys by name: missing or "
                             "shape-mismatched keys keep the fresh init and only print a line"),
    "sovits-G-lora-export": (False, "inference wraps the official base with peft and loads this file with "
                                    "strict=False: missing adapters stay at their init (B = 0, no effect)"),
    "sovits-G-export": (False, "inference (change_sovits_weights) loads it with strict=False and drops enc_q, "
                               "which it never uses; used as pretrained_s2G, training would start with a "
                               "random enc_q without a word"),
    "sovits-D": (False, "s2_train.py loads pretrained_s2D with strict=False on CUDA but strictly on CPU"),
    "vocoder": (True, "the v4 vocoder is loaded strictly"),
}


def auto_check_name(ck: Any) -> str | None:
    """The expected-key set to check a file against, from its detected layout and version."""
    return check_name(ck)


def _loader_for(name: str) -> tuple[bool, str]:
    if name.startswith("gpt-"):
        return _LOADERS["gpt"]
    if name.startswith("vocoder"):
        return _LOADERS["vocoder"]
    if name.startswith("sovits-D"):
        return _LOADERS["sovits-D"]
    if name.endswith("-lora-export"):
        return _LOADERS["sovits-G-lora-export"]
    if name.endswith("-lora"):
        return _LOADERS["sovits-G-lora"]
    if name.endswith("-export"):
        return _LOADERS["sovits-G-export"]
    if name in ("sovits-G-v3", "sovits-G-v4"):
        return _LOADERS["sovits-G-v3"]
    return _LOADERS["sovits-G"]


def check_against(ck_or_weights: Any, name: str | None = None) -> CheckResult:
    """Compare one file (a Checkpoint, or a key -> TensorInfo mapping) with the expected set `name`.

    `name` None: picked from the detected layout/version (UsageError when nothing fits).
    Reports exactly what `load_state_dict` would: missing, unexpected, shape-mismatched keys (dtype
    never matters: the loaders cast), plus the GPT-SoVITS findings that follow from them.
    """
    ck = ck_or_weights if hasattr(ck_or_weights, "weights") else _KeysOnly(ck_or_weights)
    weights: Mapping[str, TensorInfo] = ck.weights
    auto = name is None
    if name is None:
        name = auto_check_name(ck)
        if name is None:
            raise UsageError("cannot tell which GPT-SoVITS network this file holds; pass --as NAME "
                             f"({', '.join(manifest_names())})")
    rank = _lora_rank(ck, [t for k, t in weights.items() if ".lora_A." in k]) or 32
    canonical = resolve_name(name)
    expected = expected_weights(canonical, rank=rank)
    al = align(expected, weights)
    missing = [r.target for r in al.rows if r.status is Status.MISSING]
    unexpected = [r.target for r in al.rows if r.status is Status.UNEXPECTED]
    shapes = [(r.target, tuple(r.pre.shape), tuple(r.ft.shape)) for r in al.rows if r.status is Status.SHAPE_DIFFERS]
    strict, loader = _loader_for(canonical)
    ref = _Reference(canonical, expected)
    findings = [f for f in diagnose(ref, ck, al,
                                    pre_name=f"expected ({canonical})", ft_name="checked")
                if f.code not in ("dtype-differs", "version-mismatch", "different-models")
                and not (f.code == "peft-wrapped" and canonical.endswith(("-lora", "-lora-export")))]
    res = CheckResult(name=canonical, description=describe_name(canonical), loader=loader, strict=strict,
                      missing=missing, unexpected=unexpected, shape_mismatched=shapes,
                      n_expected=len(expected), n_found=len(weights), findings=findings, alignment=al,
                      auto=auto)
    if res.widths_only:
        findings[:] = [f for f in findings if f.code != "shape-differs"]
        findings.insert(0, _width_finding(shapes, len(expected)))
    if canonical.endswith("-export") and not canonical.endswith("lora-export") and missing == [] and not unexpected:
        findings.append(Finding("info", "export-subset",
                                "checked as an export: a SoVITS_weights file has no enc_q by design; check "
                                f"it --as {canonical[:-len('-export')]} to see what a training run would miss", []))
    if auto and getattr(ck, "layout", None) is Layout.SOVITS_WEIGHTS and missing and not unexpected \
            and all(k.startswith("enc_q.") for k in missing):
        findings.append(_export_complete(ck, canonical))
    return res


def _export_complete(ck: Any, base: str) -> Finding:
    """A SoVITS_weights export checked (by default) as a training base misses exactly enc_q; say that as
    what it is, an inference export, it is complete: the verdict `export` printed when it wrote it."""
    name = f"{base}-export"
    r = check_against(ck, name)
    state = "complete" if r.ok or r.widths_only else "not complete either"
    return Finding("info", "export-complete",
                   f"as an inference export ({name}, the check `export` runs when it writes one) it is {state}: "
                   f"{r.verdict}. This check is as a training base (pretrained_s2G), where enc_q is needed; "
                   f"check it --as {name} for inference", [])


def _width_finding(shapes, n_expected: int) -> Finding:
    """Same keys and ranks, other widths: say what that means instead of listing a shape error per key."""
    ratios: dict[str, int] = {}
    for _, e, f in shapes:
        for a, b in zip(e, f):
            if a != b and b:
                r = f"1/{a // b}" if a > b and a % b == 0 else f"{b}/{a}"
                ratios[r] = ratios.get(r, 0) + 1
    common = max(ratios, key=ratios.get) if ratios else "?"
    key, e, f = shapes[0]
    return Finding("warning", "nonstandard-widths",
                   f"{len(shapes)} of {n_expected} tensors differ only in width (e.g. {key} {list(f)} where "
                   f"upstream's default config has {list(e)}; most differing dimensions are {common} of the "
                   "default): a scaled-down or re-configured network. Built from upstream's default config, "
                   "load_state_dict stops with a size mismatch; it loads only into a network built from the "
                   "file's own config", [k for k, _, _ in shapes])


class _KeysOnly:
    """A stand-in checkpoint with nothing but weights (keys-only callers)."""

    layout = None
    version = "unknown"
    header = b"PK"
    root = None

    def __init__(self, weights: Mapping[str, TensorInfo]):
        self.weights = weights


class _Reference(_KeysOnly):
    """The expected set, dressed as a checkpoint for `diagnose`."""

    def __init__(self, name: str, weights: Mapping[str, TensorInfo]):
        super().__init__(weights)
        self.version = name.split("-")[2] if name.startswith("sovits-") else name.split("-")[1]
