"""What an alignment means for GPT-SoVITS: findings in plain words, not just set arithmetic.

A missing `enc_q.*` is not "103 keys missing": it means the file is a SoVITS_weights export and,
used as `pretrained_s2G`, trains with a random posterior encoder because GPT-SoVITS loads it with
`strict=False` and says nothing. This module turns an `Alignment` (plus what the loader detected
about each file) into such findings (FORMATS.md §3.4, §5, §7, §8, §11); `align.check` uses them to
check a single file against the key set GPT-SoVITS's loader expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .alignment import Alignment, Row, Status
from ..load.identity import GPT_EMBED, SOVITS_EMBED, WRAPPERS, model_kind as _kind, strip_wrapper, wrapper_prefix
from ..meta import Layout, TensorInfo

SEVERITIES = ("error", "warning", "info")
PRO_PREFIXES = ("sv_emb.", "ge_to512.", "prelu.")
_SYMBOL_ROWS = {322: "v1 symbol set (322 symbols)", 732: "v2 symbol set (732 symbols)"}
_GPT_ROWS = {512: "v1 phoneme vocabulary (512, s1longer.yaml)", 732: "v2 phoneme vocabulary (732, s1longer-v2.yaml)"}


@dataclass(slots=True)
class Finding:
    """One thing worth telling the user, with the keys it is about."""

    severity: str             # "error" | "warning" | "info"
    code: str                 # stable identifier, e.g. "enc-q-missing"
    message: str
    keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": self.message, "keys": list(self.keys)}


def _layout(ck: Any) -> Layout | None:
    return getattr(ck, "layout", None)


def _version(ck: Any) -> str:
    return getattr(ck, "version", "unknown") or "unknown"


def _keys_of(ck: Any) -> list[str]:
    w = getattr(ck, "weights", None)
    return list(w) if w is not None else []


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _rule_name(al: Alignment, i: int) -> str:
    rule = al.rules.rules[i] if al.rules is not None and i < len(al.rules.rules) else None
    where = f" (line {rule.line})" if rule is not None and rule.line else ""
    what = f": {rule.describe()}" if rule is not None else ""
    return f"rule {i + 1}{where}{what}"


# ---------------------------------------------------------------------------------------------

def diagnose(pre_ck: Any, ft_ck: Any, alignment: Alignment, *,
             pre_name: str = "pretrained", ft_name: str = "fine-tuned") -> list[Finding]:
    """GPT-SoVITS-specific findings for a pair (either checkpoint may be None: keys only).

    Ordered errors first, then warnings, then info.
    """
    p = _Pair.of(pre_ck, ft_ck, alignment, pre_name, ft_name)
    out: list[Finding] = []
    for step in _FINDERS:
        step(p, out)
    order = {s: i for i, s in enumerate(SEVERITIES)}
    out.sort(key=lambda f: order.get(f.severity, 9))
    return out


@dataclass
class _Pair:
    """What every finder looks at: the two sides, their keys and kinds, the rows by status."""

    al: Alignment
    rows: list[Row]
    pre_ck: Any
    ft_ck: Any
    pre_name: str
    ft_name: str
    pre_keys: list[str]
    ft_keys: list[str]
    pre_kind: str
    ft_kind: str
    ft_layout: Layout | None
    is_gpt: bool
    by_status: dict[Status, list[Row]]
    explained: set[str] = field(default_factory=set)

    @property
    def sides(self):
        return (("ft", self.ft_keys, self.ft_name, self.ft_kind), ("pre", self.pre_keys, self.pre_name, self.pre_kind))

    @classmethod
    def of(cls, pre_ck, ft_ck, al: Alignment, pre_name: str, ft_name: str) -> "_Pair":
        rows = al.rows
        pre_keys = _keys_of(pre_ck) or [r.pre_key for r in rows if r.pre_key is not None]
        ft_keys = _keys_of(ft_ck) or [r.ft_key for r in rows if r.ft_key is not None]
        pre_kind, ft_kind = _kind(pre_keys), _kind(ft_keys)
        by_status: dict[Status, list[Row]] = {s: [] for s in Status}
        for r in rows:
            by_status[r.status].append(r)
        return cls(al, rows, pre_ck, ft_ck, pre_name, ft_name, pre_keys, ft_keys, pre_kind, ft_kind,
                   _layout(ft_ck), "gpt" in (pre_kind, ft_kind), by_status)


def _different_models(p: "_Pair", out: list[Finding]) -> None:
    """Different models altogether."""
    pre_kind, ft_kind, pre_name, ft_name = p.pre_kind, p.ft_kind, p.pre_name, p.ft_name
    families = {"sovits-G-lora": "sovits-G"}
    if "other" not in (pre_kind, ft_kind) and families.get(pre_kind, pre_kind) != families.get(ft_kind, ft_kind):
        out.append(Finding("error", "different-models",
                           f"the {pre_name} file holds a {_KIND_WORDS[pre_kind]} and the {ft_name} file a "
                           f"{_KIND_WORDS[ft_kind]}: they are different networks, so most keys cannot pair"))


def _rule_findings(p: "_Pair", out: list[Finding]) -> None:
    """Conflicts, dead rules."""
    al = p.al
    for target, sources in al.conflicts:
        row = al.row_for(target)
        rule = (" by " + ", ".join(_rule_name(al, i) for i in row.rules)) if row is not None and row.rules else ""
        out.append(Finding("error", "rename-conflict",
                           f"{len(sources)} keys land on {target!r}{rule}: {', '.join(sources)}; "
                           "only one of them can fill it, so the rule list is ambiguous",
                           list(dict.fromkeys([target, *sources]))))
    for i in al.dead_rules():
        out.append(Finding("warning", "dead-rule",
                           f"{_rule_name(al, i)} matched no key: a typo, or a rule for another file", []))


def _enc_q_findings(p: "_Pair", out: list[Finding]) -> None:
    """Enc_q."""
    rows, pre_keys, ft_keys, ft_layout = p.rows, p.pre_keys, p.ft_keys, p.ft_layout
    by_status, pre_name, ft_name, pre_ck, ft_ck = p.by_status, p.pre_name, p.ft_name, p.pre_ck, p.ft_ck
    missing_q = [r.target for r in by_status[Status.MISSING] if "enc_q" in r.target]
    ft_has_q = any("enc_q" in k for k in ft_keys)
    paired_q = any(r.ft is not None and r.pre is not None and "enc_q" in r.target for r in rows)
    if missing_q and not ft_has_q:
        export = ft_layout is Layout.SOVITS_WEIGHTS or ft_layout is None or ft_layout is Layout.SOVITS_WEIGHTS_LORA
        ver = _version(ft_ck) if _version(ft_ck) != "unknown" else _version(pre_ck)
        logs = f"logs_s2_{ver}" if ver not in ("unknown", "v1") else "logs_s2"
        what = ("is a SoVITS_weights export (process_ckpt.savee drops every key containing 'enc_q')"
                if export else "has no posterior encoder (enc_q)")
        out.append(Finding(
            "error", "enc-q-missing",
            f"all {len(missing_q)} enc_q.* keys are missing: the {ft_name} file {what}. Used as pretrained_s2G "
            "it would train with a randomly initialised posterior encoder: GPT-SoVITS loads pretrained_s2G "
            "with strict=False and says nothing. The "
            f"{logs}/G_*.pth of the same training run still has enc_q: use that file as the base "
            "(or export from it).", missing_q))
    elif missing_q and paired_q:
        out.append(Finding("error", "enc-q-partial",
                           f"{len(missing_q)} enc_q.* keys are missing from the {ft_name} file while others are "
                           "there: a damaged or hand-edited state dict", missing_q))
    unexpected_q = [r.target for r in by_status[Status.UNEXPECTED] if "enc_q" in r.target]
    if unexpected_q and not any("enc_q" in k for k in pre_keys):
        out.append(Finding("info", "enc-q-only-in-ft",
                           f"the {pre_name} file has no enc_q (an export) while the {ft_name} file has "
                           f"{len(unexpected_q)} enc_q.* keys; compare against a file that keeps enc_q "
                           "(pretrained s2G or G_*.pth)", unexpected_q))


def _embedding_findings(p: "_Pair", out: list[Finding]) -> None:
    """Text embedding sizes."""
    al, pre_name, ft_name = p.al, p.pre_name, p.ft_name
    explained: set[str] = set()
    for key, table, what in ((SOVITS_EMBED, _SYMBOL_ROWS, "text embedding"),
                             (GPT_EMBED, _GPT_ROWS, "GPT phoneme embedding")):
        row = al.row_for(key)
        if row is None or row.pre is None or row.ft is None or not row.pre.shape or not row.ft.shape:
            continue
        a, b = row.pre.shape[0], row.ft.shape[0]
        if a == b:
            continue
        code = "symbol-set-mismatch" if key == SOVITS_EMBED else "phoneme-vocab-mismatch"
        why = (" v1 and v2 use different text front-ends (symbol lists), so the rows mean different phonemes;"
               " one cannot be a base model for the other" if {a, b} <= set(table) else "")
        explained.add(key)
        out.append(Finding("error", code,
                           f"{what} {key} has {a} rows in the {pre_name} file ({table.get(a, 'unknown set')}) "
                           f"and {b} in the {ft_name} file ({table.get(b, 'unknown set')}).{why}", [key]))
    p.explained = explained


def _shape_findings(p: "_Pair", out: list[Finding]) -> None:
    """Shape mismatches."""
    is_gpt, by_status, explained = p.is_gpt, p.by_status, p.explained
    shape_rows = [r for r in by_status[Status.SHAPE_DIFFERS] if r.target not in explained]
    if shape_rows:
        keys = [r.target for r in shape_rows]
        ex = "; ".join(f"{r.target} {list(r.pre.shape)} vs {list(r.ft.shape)}" for r in shape_rows[:3])
        if is_gpt:
            msg = (f"{len(keys)} tensors differ in shape ({ex}). GPT files load strictly: as pretrained_s1 "
                   "or in inference this is a load error")
        else:
            msg = (f"{len(keys)} tensors differ in shape ({ex}). GPT-SoVITS would silently re-initialise them "
                   "when resuming training from this file (utils.load_checkpoint keeps the fresh init for a "
                   "shape-mismatched key and only prints a line), and load_state_dict as pretrained_s2G/s2D "
                   "stops with a size-mismatch error even with strict=False")
        out.append(Finding("error", "shape-differs", msg, keys))


def _pro_findings(p: "_Pair", out: list[Finding]) -> None:
    """V2Pro branch."""
    by_status, pre_name, ft_name, pre_ck = p.by_status, p.pre_name, p.ft_name, p.pre_ck
    pro_missing = [r.target for r in by_status[Status.MISSING] if r.target.startswith(PRO_PREFIXES)]
    pro_extra = [r.target for r in by_status[Status.UNEXPECTED] if r.target.startswith(PRO_PREFIXES)]
    if pro_missing:
        out.append(Finding("warning", "pro-branch-missing",
                           f"the {ft_name} file lacks the v2Pro speaker-verification branch "
                           f"({_few(pro_missing)}): it is a plain v2 network, not {_version(pre_ck)}", pro_missing))
    if pro_extra:
        out.append(Finding("warning", "pro-branch-extra",
                           f"the {ft_name} file has the v2Pro/v2ProPlus speaker-verification branch "
                           f"({_few(pro_extra)}) that the {pre_name} network lacks; loaded into a plain v2 net "
                           "(strict=False) exactly these keys are ignored", pro_extra))


def _gpt_prefix_findings(p: "_Pair", out: list[Finding]) -> None:
    """GPT prefix."""
    al, rows = p.al, p.rows
    sides = p.sides
    for side, keys, name, kind in sides:
        base = strip_wrapper(keys)
        if kind == "gpt" and base and sum(k.startswith("model.") for k in base) < 0.5 * len(base):
            fixed = side == "ft" and any(r.rules for r in rows) and al.n_paired >= 0.9 * len(base)
            out.append(Finding(
                "error" if not fixed else "warning", "gpt-no-model-prefix",
                f"the {name} file's GPT keys do not start with 'model.' (e.g. {base[0]!r}). GPT-SoVITS loads "
                "s1 weights strictly (training and inference): a file with these names fails to load as "
                "pretrained_s1. " + ("The rules line them up here; an export writes the pretrained names."
                                     if fixed else "Add the rule add_prefix = 'model.' (gsvinspect rules suggest)."),
                base[:1]))


def _wrapper_findings(p: "_Pair", out: list[Finding]) -> None:
    """Wrapper prefixes, peft."""
    rows, ft_keys, ft_layout = p.rows, p.ft_keys, p.ft_layout
    by_status, ft_name, ft_ck, sides = p.by_status, p.ft_name, p.ft_ck, p.sides
    for _, keys, name, kind in sides:
        prefix = wrapper_prefix(keys)
        if prefix:
            who = ", ".join(dict.fromkeys(WRAPPERS[w + "."] for w in prefix.split(".")[:-1]))
            consequence = ("a strict load fails" if kind == "gpt" else
                           "GPT-SoVITS's strict=False loads would skip every key and train from random weights")
            out.append(Finding("warning", "wrapper-prefix",
                               f"every key of the {name} file starts with {prefix!r} ({who}); {consequence}. "
                               "A strip_prefix rule lines them up; an export writes plain names.", []))
    peft = [k for k in ft_keys if ".base_model.model." in k or k.startswith("base_model.model.")]
    if peft:
        out.append(Finding("warning", "peft-wrapped",
                           f"{len(peft)} keys of the {ft_name} file are peft-wrapped (cfm.base_model.model.…): "
                           "s2_train_v3_lora.py loads pretrained_s2G before wrapping, so a base model needs "
                           "plain names (cfm.estimator.…) with the LoRA merged in (W + (alpha/r)·B·A) — "
                           "which an export does", peft[:3]))
    lora = [r.target for r in by_status[Status.UNEXPECTED] if ".lora_A." in r.target or ".lora_B." in r.target]
    if lora:
        rank = _lora_rank(ft_ck, [r.ft for r in rows if r.ft is not None and ".lora_A." in r.ft.key])
        out.append(Finding("info", "lora-adapters",
                           f"{len(lora)} LoRA adapter tensors (lora_A/lora_B{', rank ' + str(rank) if rank else ''}) "
                           "have no counterpart in the base model; merging adds (alpha/r)·B·A to each of the "
                           f"{len(lora) // 2} target weights (GPT-SoVITS uses alpha = r, so scale 1)", lora))
    if ft_layout is Layout.SOVITS_WEIGHTS_LORA:
        out.append(Finding("info", "lora-export-partial",
                           "a LoRA export holds only the adapters, ref_enc/bridge/wns1/linear_mel and buffers; "
                           "GPT-SoVITS takes everything else from the official s2Gv3/s2Gv4 at load time, so the "
                           "missing base keys are missing by design", []))


def _file_findings(p: "_Pair", out: list[Finding]) -> None:
    """File-level facts that matter for using the file as a base."""
    ft_layout, pre_name, ft_name, pre_ck, ft_ck = p.ft_layout, p.pre_name, p.ft_name, p.pre_ck, p.ft_ck
    for ck, name in ((ft_ck, ft_name), (pre_ck, pre_name)):
        header = getattr(ck, "header", b"PK")
        if isinstance(header, (bytes, bytearray)) and header[:1].isdigit():
            out.append(Finding("warning", "headered-file",
                               f"the {name} file starts with the GPT-SoVITS version header {bytes(header[:2]).decode()!r}: "
                               "torch.load cannot open it, so it cannot be used as a training base "
                               "(pretrained_s2G must be a plain PK zip); an export writes one", []))
    if ft_layout is Layout.GPT_LIGHTNING:
        out.append(Finding("info", "lightning-ckpt",
                           f"the {ft_name} file is a Lightning training checkpoint: it has no 'weight' entry, so "
                           "neither s1 training (pretrained_s1) nor inference can read it as it is; export it to "
                           "{weight, config} (fp16, the pretrained layout)", []))


def _version_findings(p: "_Pair", out: list[Finding]) -> None:
    """Versions, dtypes."""
    pre_kind, by_status, pre_name = p.pre_kind, p.by_status, p.pre_name
    ft_name, pre_ck, ft_ck = p.ft_name, p.pre_ck, p.ft_ck
    pv, fv = _version(pre_ck), _version(ft_ck)
    if pv != "unknown" and fv != "unknown" and pv != fv and not _same_net(pre_kind, pv, fv):
        out.append(Finding("warning", "version-mismatch",
                           f"the {pre_name} file is {pv} and the {ft_name} file is {fv}", []))
    dt = by_status[Status.DTYPE_DIFFERS]
    if dt:
        pairs = sorted({f"{r.pre.dtype} vs {r.ft.dtype}" for r in dt})
        out.append(Finding("info", "dtype-differs",
                           f"{len(dt)} tensors differ only in dtype ({', '.join(pairs)}): pretrained files and "
                           "exports are fp16, training checkpoints fp32; GPT-SoVITS casts on load, so this is "
                           "informational", [r.target for r in dt]))


_TRAINED = {Layout.GPT_LIGHTNING: "Lightning training checkpoint", Layout.GPT_WEIGHTS: "GPT_weights export",
            Layout.SOVITS_G_TRAIN: "training checkpoint (G_*.pth)",
            Layout.SOVITS_D_TRAIN: "training checkpoint (D_*.pth)",
            Layout.SOVITS_G_LORA_TRAIN: "LoRA training checkpoint", Layout.SOVITS_WEIGHTS: "SoVITS_weights export",
            Layout.SOVITS_WEIGHTS_LORA: "LoRA export"}
_BASES = {Layout.GPT_PRETRAINED: "pretrained GPT", Layout.SOVITS_G_PRETRAINED: "pretrained G",
          Layout.SOVITS_D_PRETRAINED: "pretrained D"}


def swapped_files(pre_ck: Any, ft_ck: Any, pre_name: str = "pretrained", ft_name: str = "fine-tuned") -> str | None:
    """A sentence when the layouts say the two files were given the wrong way round: the
    "pretrained" side is a training checkpoint or an export and the "fine-tuned" side a pretrained base."""
    pre, ft = _layout(pre_ck), _layout(ft_ck)
    if pre in _TRAINED and ft in _BASES:
        return (f"the {pre_name} file is a {_TRAINED[pre]} and the {ft_name} file a {_BASES[ft]}: "
                "the two files look swapped (the pretrained base comes first, then the fine-tune)")
    return None


def _swapped_findings(p: "_Pair", out: list[Finding]) -> None:
    """Swapped arguments."""
    said = swapped_files(p.pre_ck, p.ft_ck, p.pre_name, p.ft_name)
    if said:
        out.append(Finding("error", "swapped-files", said, []))


# in the order the findings were always produced (the sort by severity is stable)
_FINDERS = (_swapped_findings, _different_models, _rule_findings, _enc_q_findings, _embedding_findings,
            _shape_findings, _pro_findings, _gpt_prefix_findings, _wrapper_findings, _file_findings,
            _version_findings)


_KIND_WORDS = {"gpt": "GPT (s1) model", "sovits-G": "SoVITS generator", "sovits-G-lora": "SoVITS generator",
               "sovits-D": "SoVITS discriminator", "vocoder": "vocoder", "other": "model"}


def _same_net(kind: str, a: str, b: str) -> bool:
    """Versions that share one architecture (GPT v2..v2ProPlus, D v1/v2)."""
    if kind == "gpt":
        return (a == "v1") == (b == "v1")
    if kind == "sovits-D":
        return ("Pro" in a) == ("Pro" in b)
    return False


def _lora_rank(ck: Any, lora_a: list[TensorInfo]) -> int | None:
    r = getattr(ck, "root", None)
    if isinstance(r, dict) and isinstance(r.get("lora_rank"), int):
        return r["lora_rank"]
    for t in lora_a:
        if t.shape:
            return t.shape[0]
    return None

