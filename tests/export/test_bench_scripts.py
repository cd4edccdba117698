"""The bench scripts of the stats, diff, export, align and memory figures in README "Speed and
memory" still parse, and every gsvinspect name they import (at the top or inside a function,
where a module move goes unnoticed until the bench is run) still exists."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = ["_proc.py", "bench_stats.py", "bench_diff.py", "bench_export.py", "bench_align.py", "bench_memory.py",
           "bench_open.py", "bench_scan.py", "bench_tui.py"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_parses_and_its_gsvinspect_imports_resolve(name):
    tree = ast.parse((BENCH / name).read_text(), filename=name)   # a SyntaxError fails here
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gsvinspect"):
            mod = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(mod, a.name)
                        and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("gsvinspect"):
                    importlib.import_module(a.name)
    assert not missing, missing
