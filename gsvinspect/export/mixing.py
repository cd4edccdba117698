"""Which source each output tensor comes from, and computing it: fine-tuned, filled from the
pretrained file, interpolated ``(1-A)*pre + A*ft``, or LoRA-merged (kept in LoRA form with lora_B
scaled when the output stays a LoRA file).

`plan_tensors` builds the `TensorSource` list from an alignment (metadata only); `compute_tensor`
produces one output tensor at write time: mapped from the input when unchanged, else computed in
fp32 and cast.
"""

from __future__ import annotations

from ..align.rules import mix_alpha as alpha_for  # one rule for export and the preview (stats.mix)
from ..errors import ExportError, UsageError
from ..load.checkpoint import exact_tensor
from ..meta import FLOAT_DTYPES
from .plan_data import ExportPlan, TensorSource

_DTYPE_NAMES = {"half": "float16", "float": "float32"}


def out_dtype(mode: str, natural: str) -> str:
    if natural not in FLOAT_DTYPES:
        return natural
    return _DTYPE_NAMES.get(mode, natural)




def check_alpha(a: float | None) -> None:
    if a is not None and not (0.0 <= a <= 1.0):
        raise UsageError(f"--alpha must be in [0, 1] (1 = fine-tuned, 0 = pretrained), got {a}")



def ft_view(ft_ck, pre_ck, ft_lora: bool):
    """The fine-tuned weights as the alignment sees them: plain keys, LoRA merged on paper."""
    if not ft_lora:
        return ft_ck.weights, None
    from .lora import lora_view

    declared = ft_ck.extras.get("lora_rank")
    try:
        view = lora_view(ft_ck.weights, pre_ck.weights,
                         declared_rank=declared if isinstance(declared, int) else None)
    except ValueError as exc:
        raise ExportError(ft_ck.path, str(exc)) from None
    return view.infos, view


def plan_lora_form(ft_ck, pre_ck, view, al, rules, alpha, dtype, tensors, dropped, *, keep_all: bool,
                    natural) -> None:
    """Keep the file in LoRA form (upstream's LoRA export, or the LoRA file itself): keys as stored.

    Interpolating with alpha equals scaling lora_B by alpha (the merged weight becomes
    base + alpha·B@A), and mixing the other keys with the pretrained tensor of the same plain name.
    """
    from ..align.alignment import Status
    from .lora import in_lora_export, plain_key

    by_target = {r.target: r for r in al.rows}
    for k, info in ft_ck.weights.items():
        if not keep_all and not in_lora_export(k):
            dropped.append((k, "not part of upstream's LoRA export (frozen)"))
            continue
        ts = TensorSource(k, tuple(info.shape), out_dtype(dtype, natural(info)), "ft", info.dtype, ft_key=k)
        if ".lora_B." in k:
            module = k.split(".lora_B.")[0]
            target = plain_key(module + ".base_layer.weight") or k
            a = alpha_for(rules, alpha, target)
            if a is not None and a != 1.0:
                ts.scale_b = a
        elif ".lora_A." not in k:
            pk = plain_key(k)
            row = by_target.get(pk) if pk else None
            if row is not None and row.pre_key and row.status in (Status.MATCHED, Status.DTYPE_DIFFERS):
                a = alpha_for(rules, alpha, row.target)
                if a is not None and a != 1.0 and info.is_float and row.pre.is_float:
                    ts.alpha, ts.pre_key = a, row.pre_key
        tensors.append(ts)



_NUMPY_FLOATS = {"float16": "<f2", "float32": "<f4", "float64": "<f8"}


def compute_tensor(plan: ExportPlan, ts: TensorSource):
    """The output tensor for one TensorSource: mapped when unchanged, else computed in fp32 and cast.

    Casts and interpolation run in numpy when the dtypes allow (single-threaded, memory-bound: on
    small machines torch's intra-op threads made the same loop several times slower, and numpy's
    elementwise IEEE float32 ops give the same bits); bfloat16 and LoRA merges use torch.
    """
    import torch

    pre, ft = plan.pre, plan.ft
    src_ck, src_key = (pre, ts.pre_key) if ts.origin == "pre" else (ft, ts.ft_key)
    changes = ts.scale_b is not None or (ts.alpha is not None and ts.pre_key is not None)
    if ts.origin != "lora" and not changes and ts.src_dtype == ts.dtype:
        return exact_tensor(src_ck.tensor(src_key))  # unchanged: bytes straight from the mapped input
    mix_dtype = pre.weights[ts.pre_key].dtype if ts.alpha is not None and ts.pre_key else "float32"
    if ts.origin != "lora" and {ts.src_dtype, ts.dtype, mix_dtype} <= set(_NUMPY_FLOATS) \
            and not getattr(src_ck, "trusted", False) and not getattr(pre, "trusted", False):
        return torch.from_numpy(_compute_numpy(plan, ts, src_ck, src_key))
    out_dtype = getattr(torch, ts.dtype)
    if ts.origin == "lora":
        m = ts.lora
        base = (ft if m.base_side == "ft" else pre).tensor(m.base_key)
        from .lora import merged_tensor

        t = merged_tensor(base, ft.tensor(m.a_key), ft.tensor(m.b_key), m.scale)
    else:
        t = src_ck.tensor(src_key)
    if ts.scale_b is not None:
        t = t.to(torch.float32, copy=True).mul_(ts.scale_b)
    if ts.alpha is not None and ts.pre_key is not None:
        p = pre.tensor(ts.pre_key)
        # exactly (1-A)*pre + A*ft, two roundings in fp32 (no fused multiply-add): reproducible
        mixed = p.to(torch.float32, copy=True).mul_(1.0 - ts.alpha)
        mixed.add_(t.to(torch.float32).mul(ts.alpha))
        t = mixed
    if t.dtype != out_dtype:
        t = t.to(out_dtype)
    return exact_tensor(t)


def _compute_numpy(plan: ExportPlan, ts: TensorSource, src_ck, src_key: str):
    import numpy as np

    a = src_ck.array(src_key)
    if ts.scale_b is not None:
        a = a.astype(np.float32) * np.float32(ts.scale_b)
    if ts.alpha is not None and ts.pre_key is not None:
        p = plan.pre.array(ts.pre_key)
        mixed = p.astype(np.float32) * np.float32(1.0 - ts.alpha)
        mixed += a.astype(np.float32, copy=False) * np.float32(ts.alpha)
        a = mixed
    out = np.dtype(_NUMPY_FLOATS[ts.dtype])
    if a.dtype != out or not a.flags.writeable:
        a = a.astype(out)
    return np.ascontiguousarray(a)



class _TensorTable:
    """Collects the output tensors of a plan, with the drops and problems they cause."""

    def __init__(self, pre_ck, choice: str, rules, alpha, dtype: str, missing: str, view, problems: list[str]):
        self.pre_ck, self.choice, self.rules, self.alpha = pre_ck, choice, rules, alpha
        self.dtype, self.missing, self.view, self.problems = dtype, missing, view, problems
        self.tensors: list[TensorSource] = []
        self.dropped: list[tuple[str, str]] = []

    def natural_dtype(self, pre_info, ft_info) -> str:
        if self.choice == "pretrained":
            return (pre_info or ft_info).dtype
        if self.choice in ("gpt-weights", "sovits-weights"):
            return "float16" if (ft_info or pre_info).dtype in FLOAT_DTYPES else (ft_info or pre_info).dtype
        return (ft_info or pre_info).dtype

    def from_ft(self, out_key: str, ft_key: str, pre_key: str | None, target: str, pre_info, ft_info) -> None:
        a = alpha_for(self.rules, self.alpha, target) if pre_key is not None else None
        if a is not None and not (ft_info.is_float and pre_info is not None and pre_info.is_float):
            a = None  # integer/bool buffers are never interpolated
        if a == 1.0:
            a = None
        nat = self.natural_dtype(pre_info, ft_info)
        src = ft_key
        view = self.view
        merge = view.merges.get(ft_key) if view is not None else None
        if view is not None and merge is None:
            src = view.sources.get(ft_key, ft_key)
        ts = TensorSource(out_key, tuple(ft_info.shape), out_dtype(self.dtype, nat),
                          "lora" if merge is not None else "ft",
                          "float32" if merge is not None else ft_info.dtype,
                          ft_key=src, pre_key=pre_key, alpha=a, lora=merge)
        if a == 0.0:  # all pretrained: take it bit for bit
            ts.origin, ts.src_dtype, ts.lora, ts.alpha = "pre", pre_info.dtype, None, None
            ts.reason = "alpha 0"
        self.tensors.append(ts)

    def from_pre(self, out_key: str, pre_key: str, reason: str) -> None:
        info = self.pre_ck.weights[pre_key]
        if self.missing == "error":
            self.problems.append(f"{pre_key}: {reason} (--missing error)")
        self.tensors.append(TensorSource(out_key, tuple(info.shape),
                                         out_dtype(self.dtype, self.natural_dtype(info, None)),
                                         "pre", info.dtype, pre_key=pre_key, reason=reason))

    def same_layout(self, ft_ck, by_ft) -> None:
        """The fine-tuned file's own keys and order; the pretrained file only serves interpolation."""
        from ..align.alignment import Status

        for k, info in ft_ck.weights.items():
            row = by_ft.get(k)
            paired = row is not None and row.status in (Status.MATCHED, Status.DTYPE_DIFFERS)
            self.from_ft(k, k, row.pre_key if paired else None, row.target if row else k,
                         self.pre_ck.weights[row.pre_key] if paired else None, info)

    def pretrained_layout(self, al, by_pre, notes: list[str]) -> None:
        """The pretrained file's keys and order, each filled from its fine-tuned partner if any."""
        from ..align.alignment import Status

        drop_enc_q = self.choice == "sovits-weights"
        for pk in self.pre_ck.weights:
            if drop_enc_q and "enc_q" in pk:  # savee drops any key containing "enc_q" (FORMATS §6)
                continue
            row = by_pre.get(pk)
            if row is None:  # removed from the comparison by a pre-side rule: keep the pretrained tensor
                self.from_pre(pk, pk, "excluded from matching by a rule")
                continue
            st = row.status
            if st in (Status.MATCHED, Status.DTYPE_DIFFERS):
                self.from_ft(pk, row.ft_key, pk, row.target, row.pre, row.ft)
            elif st is Status.MISSING:
                self.from_pre(pk, pk, "not in the fine-tuned file")
            elif st in (Status.SHAPE_DIFFERS, Status.CONFLICT):
                self._unpairable(pk, row, st is Status.SHAPE_DIFFERS)
        self._drops(al, drop_enc_q)
        tensors = self.tensors
        n_ft = sum(t.ft_key is not None for t in tensors)  # keys with a fine-tuned partner, whatever alpha did
        if tensors and n_ft == 0:
            self.problems.append("no fine-tuned tensor matched a pretrained key: the output would be the "
                                 "pretrained model; give --rules FILE or --suggest")
        elif tensors and n_ft < len(tensors) // 2:
            notes.append(f"only {n_ft} of {len(tensors)} keys come from the fine-tuned file")

    def _unpairable(self, pk: str, row, shape: bool) -> None:
        reason = (f"shape differs (pretrained {list(row.pre.shape)}, fine-tuned {list(row.ft.shape)})"
                  if shape else f"conflict: {', '.join(row.sources)} all map to {row.target}")
        if self.missing == "error":
            self.problems.append(f"{pk}: {reason}")
            return
        self.from_pre(pk, pk, reason)
        if shape:
            self.dropped.append((row.ft_key, reason))

    def _drops(self, al, drop_enc_q: bool) -> None:
        from ..align.alignment import Status

        for row in al.rows:
            if row.status is Status.UNEXPECTED:
                self.dropped.append((row.ft_key, "not in the pretrained file"))
            elif row.status is Status.CONFLICT and row.pre_key is None:
                for s in row.sources:
                    self.dropped.append((s, f"conflict on {row.target}"))
        if drop_enc_q:
            for row in al.rows:
                if row.pre_key and "enc_q" in row.pre_key and row.ft_key:
                    self.dropped.append((row.ft_key, "enc_q is not part of an inference export"))


def plan_tensors(pre_ck, ft_ck, al, *, choice: str, rules, alpha, dtype: str, missing: str, view,
                 lora_form: bool, problems: list[str], notes: list[str]):
    """(tensors, dropped) of an export: every output key with its source, and what is left out."""
    from ..align.alignment import Status

    table = _TensorTable(pre_ck, choice, rules, alpha, dtype, missing, view, problems)
    for side, key, rule in al.dropped:
        if side == "ft":
            table.dropped.append((key, f"dropped by rule {rule + 1}"))
    if lora_form and view is not None and choice == "same":
        plan_lora_form(ft_ck, pre_ck, view, al, rules, alpha, dtype, table.tensors, table.dropped,
                       keep_all=True, natural=lambda info: info.dtype)
    elif lora_form:
        plan_lora_form(ft_ck, pre_ck, view, al, rules, alpha, dtype, table.tensors, table.dropped,
                       keep_all=False, natural=lambda info: "float16" if info.is_float else info.dtype)
    elif choice == "same":
        by_ft = {r.ft_key: r for r in al.rows if r.ft_key is not None and r.status is not Status.CONFLICT}
        table.same_layout(ft_ck, by_ft)
    else:
        by_pre = {r.pre_key: r for r in al.rows if r.pre_key is not None}
        table.pretrained_layout(al, by_pre, notes)
    dropped = table.dropped
    if view is not None:  # view keys are plain names; report drops under the names stored in the file
        dropped = [(view.sources.get(k, k), r) for k, r in dropped]
    return table.tensors, dropped
