"""Where a fine-tune moved the model: per-module roll-ups, rankings and phoneme-embedding rows.

Per-tensor numbers (:mod:`gsvinspect.stats.engine`) answer "how much did this weight move"; the user's
question is "which *part* of the model moved", e.g. ``enc_p.encoder`` vs ``dec``. A module's
relative change is computed from summed squares, ``sqrt(Σ‖Δ‖²) / sqrt(Σ‖pre‖²)``, i.e. as if all
its paired tensors were one vector, so a big tensor weighs more than a tiny bias. For the
phoneme embedding tables, :func:`embedding_rows` gives one change per row, labelled with its
symbol and language, and says which languages' rows moved (the ones the fine-tune data used)
and which stayed.

Functions:
    rollup(per_key) -> dict[prefix, ModuleStats] for "" (whole model) and every dotted prefix.
    top_tensors / top_modules -> re-exported from :mod:`gsvinspect.stats.rank` (how rankings work).
    embedding_keys(targets) -> targets that are phoneme embedding tables.
    embedding_rows(pre_ck, ft_ck, pre_key, ft_key) -> RowChanges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from ..errors import UsageError
from .kernels import read_f64
from .results import StatsResult, TensorStats, cosine_from_sums, one_minus_cosine_from_sums, rel_change
from .rank import _rank_key, top_modules, top_tensors  # noqa: F401  (re-exported)
from ..load.symbols import UNKNOWN, UNUSED, Symbol, label_rows, languages, symbol_set_for_rows

EMBEDDING_KEYS = (
    "model.ar_text_embedding.word_embeddings.weight",   # GPT (s1)
    "enc_p.text_embedding.weight",                       # SoVITS G
)
DEFAULT_MOVED = 1e-3   # a row "moved" when ‖Δrow‖/‖pre row‖ exceeds this


@dataclass(slots=True)
class ModuleStats:
    """Combined change of every tensor under one key prefix (a module)."""

    prefix: str                       # "" is the whole model
    depth: int                        # number of dotted parts ("" = 0, "enc_p" = 1, ...)
    tensors: int = 0                  # targets under the prefix
    paired: int = 0                   # of which compared element-wise
    direct: int = 0                   # compared tensors directly in this module (a "layer" when > 0)
    only_pre: int = 0
    only_ft: int = 0
    numel: int = 0                    # elements compared (paired tensors)
    sumsq_pre: float = 0.0            # over paired tensors
    sumsq_ft: float = 0.0
    sumsq_diff: float = 0.0
    sumsq_diff_finite: float = 0.0    # over paired tensors whose ‖Δ‖² is finite (the share denominator)
    changed: int = 0
    max_abs_diff: float = 0.0
    nan: int = 0                      # both sides, all tensors
    inf: int = 0
    overflow16: int = 0

    @property
    def norm_pre(self) -> float:
        return math.sqrt(self.sumsq_pre)

    @property
    def norm_ft(self) -> float:
        return math.sqrt(self.sumsq_ft)

    @property
    def norm_diff(self) -> float:
        return math.sqrt(self.sumsq_diff)

    @property
    def rel_change(self) -> float | None:
        return rel_change(self.sumsq_pre, self.sumsq_diff) if self.paired else None

    @property
    def cosine(self) -> float | None:
        return cosine_from_sums(self.sumsq_pre, self.sumsq_ft, self.sumsq_diff) if self.paired else None

    @property
    def one_minus_cos(self) -> float | None:
        return one_minus_cosine_from_sums(self.sumsq_pre, self.sumsq_ft, self.sumsq_diff) if self.paired else None

    @property
    def changed_frac(self) -> float | None:
        return self.changed / self.numel if self.numel else (0.0 if self.paired else None)


def _prefixes(target: str) -> Iterable[str]:
    yield ""
    parts = target.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])


def rollup(per_key: Mapping[str, TensorStats] | StatsResult) -> dict[str, ModuleStats]:
    """Module statistics for the whole model ("") and every prefix of the key tree.

    A tensor's own full key is not a module; ``enc_p.encoder.attn_layers.0.conv_q.weight``
    contributes to ``""``, ``enc_p``, ``enc_p.encoder``, ... ``enc_p.encoder.attn_layers.0.conv_q``.
    """
    if isinstance(per_key, StatsResult):
        per_key = per_key.per_key
    out: dict[str, ModuleStats] = {}
    for target, ts in per_key.items():
        pre = ""
        for pre in _prefixes(target):
            m = out.get(pre)
            if m is None:
                m = out[pre] = ModuleStats(pre, 0 if not pre else pre.count(".") + 1)
            m.tensors += 1
            if ts.pre_key is not None and ts.ft_key is None:
                m.only_pre += 1
            elif ts.ft_key is not None and ts.pre_key is None:
                m.only_ft += 1
            for v in (ts.nan_pre, ts.nan_ft):
                m.nan += v or 0
            for v in (ts.inf_pre, ts.inf_ft):
                m.inf += v or 0
            for v in (ts.overflow16_pre, ts.overflow16_ft):
                m.overflow16 += v or 0
            if ts.paired:
                m.paired += 1
                m.numel += ts.numel
                m.sumsq_pre += ts.sumsq_pre
                m.sumsq_ft += ts.sumsq_ft
                m.sumsq_diff += ts.sumsq_diff
                if math.isfinite(ts.sumsq_diff):
                    m.sumsq_diff_finite += ts.sumsq_diff
                m.changed += ts.changed or 0
                if not (ts.max_abs_diff <= m.max_abs_diff):
                    m.max_abs_diff = ts.max_abs_diff
        if ts.paired:
            out[pre].direct += 1          # the last prefix is the tensor's own module
    return out


def embedding_keys(targets: Iterable[str]) -> list[str]:
    """Targets that are GPT-SoVITS phoneme embedding tables (whatever prefix a rule added)."""
    return [t for t in targets if any(t == k or t.endswith("." + k) for k in EMBEDDING_KEYS)]


# --------------------------------------------------------------------------------------------
# embedding rows
# --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class RowChange:
    """One phoneme's embedding row, before and after."""

    index: int                 # row in the fine-tuned table (pre table when ft has no such row)
    pre_index: int | None
    symbol: str
    language: str
    norm_pre: float
    norm_ft: float
    norm_diff: float
    rel_change: float
    cosine: float


@dataclass(slots=True)
class LanguageSummary:
    """How one language's rows moved, as a group."""

    language: str
    rows: int
    moved: int                 # rows with rel_change > threshold
    changed: int               # rows with any difference at all
    rel_change: float          # combined: sqrt(Σ‖Δ‖²)/sqrt(Σ‖pre‖²) over the language's rows
    mean_rel: float
    max_rel: float
    top: list[str] = field(default_factory=list)   # most-moved symbols, up to 5

    @property
    def moved_frac(self) -> float:
        return self.moved / self.rows if self.rows else 0.0


@dataclass(slots=True)
class RowChanges:
    """Per-row change of a phoneme embedding table, labelled, with a per-language summary."""

    pre_key: str
    ft_key: str
    symbol_set: str | None                  # "v1", "v2" or None (unknown row count)
    shape_pre: tuple[int, ...]
    shape_ft: tuple[int, ...]
    rows: list[RowChange]
    by_language: dict[str, LanguageSummary]
    moved_threshold: float
    only_pre: list[Symbol] = field(default_factory=list)   # symbols the ft table lacks (v2 -> v1)
    only_ft: list[Symbol] = field(default_factory=list)    # symbols new in the ft table (v1 -> v2)
    note: str = ""

    @property
    def rel_changes(self) -> np.ndarray:
        """Row relative changes in row order (for charts)."""
        return np.array([r.rel_change for r in self.rows], dtype=np.float64)

    def top(self, n: int = 20) -> list[RowChange]:
        return sorted(self.rows, key=lambda r: _rank_key(r.rel_change))[:n]

    def moved_languages(self) -> list[str]:
        """Languages with at least one moved row, most-moved (combined) first."""
        langs = [s for s in self.by_language.values() if s.moved]
        langs.sort(key=lambda s: _rank_key(s.rel_change))
        return [s.language for s in langs]


def _read_2d(ck, key: str) -> np.ndarray:
    info = ck.weights[key]
    if len(info.shape) != 2:
        raise UsageError(f"{key}: an embedding table is 2-D, this is {tuple(info.shape)}")
    return read_f64(ck, key).reshape(info.shape)


def embedding_rows(pre_ck, ft_ck, pre_key: str, ft_key: str, *,
                   moved_threshold: float = DEFAULT_MOVED) -> RowChanges:
    """Per-row change of a phoneme embedding table, labelled with symbols and languages.

    Same row count: row i is compared with row i and labelled from the symbol set the row count
    implies (322 -> v1, 512 -> v1 + 190 unused GPT rows, 732 -> v2). Different row counts
    (a v1 base fine-tuned into a v2 model, or back): rows are paired **by symbol**, and the symbols
    on one side only are listed in ``only_pre`` / ``only_ft``. Different widths: UsageError.
    """
    a = _read_2d(pre_ck, pre_key)
    b = _read_2d(ft_ck, ft_key)
    if a.shape[1] != b.shape[1]:
        raise UsageError(f"embedding widths differ: {a.shape} vs {b.shape}")
    lab_a, lab_b = label_rows(a.shape[0]), label_rows(b.shape[0])
    only_pre: list[Symbol] = []
    only_ft: list[Symbol] = []
    note = ""
    if a.shape[0] == b.shape[0]:
        ia = ib = np.arange(a.shape[0])
        labels = lab_b
        symbol_set = symbol_set_for_rows(b.shape[0])
    else:
        sa, sb = symbol_set_for_rows(a.shape[0]), symbol_set_for_rows(b.shape[0])
        if sa is None or sb is None:
            raise UsageError(f"embedding tables {a.shape} vs {b.shape}: row counts match no symbol set, "
                             "rows cannot be paired")
        pos_a = {s.symbol: s.index for s in lab_a if s.language not in (UNUSED, UNKNOWN)}
        pos_b = {s.symbol: s.index for s in lab_b if s.language not in (UNUSED, UNKNOWN)}
        common = [s for s in lab_b if s.symbol in pos_a and s.symbol in pos_b]
        ia = np.array([pos_a[s.symbol] for s in common], dtype=np.intp)
        ib = np.array([s.index for s in common], dtype=np.intp)
        labels = common
        only_pre = [s for s in lab_a if s.symbol in pos_a and s.symbol not in pos_b]
        only_ft = [s for s in lab_b if s.symbol in pos_b and s.symbol not in pos_a]
        symbol_set = sb
        note = f"row counts differ ({a.shape[0]} vs {b.shape[0]}): {len(common)} rows paired by symbol"
    pa, pb = a[ia], b[ib]
    P = np.einsum("ij,ij->i", pa, pa)
    F = np.einsum("ij,ij->i", pb, pb)
    d = pb - pa
    D = np.einsum("ij,ij->i", d, d)
    rows: list[RowChange] = []
    for k, lab in enumerate(labels):
        p, f, dd = float(P[k]), float(F[k]), float(D[k])
        rows.append(RowChange(int(ib[k]), int(ia[k]), lab.symbol, lab.language, math.sqrt(p), math.sqrt(f),
                              math.sqrt(dd), rel_change(p, dd), cosine_from_sums(p, f, dd)))
    order = languages(symbol_set) if symbol_set else []
    by_lang: dict[str, LanguageSummary] = {}
    for lang in order + sorted({r.language for r in rows} - set(order)):
        group = [(k, r) for k, r in enumerate(rows) if r.language == lang]
        if not group:
            continue
        rels = [r.rel_change for _, r in group]
        finite = [x for x in rels if not math.isnan(x)]
        ranked = sorted((r for _, r in group), key=lambda r: _rank_key(r.rel_change))
        by_lang[lang] = LanguageSummary(
            lang, len(group),
            moved=sum(1 for x in rels if x > moved_threshold),
            changed=sum(1 for _, r in group if r.norm_diff > 0),
            rel_change=rel_change(float(sum(P[k] for k, _ in group)), float(sum(D[k] for k, _ in group))),
            mean_rel=float(np.mean(finite)) if finite else math.nan,
            max_rel=max(finite) if finite else math.nan,
            top=[r.symbol for r in ranked[:5] if r.rel_change > moved_threshold])
    return RowChanges(pre_key, ft_key, symbol_set, tuple(a.shape), tuple(b.shape), rows, by_lang,
                      moved_threshold, only_pre, only_ft, note)
