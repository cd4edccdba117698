"""The command palette's entries (Ctrl+P): every action, including the ones without a key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from textual.app import SystemCommand

if TYPE_CHECKING:
    from .app import GsvInspectApp


def inspector_commands(app: "GsvInspectApp") -> Iterator[SystemCommand]:
    main = app.main
    yield SystemCommand("Suggest rules", "insert rules that line up the keys", app.action_suggest_rules)
    yield SystemCommand("Load rules file…", "replace the rules with a file's", app.action_load_rules)
    yield SystemCommand("Save rules file", "write the rules editor's text", app.action_save_rules)
    yield SystemCommand("Export…", "plan and write a new base model", app.action_export)
    yield SystemCommand("Toggle only problems", "show only keys that do not match", main.action_toggle_problems)
    yield SystemCommand("Toggle sort by change", "largest share of the change (Σ‖Δ‖²) first",
                        main.action_toggle_sort)
    yield SystemCommand("Toggle flat list", "full keys, no tree", main.action_toggle_flat)
    yield SystemCommand("Expand all groups", "open every module", main.action_expand_all)
    yield SystemCommand("Collapse all groups", "close every module", main.action_collapse_all)
    yield SystemCommand("Next problem", "jump to the next problem key", main.action_next_problem)
    yield SystemCommand("Recompute statistics", "run the statistics again", app.stats.recompute)
    yield SystemCommand("Spectrum of the change", "low-rank (LoRA-like) or a rewrite? the key or module "
                        "under the cursor (v)", app.action_spectrum)
    for name in app.pairs:
        yield SystemCommand(f"Demo pair: {name}", f"open the demo's {name} pair",
                            lambda name=name: app.action_switch_pair(name))
