"""Propose the shortest rule list that lines up two key sets.

Greedy search over candidates read off the keys themselves: for every fine-tuned key that has no
partner, which leading part would have to go or change (`module.`, `_orig_mod.`, `net_g.`, a
missing `model.`), or which inner run of segments would have to go (peft's `base_model.model.`,
`.base_layer`) for it to land on a pretrained key that has no partner yet. Each round takes the
candidate that adds the most pairings (ties: the simplest rule), until nothing helps; rules that
turn out redundant are pruned. Every step is a few dict lookups per key, so a suggestion for
thousands of keys is interactive.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from .rules import Rule, RuleSet, apply_rules

# Wrappers worth a rule even when they rescue a single key (a buffer, a lone parameter).
KNOWN_PREFIXES = ("module.", "_orig_mod.", "model.", "net_g.", "base_model.model.", "net_d.")
KNOWN_INFIXES = ("base_model.model", "base_layer", "_orig_mod", "module", "default")

_NOTES = {
    "module.": "DistributedDataParallel wrapper",
    "_orig_mod.": "torch.compile wrapper",
    "model.": "GPT keys live under the Lightning module's `model.`",
    "net_g.": "generator saved from the training wrapper",
    "net_d.": "discriminator saved from the training wrapper",
    "base_model.model": "peft wrapper around cfm (LoRA training)",
    "base_layer": "peft LoRA layer: the frozen base weight",
}

_MAX_ROUNDS = 8
_MAX_INFIX = 3   # segments removed at once
_MAX_PREFIXES = 8  # a suffix shared by more pretrained keys than this proposes no rename


class _Scorer:
    """Counts pairings of a candidate key list: (pairings whose shapes agree, pairings by name).

    Shapes are known when the caller passed mappings of TensorInfo; a rename that pairs keys of
    other shapes (peft's `lora_A.default.weight` onto the base `weight`) gains nothing then.
    """

    def __init__(self, pre: object, pre_set: set[str], ft: object, ft_list: list[str]):
        self.pre_set = pre_set
        self.pre_shape = _shapes(pre)
        ft_shape = _shapes(ft)
        self.ft_shapes = [ft_shape.get(k) for k in ft_list] if ft_shape else None

    def __call__(self, cur: list[str | None]) -> tuple[int, int]:
        pre_set = self.pre_set
        seen: Counter[str] = Counter(k for k in cur if k is not None and k in pre_set)
        by_name = sum(1 for n in seen.values() if n == 1)
        if not self.pre_shape or self.ft_shapes is None:
            return by_name, by_name
        pre_shape, ft_shapes = self.pre_shape, self.ft_shapes
        good = 0
        for i, k in enumerate(cur):
            if k is not None and seen.get(k) == 1:
                a, b = pre_shape.get(k), ft_shapes[i]
                if a is None or b is None or a == b:
                    good += 1
        return good, by_name


def _shapes(m: object) -> dict[str, tuple[int, ...]]:
    """key -> shape for a mapping of TensorInfo-like values; {} for a plain key list."""
    values = getattr(m, "values", None)
    if values is None:
        return {}
    out = {}
    for k, v in m.items():  # type: ignore[attr-defined]
        shape = getattr(v, "shape", None)
        if shape is None:
            return {}
        out[k] = tuple(shape)
    return out


# peft adapter tensors have no counterpart in a base model: never "remove" their names
_ADAPTER = re.compile(r"(^|\.)(lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector)(\.|$)")


def _candidates(unmatched_ft: list[str], free_pre: set[str]) -> Counter:
    """Candidate rules (as hashable specs) with the number of keys each could rescue."""
    # suffix -> pretrained prefixes, over the pretrained keys still without a partner
    by_suffix: dict[str, set[str]] = {}
    for pk in free_pre:
        by_suffix.setdefault(pk, set()).add("")
        i = pk.find(".")
        while i != -1:
            by_suffix.setdefault(pk[i + 1:], set()).add(pk[: i + 1])
            i = pk.find(".", i + 1)
    found: Counter = Counter()
    for fk in unmatched_ft:
        # longest common dotted suffix: fk = A + s, pk = B + s
        starts = [0] + [i + 1 for i, c in enumerate(fk) if c == "."]
        for st in starts:
            s = fk[st:]
            prefixes = by_suffix.get(s)
            if not prefixes:
                continue
            a = fk[:st]
            if len(prefixes) > _MAX_PREFIXES:
                # a suffix shared by many pretrained keys ("weight") says nothing about a rename;
                # only "drop the leading part" can still be read off it
                if a and "" in prefixes:
                    found[("strip_prefix", a, "")] += 1
                break
            for b in prefixes:
                if a and not b:
                    found[("strip_prefix", a, "")] += 1
                elif b and not a:
                    found[("add_prefix", b, "")] += 1
                elif a and b and s.count(".") >= 1:   # a one-segment suffix ("weight") says nothing
                    found[("rename", "^" + re.escape(a), b.replace("\\", "\\\\"))] += 1
            break
        # an inner run of segments that should not be there
        segs = fk.split(".")
        n = len(segs)
        for j in range(1, n - 1):
            for length in range(1, min(_MAX_INFIX, n - 1 - j) + 1):
                cand = ".".join(segs[:j] + segs[j + length:])
                if cand in free_pre:
                    run = ".".join(segs[j: j + length])
                    if _ADAPTER.search(run):
                        continue
                    found[("rename", r"\." + re.escape(run) + r"\.", ".")] += 1
    return found


def _is_known(spec: tuple[str, str, str]) -> bool:
    kind, pat, _ = spec
    if kind in ("strip_prefix", "add_prefix"):
        return pat in KNOWN_PREFIXES
    return any(pat == r"\." + re.escape(x) + r"\." for x in KNOWN_INFIXES)


def _rule(spec: tuple[str, str, str]) -> Rule:
    kind, pat, repl = spec
    raw = pat
    if kind == "rename" and pat.startswith(r"\.") and pat.endswith(r"\."):
        raw = pat[2:-2].replace("\\", "")
    note = _NOTES.get(raw, "")
    return Rule(kind=kind, pattern=pat, replacement=repl, note=note)


def _complexity(spec: tuple[str, str, str]) -> tuple[int, int]:
    order = {"strip_prefix": 0, "add_prefix": 1, "rename": 2}
    return (0 if _is_known(spec) else 1, order[spec[0]] * 1000 + len(spec[1]))


def suggest_rules(pre_keys: Iterable[str], ft_keys: Iterable[str]) -> RuleSet:
    """The shortest rule list (applied to the fine-tuned side) that maximises pairings.

    Mappings of TensorInfo work too, and then only pairings whose shapes agree count as gained
    (a name-only pairing of tensors of other shapes is not a reason for a rule). Returns an empty RuleSet when the keys already agree
    as far as they can.
    """
    pre_list = list(pre_keys)
    ft_list = list(ft_keys)
    pre_set = set(pre_list)
    score = _Scorer(pre_keys, pre_set, ft_keys, ft_list)
    rules = RuleSet()
    cur: list[str | None] = list(ft_list)
    best = score(cur)
    for _ in range(_MAX_ROUNDS):
        reached = {k for k in cur if k is not None and k in pre_set}
        unmatched = [k for k in cur if k is not None and k not in pre_set]
        free_pre = pre_set - reached
        if not unmatched or not free_pre:
            break
        cands = _candidates(unmatched, free_pre)
        # evaluate the most promising few exactly (conflicts and collateral damage included)
        ranked = sorted(cands.items(), key=lambda kv: (-kv[1], _complexity(kv[0])))[:12]
        pick = None
        pick_score = best
        pick_cur: list[str | None] = cur
        for spec, _support in ranked:
            # apply_rules passes None (dropped) entries through, so positions stay aligned with `cur`
            trial_cur = apply_rules(RuleSet([_rule(spec)]), cur, "ft").targets
            got = score(trial_cur)
            gain = got[0] - best[0]
            if gain < 1 or (gain < 2 and not _is_known(spec)) or got[1] < best[1]:
                continue
            if pick is None or got > pick_score or (
                    got == pick_score and _complexity(spec) < _complexity(pick)):
                pick, pick_score, pick_cur = spec, got, trial_cur
        if pick is None:
            break
        rules.rules.append(_rule(pick))
        cur, best = pick_cur, pick_score

    # prune: a rule whose removal loses nothing is not needed
    i = len(rules.rules) - 1
    while i >= 0 and len(rules.rules) > 1:
        trial = RuleSet(rules.rules[:i] + rules.rules[i + 1:])
        if score(apply_rules(trial, ft_list, "ft").targets) >= best:
            rules.rules.pop(i)
        i -= 1
    return rules
