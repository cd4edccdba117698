"""The folders are the pipeline: load → align → stats → export → triage → report → (synth) → cli.

A module may import its own stage and the stages before it, never a later one; the library never
imports Textual (only the CLI's app launchers import ``gsvinspect_tui``, inside the function that
starts the app). Relative and function-level imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "gsvinspect"
ORDER = ["foundation", "load", "align", "stats", "export", "triage", "report", "synth", "cli"]
FOUNDATION = {"errors", "meta", "data", "__init__", "__version__"}
APP_LAUNCHERS = {"cli.open", "cli.demo", "cli.serve"}


def _stage(dotted: str) -> str:
    first = dotted.split(".")[0] if dotted else "__init__"
    if first == "__main__":   # `python -m gsvinspect` is the command line
        return "cli"
    return "foundation" if first in FOUNDATION else first


def _modules():
    for p in sorted(LIB.rglob("*.py")):
        rel = p.relative_to(LIB).with_suffix("")
        parts = list(rel.parts)
        pkg = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        yield ".".join(parts), pkg, p


def _imports(pkg: list[str], path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module or "", node.lineno
                continue
            base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            mod = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                yield "gsvinspect." + mod if mod else "gsvinspect", node.lineno
            else:
                for a in node.names:
                    yield "gsvinspect." + ".".join(base + [a.name]) if base or a.name else "gsvinspect", node.lineno


def test_every_stage_is_a_known_room():
    stages = {_stage(m) for m, _, _ in _modules()}
    assert stages <= set(ORDER), stages - set(ORDER)
    for room in ORDER[1:]:
        init = LIB / room / "__init__.py"
        if room == "synth" and not init.exists():
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "May import" in doc, f"{room}/__init__.py must say what it owns and what it may import"


def _violations(mod: str, pkg: list[str], path: Path) -> list[str]:
    bad = []
    mine = ORDER.index(_stage(mod))
    for target, line in _imports(pkg, path):
        if target.split(".")[0] in ("textual", "gsvinspect_tui"):
            if not (target.startswith("gsvinspect_tui") and mod in APP_LAUNCHERS):
                bad.append(f"{mod}:{line} imports {target} (the library never imports Textual)")
            continue
        if not target.startswith("gsvinspect.") or mod == "__init__":
            continue
        theirs = ORDER.index(_stage(target[len("gsvinspect."):]))
        if theirs > mine:
            bad.append(f"{mod}:{line} ({ORDER[mine]}) imports {target} ({ORDER[theirs]})")
    return bad


def test_no_stage_imports_a_later_one():
    bad = [v for mod, pkg, path in _modules() for v in _violations(mod, pkg, path)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    """Relative, function-level and Textual imports are all caught (so the test above can fail)."""
    f = tmp_path / "m.py"
    f.write_text("from ..meta import Layout\nfrom .zip_index import ZipIndex\nfrom ..export.exporter import plan_export\n"
                 "def g():\n    from .. import cli\n    import textual\n")
    bad = _violations("load.m", ["load"], f)
    assert [b.split(" imports ", 1)[1] for b in bad] == [
        "gsvinspect.export.exporter (export)", "gsvinspect.cli (cli)", "textual (the library never imports Textual)"]


def test_public_surface_is_importable_and_lazy():
    import subprocess
    import sys

    code = ("import sys, gsvinspect\n"
            "assert 'numpy' not in sys.modules\n"
            "for name in gsvinspect.__all__:\n"
            "    assert getattr(gsvinspect, name) is not None, name\n"
            "from gsvinspect import open_checkpoint, plan_export, compute_stats, RuleSet\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
