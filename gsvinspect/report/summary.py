"""Human and JSON summaries of one checkpoint: what `gsvinspect info` prints and the TUI shows.

Kept apart from the commands so the TUI's detail panel and the CLI say the same thing.
"""

from __future__ import annotations

from typing import Any

from ..load.detect import base_verdict
from ..meta import fmt_shape
from .output import bounded_repr, human_bytes, human_count, to_jsonable
from ..load.safe_unpickle import Opaque, TensorRef


def describe_value(v: Any) -> str:
    """One line describing an extra entry (config, info, optimizer, loops...)."""
    if isinstance(v, TensorRef):
        return f"tensor {fmt_shape(v.shape)} {v.dtype}"
    if isinstance(v, Opaque):
        plain = v.as_plain()
        if isinstance(plain, dict):
            return f"{v.fullname} object with {len(plain)} fields: {', '.join(map(str, list(plain)[:8]))}" + (
                ", ..." if len(plain) > 8 else "")
        return f"{v.fullname} object: {plain!r}"[:120]
    if isinstance(v, dict):
        if {"state", "param_groups"} <= set(v):
            groups = v.get("param_groups") or []
            n_params = sum(len(g.get("params", [])) for g in groups if isinstance(g, dict))
            return f"optimizer state: {len(groups)} param group(s), {n_params} params, {len(v.get('state') or {})} with state"
        keys = list(v)
        return f"dict with {len(keys)} entries: {', '.join(map(str, keys[:8]))}" + (", ..." if len(keys) > 8 else "")
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, dict) and "param_groups" in x for x in v):
            return f"{len(v)} optimizer state(s)"
        return f"{type(v).__name__} of {len(v)}"
    if isinstance(v, str):
        return repr(v) if len(v) <= 100 else repr(v[:97] + "...")
    return bounded_repr(v)  # bytes shared by 150 entries must not print 150 copies of 8 MiB


def loading(ck) -> dict:
    """Whether plain torch.load(weights_only=True) opens the file, what stops it, the fix; and how
    GPT-SoVITS's own inference and training read its version."""
    from ..export.repair import weights_only_blockers
    from ..export.upstream_version import upstream_reading
    from ..load.identity import identify

    blockers = [] if ck.container == "safetensors" else weights_only_blockers(ck)
    fix = None
    if blockers:
        fix = f"gsvinspect repair {_quote(str(ck.path))} -o FIXED" + (
            " --header plain" if ck.header != b"PK" else "")
    ident = identify(ck)
    cfg = ck.extras.get("config")
    if isinstance(cfg, Opaque):
        cfg = cfg.as_plain()
    emb = ck.weights.get("enc_p.text_embedding.weight")
    gpt = ck.weights.get("model.ar_text_embedding.word_embeddings.weight")
    inference, training = upstream_reading(
        ck.path, layout=ck.layout.value, version=ck.version, fits=ident.fits,
        text_embedding_rows=emb.shape[0] if emb is not None and emb.shape else None, config=cfg,
        gpt_rows=gpt.shape[0] if gpt is not None and gpt.shape else None, full_size=_full_size(ck, ident.manifest))
    return {"weights_only": not blockers and ck.container != "safetensors", "blockers": blockers, "fix": fix,
            "inference": inference, "training": training, "version_fits": list(ident.fits)}


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _full_size(ck, manifest: str | None) -> bool:
    if manifest is None:
        return False
    from ..load.manifest import expected_weights

    exp = expected_weights(manifest)
    hits = [k for k, t in ck.weights.items() if k in exp]
    return bool(hits) and all(tuple(exp[k].shape) == tuple(ck.weights[k].shape) for k in hits)


def info_dict(ck, *, with_globals: bool = False) -> dict:
    """Everything `info` shows, as plain data (the --json schema)."""
    load = loading(ck)
    d = {
        "path": str(ck.path),
        "size_bytes": ck.size,
        "container": ck.container,
        "header": ck.header.decode("latin1"),
        "layout": ck.layout.value,
        "version": ck.version,
        "evidence": list(ck.evidence),
        "layout_evidence": list(ck.layout_evidence),
        "weights_path": list(ck.weights_path),
        "tensors": len(ck.weights),
        "parameters": ck.n_params,
        "weight_bytes": ck.n_bytes,
        "bytes_by_dtype": ck.bytes_by_dtype(),
        "version_fits": load["version_fits"],
        "training_base": base_verdict(ck),
        "torch_load_weights_only": {"loads": load["weights_only"], "blockers": load["blockers"], "fix": load["fix"]},
        "gpt_sovits_reads": {"inference": load["inference"], "training": load["training"]},
        "scaler": None if ck.scaler is None else {"where": list(ck.scaler.path), "state": to_jsonable(ck.scaler.state)},
        "scaler_note": ck.scaler_note,
        "extras": {str(k): describe_value(v) for k, v in ck.extras.items()},
        "opaque_classes": list(ck.opaque),
        "md5_first_8k": ck.head8k_md5,
    }
    if with_globals:
        d["globals"] = list(ck.globals)
    return d


def info_rows(ck, *, with_globals: bool = False) -> list[tuple[str, str]]:
    """(label, text) rows of `info`, shared by the rich and the plain renderers."""
    d = info_dict(ck, with_globals=with_globals)
    fits = d["version_fits"]
    version = ck.version if len(fits) < 2 else f"{' or '.join([', '.join(fits[:-1]), fits[-1]])}: identical nets"
    rows = [("layout", ck.layout.value), ("version", version)]
    rows += [("", f"- {e}") for e in ck.evidence]
    rows.append(("container", f"{ck.container}, header {ck.header!r}, {human_bytes(ck.size)}"))
    rows += [("", f"- {e}") for e in ck.layout_evidence]
    rows.append(("weights", f"{len(ck.weights)} tensors under "
                 f"{'/'.join(ck.weights_path) if ck.weights_path else '(top level)'}, "
                 f"{human_count(ck.n_params)} parameters, {human_bytes(ck.n_bytes)}"))
    rows.append(("dtypes", ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(d["bytes_by_dtype"].items()))))
    wo = d["torch_load_weights_only"]
    if ck.container == "safetensors":
        rows.append(("torch.load", "not a torch file (safetensors)"))
    elif wo["loads"]:
        rows.append(("torch.load", "yes: plain torch.load(weights_only=True) loads it"))
    else:
        rows.append(("torch.load", "no: weights_only=True is stopped by " + "; ".join(wo["blockers"])))
        rows.append(("", f"- fix: {wo['fix']}"))
    rows.append(("GPT-SoVITS inference", d["gpt_sovits_reads"]["inference"]))
    rows.append(("GPT-SoVITS training", d["gpt_sovits_reads"]["training"]))
    rows.append(("training base", d["training_base"]))
    # the note says "no GradScaler state: why" itself: "no" is said once
    rows.append(("scaler", ("yes: " + ck.scaler_note) if ck.scaler else ck.scaler_note))
    rows += [(f"  {k}", v) for k, v in d["extras"].items()]
    if ck.opaque:
        rows.append(("placeholders", ", ".join(ck.opaque) + " (kept inert, never imported)"))
    if with_globals:
        rows += [("globals" if i == 0 else "", g) for i, g in enumerate(ck.globals)]
    return rows


def render_info_plain(out, ck, *, with_globals: bool = False) -> None:
    """Plain text for pipes and scripts: no rich import, no escape codes."""
    rows = info_rows(ck, with_globals=with_globals)
    width = max(len(label) for label, _ in rows)
    out.write(f"{ck.path}\n")
    for label, text in rows:
        out.write(f"{label:<{width}}  {text}\n")
    out.write("\n")


def render_info(con, ck, *, with_globals: bool = False) -> None:
    """The same rows as a rich table; texts are never parsed as markup (they quote the file)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(str(ck.path), style="table.title"), title_justify="left", show_header=False, box=None,
              pad_edge=False)
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(overflow="fold")
    for label, text in info_rows(ck, with_globals=with_globals):
        cell = Text(text)
        if label == "version":
            cell.stylize("bold")
        elif label == "scaler":
            cell.stylize("green" if ck.scaler else "yellow", 0, max(text.find(":"), 0) or len(text))
        t.add_row(Text(label), cell)
    con.print(t)
    con.print()
