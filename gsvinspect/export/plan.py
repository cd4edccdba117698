"""`plan_export`: everything an export will do, from metadata only, as a sequence of named steps.

Options are checked, the model and version are settled, the fine-tuned side is viewed with any LoRA
merged on paper, the target layout is chosen (`layouts`), the keys are aligned and each output
tensor gets its source (`mixing`), then the scaler, config, entries, `info`, manifest and size rule
follow. Problems with the inputs' contents never raise: they are listed in ``plan.problems`` and
``run_export`` refuses a plan that has any.
"""

from __future__ import annotations

from ..errors import UsageError
from ..load.identity import identify
from ..meta import VERSIONS
from .layouts import (describe_config, find_config, info_text, is_full_size, is_lora, manifest_name_for,
                      model_kind, plan_entries, size_rule_for, target_layout, upstream_info)
from .mixing import check_alpha, ft_view, plan_tensors
from .options import CONFIG_CHOICES, DTYPE_CHOICES, LAYOUT_ALIASES, LAYOUT_CHOICES, MISSING_CHOICES
from .plan_data import ExportPlan


def plan_export(pre_ck, ft_ck, *, rules=None, layout: str | None = None, dtype: str = "keep",
                alpha: float | None = None, missing: str = "pretrained", config: str = "plain",
                suggest: bool = False, allow_swapped: bool = False) -> ExportPlan:
    """Plan exporting `ft_ck` (fine-tuned) onto the structure given by `pre_ck` (pretrained).

    Never raises for a problem with the inputs' contents: problems are listed in ``plan.problems``
    (``run_export`` refuses a plan that has any). Raises UsageError for invalid options.
    """
    from ..align.alignment import align
    from ..align.knowledge import swapped_files

    choice = _check_options(layout, dtype, missing, config, alpha)
    problems: list[str] = _entry_mismatches(rules, pre_ck, ft_ck)
    swapped = swapped_files(pre_ck, ft_ck)
    if swapped and not allow_swapped:
        problems.append(f"{swapped}; give PRE then FT, or --allow-swapped if this is really what you mean")
    notes: list[str] = []
    kind, version = _model(pre_ck, ft_ck, problems, notes)
    ft_lora = is_lora(ft_ck)
    ft_infos, view = ft_view(ft_ck, pre_ck, ft_lora)
    rules = _suggested(rules, suggest, pre_ck, ft_infos, notes)
    if view is not None and view.unresolved:
        problems.append(f"{len(view.unresolved)} LoRA layers have no base weight in either file "
                        f"(e.g. {view.unresolved[0]})")
    out_layout, header, lora_form = target_layout(choice, kind, version, pre_ck, ft_ck, ft_lora, problems)

    al = align(pre_ck.weights, ft_infos, rules)
    tensors, dropped = plan_tensors(pre_ck, ft_ck, al, choice=choice, rules=rules, alpha=alpha, dtype=dtype,
                                    missing=missing, view=view, lora_form=lora_form, problems=problems,
                                    notes=notes)

    scaler_where, scaler_from, scaler_note = _scaler(pre_ck, ft_ck)
    cfg, config_source = _config(pre_ck, ft_ck)
    what = {"pretrained": "base", "gpt-weights": "export", "sovits-weights": "export"}.get(choice, "copy")
    info = info_text(pre_ck, ft_ck, alpha, rules, view, version,
                     {"gpt": "GPT", "sovits-g": "SoVITS G", "sovits-d": "SoVITS D"}.get(kind, kind) + " " + what,
                     upstream_info(choice, kind, version, ft_ck, lora_form))
    entries, weights_container, top_ordered, weights_ordered = plan_entries(
        choice, kind, pre_ck, ft_ck, scaler_where, scaler_from, config_source, cfg is not None, lora_form)
    if not any(e.what == "info" for e in entries):
        info = None
    _content_checks(choice, kind, version, cfg, tensors, problems, notes)

    manifest_name = manifest_name_for(kind, version, choice, lora_form)
    rank = view.rank if view is not None else None
    plan = ExportPlan(
        pre_path=pre_ck.path, ft_path=ft_ck.path, kind=kind, version=version, layout=out_layout,
        layout_choice=choice, header=header, dtype_mode=dtype, config_mode=config,
        tensors=tensors, entries=entries, dropped=dropped, scaler_where=scaler_where,
        scaler_from=scaler_from, scaler_note=scaler_note, config_source=config_source, info=info,
        alpha=alpha, lora_rank=rank, lora_merged=len(view.merges) if view is not None and not lora_form else 0,
        rules_source=_rules_source(rules), size_rule=size_rule_for(kind, version, choice, header),
        full_size=is_full_size(tensors, manifest_name, rank), manifest_name=manifest_name,
        problems=problems, notes=notes, weights_container=weights_container, top_ordered=top_ordered,
        weights_ordered=weights_ordered, pre=pre_ck, ft=ft_ck)
    _size_check(plan)
    return plan


# ---- the steps -------------------------------------------------------------------------------

def _check_options(layout, dtype, missing, config, alpha) -> str:
    """The canonical --layout choice; UsageError for any invalid option."""
    choice = LAYOUT_ALIASES.get(layout or "pretrained", layout or "pretrained")
    if choice not in LAYOUT_CHOICES:
        raise UsageError(f"unknown --layout {layout!r}; choose from {', '.join(LAYOUT_CHOICES)} "
                         f"(aliases: {', '.join(LAYOUT_ALIASES)})")
    if dtype not in DTYPE_CHOICES:
        raise UsageError(f"unknown --dtype {dtype!r}; choose from {', '.join(DTYPE_CHOICES)}")
    if missing not in MISSING_CHOICES:
        raise UsageError(f"unknown --missing {missing!r}; choose from {', '.join(MISSING_CHOICES)}")
    if config not in CONFIG_CHOICES:
        raise UsageError(f"unknown --config {config!r}; choose from {', '.join(CONFIG_CHOICES)}")
    check_alpha(alpha)
    return choice


def _entry_mismatches(rules, *cks) -> list[str]:
    """The rules name a weights entry that a file has but was not opened with (the export would
    take another state dict than the one the rules were written for)."""
    entry = getattr(rules, "weights_entry", None)
    out = []
    for ck in cks if entry else ():
        if isinstance(ck.root, dict) and entry in ck.root and tuple(ck.weights_path) != (entry,):
            where = ".".join(ck.weights_path) or "(top level)"
            out.append(f"{ck.path}: the rules' weights_entry is {entry!r} but the weights were taken from "
                       f"{where!r}; open it with checkpoint.open_with_entry")
    return out


def _model(pre_ck, ft_ck, problems: list[str], notes: list[str]) -> tuple[str, str]:
    """(kind, version) the output is: the pretrained file's, unless it says nothing."""
    kind = model_kind(pre_ck)
    ft_kind = model_kind(ft_ck)
    if kind == "unknown":
        kind = ft_kind
    if ft_kind not in ("unknown", kind):
        problems.append(f"the pretrained file is a {kind} checkpoint but the fine-tuned one is a {ft_kind}")
    version = pre_ck.version if pre_ck.version in VERSIONS else ft_ck.version
    if kind == "gpt" and pre_ck.version == "v2" and ft_ck.version in ("v3", "v4", "v2Pro", "v2ProPlus"):
        version = ft_ck.version  # one GPT net for v2..v2ProPlus: the fine-tune names the generation
    elif ft_ck.version != version and ft_ck.version in identify(pre_ck).fits:
        version = ft_ck.version  # PRE fits several versions (identical nets) and FT names one of them
    if pre_ck.version in VERSIONS and ft_ck.version in VERSIONS and pre_ck.version != ft_ck.version:
        notes.append(f"versions differ: pretrained {pre_ck.version}, fine-tuned {ft_ck.version}; "
                     f"writing {version}")
    return kind, version


def _suggested(rules, suggest: bool, pre_ck, ft_infos, notes: list[str]):
    if not suggest or rules is not None:
        return rules
    from ..align.suggest import suggest_rules

    rules = suggest_rules(pre_ck.weights, ft_infos)
    if len(rules):
        notes.append("rules suggested automatically (--suggest): " + "; ".join(r.describe() for r in rules))
    return rules


def _rules_source(rules) -> str | None:
    source = getattr(rules, "source", None) if rules is not None else None
    if rules is not None and source is None and len(rules):
        source = "(rules given in code)"
    return source


def _scaler(pre_ck, ft_ck) -> tuple[tuple[str, ...] | None, str | None, str]:
    """Where the GradScaler state goes, which file it comes from, and why there is none."""
    src = ft_ck if ft_ck.scaler is not None else (pre_ck if pre_ck.scaler is not None else None)
    if src is None:
        return None, None, f"neither file has one ({ft_ck.scaler_note or 'fine-tuned: none'}); nothing is invented"
    return tuple(src.scaler.path), ("fine-tuned" if src is ft_ck else "pretrained"), ""


def _config(pre_ck, ft_ck):
    """(config found, where it came from in words): the fine-tuned file's, else the pretrained one's."""
    cfg = find_config(ft_ck)
    if cfg is not None:
        return cfg, f"fine-tuned {cfg[1]} ({describe_config(cfg[0])})"
    cfg = find_config(pre_ck)
    return cfg, (f"pretrained {cfg[1]} ({describe_config(cfg[0])}); the fine-tuned file has none"
                 if cfg is not None else "none in either file")


def _content_checks(choice, kind, version, cfg, tensors, problems: list[str], notes: list[str]) -> None:
    if kind == "gpt" and cfg is None and choice != "same":
        problems.append("no config in either file: GPT-SoVITS inference needs config['model'] and data.max_sec")
    if choice == "pretrained" and kind == "sovits-g" and version in ("v1", "v2", "v2Pro", "v2ProPlus"):
        if not any("enc_q" in t.key for t in tensors):
            notes.append("no enc_q in the output (the pretrained file has none): training from it starts "
                         "with a random posterior encoder (strict=False load)")


def _size_check(plan: ExportPlan) -> None:
    """Refuse up front an output GPT-SoVITS's size ladders would misread (padding cannot shrink a file)."""
    if plan.size_rule is None or not plan.full_size:
        return
    lo, hi = plan.size_rule
    est = plan.estimated_size
    if hi is not None and est >= hi * 1.02:
        plan.problems.append(
            f"the output would be ~{est:,} B, but GPT-SoVITS reads a {plan.version} "
            f"{'base G' if plan.layout_choice == 'pretrained' else 'export'} only below {hi:,} B (its size-based "
            f"version detection, FORMATS §2.3)" + ("; use --dtype half" if plan.dtype_mode == "float" else ""))
