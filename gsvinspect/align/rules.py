"""Key-rename rules: a small, ordered, human-editable TOML file that maps fine-tuned keys onto
pretrained ones (and per-module interpolation alphas for the exporter).

Why TOML and one rule per ``[[rule]]`` table: a person reads the file top to bottom and sees exactly
what happens to a key, in order; comments survive because we never rewrite the user's file.

File format (every field optional except one rule kind per ``[[rule]]``)::

    weights_entry = "model"          # which top-level entry holds the weights, when ambiguous

    [[rule]]                         # rules run in file order, each on the result of the previous
    strip_prefix = "module."         # DDP wrapper
    [[rule]]
    rename = '^cfm\\.base_model\\.model\\.'   # Python `re` pattern (searched, every occurrence)
    to = "cfm."                      # replacement; groups as \\1 or \\g<name>
    side = "ft"                      # "ft" (default), "pre" or "both"
    [[rule]]
    add_prefix = "model."            # added to keys that do not already start with it
    [[rule]]
    drop = 'lora_[AB]\\.'            # keys matching are removed from the comparison
    [[rule]]
    keep_only = '^enc_p\\.'          # keys NOT matching are removed

    [alpha]                          # exporter interpolation: 1.0 = fine-tuned, 0.0 = pretrained
    default = 0.7
    "enc_p.text_embedding" = 0.3     # key prefix (longest prefix wins)
    "re:\\.attn\\." = 0.5            # a "re:" key is a regex, used when no prefix matches

Every problem in a file raises :class:`~gsvinspect.errors.RulesError` with the line it is on.

A little over 500 lines: the parser, the rule semantics and the bulk application to 20,000 keys
(plus the `[alpha]` lookup the exporter and the preview share) are one language, kept together.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import RulesError

if sys.version_info >= (3, 11):
    import tomllib as _toml
else:  # pragma: no cover - exercised only on 3.10
    import tomli as _toml

KINDS = ("rename", "strip_prefix", "add_prefix", "drop", "keep_only")
SIDES = ("ft", "pre", "both")
_REGEX_KINDS = ("rename", "drop", "keep_only")
_RULE_FIELDS = set(KINDS) | {"to", "side", "note"}
_TOP_FIELDS = {"rule", "weights_entry", "alpha"}

_KIND_HELP = {
    "rename": "regex rename (Python re; groups as \\1 or \\g<name>)",
    "strip_prefix": "remove a leading prefix",
    "add_prefix": "add a prefix to keys that lack it",
    "drop": "leave matching keys out of the comparison",
    "keep_only": "compare only matching keys",
}


@dataclass(slots=True)
class Rule:
    """One step of the rename pipeline."""

    kind: str                    # one of KINDS
    pattern: str                 # regex (rename/drop/keep_only) or literal prefix
    replacement: str = ""        # rename only
    side: str = "ft"             # "ft" | "pre" | "both"
    line: int | None = None      # 1-based line of the [[rule]] header in the source file
    note: str = ""               # free text shown in reports
    _rx: re.Pattern | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RulesError(f"unknown rule kind {self.kind!r} (expected one of {', '.join(KINDS)})", self.line)
        if self.side not in SIDES:
            raise RulesError(f"side must be one of {', '.join(SIDES)}, not {self.side!r}", self.line)
        if self.kind in _REGEX_KINDS:
            self._rx = _compile(self.pattern, self.line)
            if self.kind == "rename":
                _check_template(self._rx, self.replacement, self.line)
        elif not self.pattern:
            raise RulesError(f"{self.kind} needs a non-empty prefix", self.line)

    @property
    def regex(self) -> re.Pattern | None:
        return self._rx

    @property
    def required_literal(self) -> str:
        """A substring every match must contain ('' if none is known): a cheap pre-filter."""
        if self._rx is None:
            return ""
        return _required_literal(self._rx)

    def applies_to(self, side: str) -> bool:
        return self.side == "both" or self.side == side

    def describe(self) -> str:
        """Short one-line form used in tables: `rename ^a\\. -> b.`."""
        if self.kind == "rename":
            text = f"rename {self.pattern} -> {self.replacement!r}"
        else:
            text = f"{self.kind} {self.pattern!r}" if self.kind in ("strip_prefix", "add_prefix") \
                else f"{self.kind} {self.pattern}"
        if self.side != "ft":
            text += f" [{self.side}]"
        return text

    # -- application -------------------------------------------------------------------------

    def apply(self, key: str) -> str | None:
        """The key after this rule (None: dropped). Unchanged when the rule does not touch it."""
        k = self.kind
        if k == "strip_prefix":
            return key[len(self.pattern):] if key.startswith(self.pattern) else key
        if k == "add_prefix":
            return key if key.startswith(self.pattern) else self.pattern + key
        if k == "rename":
            return self._rx.sub(self.replacement, key)
        if k == "drop":
            return None if self._rx.search(key) else key
        return key if self._rx.search(key) else None  # keep_only


def _required_literal(rx: re.Pattern) -> str:
    """Longest run of plain characters at the top level of `rx` (so present in every match).

    `\\.base_layer\\.` gives ".base_layer."; a branch, a flag or anything unusual gives "".
    """
    if rx.flags & (re.IGNORECASE | re.VERBOSE):
        return ""
    try:
        try:
            from re import _parser as sre  # Python >= 3.11
        except ImportError:  # pragma: no cover
            import sre_parse as sre  # type: ignore[no-redef]
        items = sre.parse(rx.pattern, rx.flags)
    except Exception:  # pragma: no cover - the pattern compiled, so this is only defensive
        return ""
    best = run = ""
    for op, arg in items:
        if op == sre.LITERAL:
            run += chr(arg)
        else:
            best, run = max(best, run, key=len), ""
    return max(best, run, key=len)


def _compile(pattern: object, line: int | None) -> re.Pattern:
    if not isinstance(pattern, str):
        raise RulesError(f"pattern must be a string, not {type(pattern).__name__}", line)
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RulesError(f"invalid regex {pattern!r}: {exc}", line) from None


def _check_template(rx: re.Pattern, repl: object, line: int | None) -> None:
    """Reject bad group references now, not on the first key that matches."""
    if not isinstance(repl, str):
        raise RulesError(f"'to' must be a string, not {type(repl).__name__}", line)
    names = {i: n for n, i in rx.groupindex.items()}
    dummy = "".join(f"(?P<{names[i]}>)" if i in names else "()" for i in range(1, rx.groups + 1))
    try:
        re.compile(dummy).match("").expand(repl)
    except (re.error, IndexError) as exc:
        raise RulesError(f"invalid replacement {repl!r}: {exc}", line) from None


@dataclass(slots=True)
class RuleSet:
    """An ordered rule list plus the optional weights-entry choice and exporter alphas."""

    rules: list[Rule] = field(default_factory=list)
    weights_entry: str | None = None
    alphas: dict[str, float] = field(default_factory=dict)   # prefix or "re:<regex>" -> alpha
    alpha_default: float | None = None
    source: str | None = None
    _alpha_rx: list[tuple[re.Pattern, float]] = field(default_factory=list, repr=False, compare=False)
    _alpha_prefixes: list[tuple[str, float]] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index_alphas()

    def _index_alphas(self) -> None:
        self._alpha_rx = [(re.compile(k[3:]), v) for k, v in self.alphas.items() if k.startswith("re:")]
        self._alpha_prefixes = sorted(((k, v) for k, v in self.alphas.items() if not k.startswith("re:")),
                                      key=lambda kv: -len(kv[0]))

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self):
        return iter(self.rules)

    def alpha_for(self, key: str) -> float | None:
        """Interpolation weight of the fine-tuned model for `key` (target name).

        Longest matching prefix wins; else the first matching ``re:`` entry in file order;
        else ``default``; None when the file sets no alpha at all (the caller's --alpha applies).
        """
        for prefix, value in self._alpha_prefixes:
            if key.startswith(prefix):
                return value
        for rx, value in self._alpha_rx:
            if rx.search(key):
                return value
        return self.alpha_default

    @property
    def has_alphas(self) -> bool:
        return bool(self.alphas) or self.alpha_default is not None

    def for_side(self, side: str) -> list[tuple[int, Rule]]:
        return [(i, r) for i, r in enumerate(self.rules) if r.applies_to(side)]

    def to_toml(self) -> str:
        """The rule set as a commented TOML file a person can read, edit and feed back."""
        out = [
            "# gsvinspect key rules",
            "#",
            "# Rules run top to bottom on every key of the FINE-TUNED file (side = \"pre\" or \"both\"",
            "# applies them to the pretrained file too); each rule sees the result of the previous one.",
            "# Kinds: rename = '<python regex>' + to = '<replacement, \\1 or \\g<name> for groups>',",
            "#        strip_prefix = '<prefix>', add_prefix = '<prefix>' (only keys lacking it),",
            "#        drop = '<regex>' (leave keys out), keep_only = '<regex>' (compare only these).",
            "# Regexes are searched anywhere in the key; anchor with ^ and $. Check the file with",
            "#   gsvinspect rules check FILE      and use it with      gsvinspect diff PRE FT --rules FILE",
            "",
        ]
        if self.weights_entry is not None:
            out += ["# the top-level entry of the checkpoint that holds the weights",
                    f"weights_entry = {_toml_str(self.weights_entry)}", ""]
        if not self.rules:
            out += ["# No rule needed: the keys already line up.", ""]
        for i, rule in enumerate(self.rules, 1):
            out.append(f"# rule {i}: {_KIND_HELP[rule.kind]}" + (f" ({rule.note})" if rule.note else ""))
            out.append("[[rule]]")
            out.append(f"{rule.kind} = {_toml_str(rule.pattern)}")
            if rule.kind == "rename":
                out.append(f"to = {_toml_str(rule.replacement)}")
            if rule.side != "ft":
                out.append(f"side = {_toml_str(rule.side)}")
            if rule.note:
                out.append(f"note = {_toml_str(rule.note)}")
            out.append("")
        if self.has_alphas:
            out += ["# Exporter interpolation: result = pre + alpha * (ft - pre); 1.0 keeps the fine-tune,",
                    "# 0.0 the pretrained. Keys are prefixes of target names (longest wins) or 're:<regex>'.",
                    "[alpha]"]
            if self.alpha_default is not None:
                out.append(f"default = {self.alpha_default!r}")
            for k, v in self.alphas.items():
                out.append(f"{_toml_str(k)} = {v!r}")
            out.append("")
        return "\n".join(out)


def _toml_str(s: str) -> str:
    """A TOML string literal; literal ('...') form keeps regex backslashes readable."""
    if "'" not in s and "\n" not in s and all(c >= " " or c == "\t" for c in s):
        return f"'{s}'"
    esc = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    esc = "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in esc)
    return f'"{esc}"'


# -- parsing -----------------------------------------------------------------------------------

_HEADER_RX = re.compile(r"^\s*\[\[\s*(\"rule\"|'rule'|rule)\s*\]\]\s*(#.*)?$")
_TABLE_RX = re.compile(r"^\s*\[")
_ALPHA_RX = re.compile(r"^\s*\[\s*(\"alpha\"|'alpha'|alpha)\s*\]\s*(#.*)?$")
_TOML_POS_RX = re.compile(r"\(at line (\d+), column (\d+)\)")


class _Lines:
    """Where things are in the text, found by scanning (tomllib gives values, not positions)."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.rule_headers = [i + 1 for i, ln in enumerate(self.lines) if _HEADER_RX.match(ln)]
        self.alpha_header = next((i + 1 for i, ln in enumerate(self.lines) if _ALPHA_RX.match(ln)), None)

    def section_end(self, start: int) -> int:
        for j in range(start, len(self.lines)):  # start is 1-based header line; scan following lines
            if _TABLE_RX.match(self.lines[j]):
                return j  # 1-based number of the line before the next header
        return len(self.lines)

    def field_line(self, start: int | None, name: str) -> int | None:
        """Line of `name = ...` within the section that starts at line `start` (0: top level)."""
        begin = start or 0
        end = self.section_end(begin) if start else next(
            (i for i, ln in enumerate(self.lines) if _TABLE_RX.match(ln)), len(self.lines))
        rx = re.compile(r"^\s*(%s|\"%s\"|'%s')\s*=" % (re.escape(name), re.escape(name), re.escape(name)))
        for j in range(begin, end):
            if rx.match(self.lines[j]):
                return j + 1
        return start


def parse_rules(text: str, source: str | None = None) -> RuleSet:
    """Parse a rules file's text; raises RulesError (with line) on any problem."""
    try:
        data = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS_RX.search(msg)
        line = int(m.group(1)) if m else getattr(exc, "lineno", None)
        problem = _TOML_POS_RX.sub("", msg).strip() or "TOML syntax error"
        if m:
            problem += f" (column {m.group(2)})"
        raise RulesError(f"TOML syntax error: {problem}", line, source) from None
    lines = _Lines(text)
    try:
        return _build(data, lines, source)
    except RulesError as exc:
        if exc.source is None and source is not None:
            raise RulesError(exc.problem, exc.line, source) from None
        raise


def _build(data: dict, lines: _Lines, source: str | None) -> RuleSet:
    for key in data:
        if key not in _TOP_FIELDS:
            raise RulesError(f"unknown top-level field {key!r} (expected [[rule]], weights_entry or [alpha])",
                             lines.field_line(None, key) if not isinstance(data[key], dict)
                             else _table_line(lines, key))
    weights_entry = data.get("weights_entry")
    if weights_entry is not None and (not isinstance(weights_entry, str) or not weights_entry):
        raise RulesError(f"weights_entry must be a non-empty string, not {weights_entry!r}",
                         lines.field_line(None, "weights_entry"))
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RulesError("'rule' must be written as [[rule]] tables",
                         _table_line(lines, "rule") or lines.field_line(None, "rule"))
    rules = []
    for n, raw in enumerate(raw_rules):
        header = lines.rule_headers[n] if n < len(lines.rule_headers) else None
        if not isinstance(raw, dict):
            raise RulesError("each rule must be a [[rule]] table", header)
        rules.append(_build_rule(raw, header, lines))
    alphas, default = _build_alphas(data.get("alpha"), lines)
    return RuleSet(rules=rules, weights_entry=weights_entry, alphas=alphas, alpha_default=default, source=source)


def _table_line(lines: _Lines, name: str) -> int | None:
    rx = re.compile(r"^\s*\[{1,2}\s*[\"']?%s[\"']?\s*\]" % re.escape(name))
    return next((i + 1 for i, ln in enumerate(lines.lines) if rx.match(ln)), None)


def _build_rule(raw: dict, header: int | None, lines: _Lines) -> Rule:
    def at(name: str) -> int | None:
        return lines.field_line(header, name) if header else None

    for key in raw:
        if key not in _RULE_FIELDS:
            hint = ""
            close = [f for f in _RULE_FIELDS if f.replace("_", "") == key.replace("_", "").replace("-", "")]
            if key in ("pattern", "kind", "replacement"):
                hint = "; write the kind as the key, e.g. rename = '<regex>' and to = '<replacement>'"
            elif close:
                hint = f"; did you mean {close[0]!r}?"
            raise RulesError(f"unknown field {key!r} in [[rule]] (allowed: {', '.join(sorted(_RULE_FIELDS))}){hint}",
                             at(key))
    kinds = [k for k in KINDS if k in raw]
    if not kinds:
        raise RulesError(f"[[rule]] needs one of {', '.join(KINDS)}", header)
    if len(kinds) > 1:
        raise RulesError(f"[[rule]] has several kinds ({', '.join(kinds)}); use one [[rule]] per step", at(kinds[1]))
    kind = kinds[0]
    pattern = raw[kind]
    if not isinstance(pattern, str):
        raise RulesError(f"{kind} must be a string, not {_tname(pattern)}", at(kind))
    if kind == "rename":
        if "to" not in raw:
            raise RulesError("rename needs 'to' (the replacement; '' to delete the match)", at(kind))
        repl = raw["to"]
        if not isinstance(repl, str):
            raise RulesError(f"'to' must be a string, not {_tname(repl)}", at("to"))
    else:
        if "to" in raw:
            raise RulesError(f"'to' only goes with rename, not {kind}", at("to"))
        repl = ""
    side = raw.get("side", "ft")
    if not isinstance(side, str) or side not in SIDES:
        raise RulesError(f"side must be one of {', '.join(repr(s) for s in SIDES)}, not {side!r}", at("side"))
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise RulesError(f"note must be a string, not {_tname(note)}", at("note"))
    line_of_pattern = at(kind)
    try:
        return Rule(kind=kind, pattern=pattern, replacement=repl, side=side, line=header, note=note)
    except RulesError as exc:
        line = at("to") if "replacement" in exc.problem else line_of_pattern
        raise RulesError(exc.problem, line) from None


def _build_alphas(raw: object, lines: _Lines) -> tuple[dict[str, float], float | None]:
    if raw is None:
        return {}, None
    header = lines.alpha_header
    if not isinstance(raw, dict):
        raise RulesError("alpha must be a table: [alpha] with prefix = number lines",
                         lines.field_line(None, "alpha"))
    alphas: dict[str, float] = {}
    default = None
    for key, value in raw.items():
        line = lines.field_line(header, key) if header else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RulesError(f"alpha {key!r} must be a number in [0, 1], not {_tname(value)}", line)
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise RulesError(f"alpha {key!r} = {value} is outside [0, 1]", line)
        if key == "default":
            default = value
            continue
        if key.startswith("re:"):
            _compile(key[3:], line)
        elif not key:
            raise RulesError("alpha key must not be empty (use default = ...)", line)
        alphas[key] = value
    return alphas, default


def _tname(v: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


def load_rules(path: str | Path) -> RuleSet:
    """Read and parse a rules file; unreadable or invalid files raise RulesError (exit 2)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RulesError(f"cannot read rules file: {exc.strerror or exc}", None, str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RulesError("rules file is not UTF-8 text", line, str(p)) from None
    return parse_rules(text, source=str(p))


# -- application over key lists ---------------------------------------------------------------

@dataclass(slots=True)
class Applied:
    """Result of running the rules over one side's keys."""

    targets: list[str | None]            # per input key: new name, None when dropped
    touched: list[tuple[int, ...]]       # per input key: indices of rules that changed/dropped it
    hits: list[int]                      # per rule: number of keys it touched on this side


def apply_rules(rules: RuleSet | None, keys: Iterable[str | None], side: str = "ft") -> Applied:
    """Run every rule for `side` over `keys`, one rule at a time over the whole list.

    A None key (already dropped) passes through untouched, so positions stay aligned.

    Rule-major order keeps each regex hot and each branch decided once per rule, which is what
    makes re-applying a rule list to 20k keys cost a few milliseconds.
    """
    cur: list[str | None] = list(keys)
    n_rules = len(rules.rules) if rules is not None else 0
    hits = [0] * n_rules
    touched: list[tuple[int, ...]] = [()] * len(cur)
    if rules is None or not rules.rules:
        return Applied(cur, touched, hits)
    for ri, rule in rules.for_side(side):
        kind, pat = rule.kind, rule.pattern
        count = 0
        if kind == "strip_prefix":
            n = len(pat)
            for i, k in enumerate(cur):
                if k is not None and k.startswith(pat):
                    cur[i] = k[n:]
                    touched[i] += (ri,)
                    count += 1
        elif kind == "add_prefix":
            for i, k in enumerate(cur):
                if k is not None and not k.startswith(pat):
                    cur[i] = pat + k
                    touched[i] += (ri,)
                    count += 1
        elif kind == "rename":
            subn, repl = rule.regex.subn, rule.replacement
            lit = rule.required_literal
            for i, k in enumerate(cur):
                if k is not None and lit in k:
                    new, n = subn(repl, k)
                    if n:
                        cur[i] = new
                        touched[i] += (ri,)
                        count += 1
        else:
            search = rule.regex.search
            lit = rule.required_literal
            want = kind == "keep_only"
            for i, k in enumerate(cur):
                if k is not None and ((lit in k and search(k) is not None) is not want):
                    cur[i] = None
                    touched[i] += (ri,)
                    count += 1
        hits[ri] = count
    return Applied(cur, touched, hits)


def alpha_conflict(rules: "RuleSet | None", alpha: float | None) -> str | None:
    """Why `--alpha` would be silently ignored, or None: an ``[alpha]`` table with a ``default``
    sets every tensor its prefixes do not name, so `alpha` never applies (`mix_alpha`)."""
    default = getattr(rules, "alpha_default", None) if rules is not None else None
    if alpha is None or default is None:
        return None
    return (f"--alpha {alpha:g} would never be used: the [alpha] table of {rules.source or 'the rules file'} has "
            f"default = {default:g}, which sets every tensor it does not name; drop --alpha, or change the "
            "table's default")


def mix_alpha(rules: "RuleSet | None", alpha: float | None, target: str) -> float | None:
    """The alpha a mix uses for `target`: the rules file's ``[alpha]`` table when it has one (longest
    prefix, ``re:`` entries, ``default``), else `alpha` (``--alpha``); None when neither asks for a mix.
    One rule for the exporter (``export.mixing``) and the preview (``stats.mix``)."""
    a = rules.alpha_for(target) if rules is not None and getattr(rules, "has_alphas", False) else None
    if a is None:
        a = alpha
    return None if a is None else float(a)
