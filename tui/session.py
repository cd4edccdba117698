"""What the app is looking at: the two checkpoints, the rules, the alignment and the statistics.

This is the only place the TUI calls the library (open, parse rules, align, diagnose, stats, change
spectra, export planning), so the widgets stay presentation only. Heavy imports (stats: numpy, export: torch) happen
inside the methods, after the first paint.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gsvinspect.errors import GsvError, RulesError

from .model import ViewModel, single_rows


@dataclass
class Realigned:
    """The outcome of one rules edit: a new alignment and model, or the error to show."""

    generation: int
    rules: Any = None
    alignment: Any = None
    model: ViewModel | None = None
    error: RulesError | None = None


@dataclass
class Suggestion:
    """Rules the app offers on first run: their TOML, one line per rule, and what they pair."""

    toml: str
    described: list[str]
    paired: int
    problems: int


@dataclass
class Session:
    """Checkpoints plus everything derived from them; mutated only on the UI thread."""

    pre_path: Path
    ft_path: Path | None = None
    rules_path: Path | None = None
    trust: bool = False
    device: str = "cpu"
    pre: Any = None
    ft: Any = None
    rules_text: str = ""
    saved_rules: str = ""  # the rules text as in the rules file (read or last saved); "" without one
    rules: Any = None
    alignment: Any = None
    findings: list = field(default_factory=list)
    stats_by_pair: dict = field(default_factory=dict)  # (pre_key, ft_key) -> TensorStats
    spectra: dict = field(default_factory=dict)  # (pre_key, ft_key) -> Spectrum, or why it failed (str)

    @property
    def single(self) -> bool:
        return self.ft_path is None

    # -- loading (worker thread) ------------------------------------------------------------------
    def open(self, rules_text: str = "") -> None:
        """Open both checkpoints lazily (zip directory + restricted unpickle; no torch), taking the
        state dict that the rules' ``weights_entry`` names, as ``diff --rules`` does."""
        from gsvinspect.load.checkpoint import open_with_entry

        entry = self._rules_weights_entry(rules_text)
        self.pre = open_with_entry(self.pre_path, trust=self.trust, weights_entry=entry)
        if self.ft_path is not None:
            self.ft = open_with_entry(self.ft_path, trust=self.trust, weights_entry=entry)

    def _rules_weights_entry(self, text: str) -> str | None:
        """The rules' weights_entry; None without one (a bad file is reported by realign)."""
        from gsvinspect.align.rules import parse_rules

        try:
            return parse_rules(text, source=str(self.rules_path)).weights_entry
        except RulesError:
            return None

    def read_rules_file(self) -> str:
        if self.rules_path is None:
            return ""
        try:
            return self.rules_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"cannot read rules file: {exc}", None, str(self.rules_path)) from None

    def realign(self, text: str, generation: int) -> Realigned:
        """Parse rules and align (pure metadata; milliseconds to ~0.1 s at 20k keys)."""
        if self.single:
            return Realigned(generation, model=ViewModel(single_rows(self.pre.weights), single=True))
        from gsvinspect.align.alignment import align
        from gsvinspect.align.rules import RuleSet, parse_rules

        try:
            rules = parse_rules(text, source=str(self.rules_path) if self.rules_path else None) \
                if text.strip() else RuleSet()
        except RulesError as exc:
            return Realigned(generation, error=exc)
        from gsvinspect.stats.mix import alpha_lookup

        alignment = align(self.pre.weights, self.ft.weights, rules)
        model = ViewModel(alignment.rows, stats=self.stats_for(alignment), mix=alpha_lookup(rules, None))
        return Realigned(generation, rules, alignment, model)

    def adopt(self, result: Realigned, text: str) -> None:
        self.rules_text = text
        self.rules = result.rules
        self.alignment = result.alignment

    # -- findings -----------------------------------------------------------------------------------
    def diagnose(self) -> list:
        if self.single or self.alignment is None:
            return []
        from gsvinspect.align.knowledge import diagnose

        alignment = self.alignment
        try:
            findings = list(diagnose(self.pre, self.ft, alignment))
        except GsvError:
            findings = []
        if alignment is self.alignment:
            self.findings = findings
        return findings

    # -- statistics -------------------------------------------------------------------------------
    def stats_for(self, alignment: Any) -> list[tuple[str, Any]]:
        """Statistics already computed for the pairs of this alignment (kept across rule edits)."""
        out = []
        for r in alignment.rows:
            st = self.stats_by_pair.get((r.pre_key, r.ft_key))
            if st is not None:
                out.append((r.target, st))
        return out

    def pending_triples(self) -> list[tuple[str, str | None, str | None]]:
        if self.alignment is None:
            return []
        return [(t, p, f) for t, p, f in self.alignment.triples()
                if p is not None and f is not None and (p, f) not in self.stats_by_pair]

    def compute_stats(self, triples: list, *, progress: Callable[[int, int], None],
                      cancel: threading.Event, on_result: Callable[[str, Any], None]) -> Any:
        from gsvinspect.stats.engine import compute_stats

        return compute_stats(self.pre, self.ft, triples, device=self.device, progress=progress,
                             cancel=cancel, on_result=on_result)

    # -- change spectra -------------------------------------------------------------------------------
    def why_no_spectrum(self, row: Any) -> str | None:
        """Why this alignment row has no change spectrum (unpaired, shapes differ, 1-D), or None."""
        from gsvinspect.stats.spectrum_pick import why_not

        return why_not(row)

    def module_spectrum_rows(self, prefix: str, n: int, change: Callable[[Any], float | None]) -> list:
        """At most `n` paired 2-D weights under `prefix`, the largest `change` first."""
        if self.alignment is None:
            return []
        from gsvinspect.stats.spectrum_pick import in_module, most_changed, wide_first

        return most_changed(wide_first(in_module(self.alignment.rows, prefix)), n, change)

    def spectrum(self, row: Any) -> Any:  # worker thread
        """Spectrum of one aligned row's change (spectrum_pick.of_row); raises GsvError when it cannot."""
        from gsvinspect.stats.spectrum_pick import of_row

        return of_row(self.pre, self.ft, row, device=self.device)

    # -- suggestions ------------------------------------------------------------------------------
    def suggest(self) -> str:
        from gsvinspect.align.suggest import suggest_rules

        return suggest_rules(list(self.pre.weights), list(self.ft.weights)).to_toml()

    def suggestion(self) -> "Suggestion | None":  # worker thread
        """The suggested rules when they pair more keys than the current alignment, else None."""
        if self.single or self.alignment is None:
            return None
        from gsvinspect.align.alignment import align
        from gsvinspect.align.suggest import suggest_rules

        rules = suggest_rules(list(self.pre.weights), list(self.ft.weights))
        if not len(rules):
            return None
        after = align(self.pre.weights, self.ft.weights, rules)
        problems = sum(n for status, n in after.counts.items() if status.is_problem)
        before = sum(n for status, n in self.alignment.counts.items() if status.is_problem)
        if problems >= before:
            return None
        paired = sum(1 for r in after.rows if r.pre is not None and r.ft is not None)
        return Suggestion(rules.to_toml(), [r.describe() for r in rules.rules], paired, problems)

    def close(self) -> None:
        for ck in (self.pre, self.ft):
            try:
                if ck is not None:
                    ck.close()
            except Exception:  # closing is best effort at exit
                pass
