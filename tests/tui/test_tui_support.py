"""Shared helpers for the TUI tests (imported by the other tests/test_tui_*.py) and CLI tests of
the app commands (demo --no-tui, serve without textual-serve, open without a terminal)."""

from __future__ import annotations

from pathlib import Path

from gsvinspect.cli.demo import PAIRS  # noqa: F401  (pair name -> demo file names; used by the TUI tests)


def demo_files(root: Path) -> dict[str, Path]:
    from gsvinspect.synth import write_demo

    return write_demo(root)


def make_app(paths: dict[str, Path], which: str, **kwargs):
    from gsvinspect_tui.app import GsvInspectApp

    pre, ft = PAIRS[which]
    kwargs.setdefault("stats", False)
    return GsvInspectApp(paths[pre], paths[ft], **kwargs)


async def settle(app, pilot, pause: float | None = None) -> None:
    """Wait for every worker and then for the screen to be idle."""
    if pause:
        await pilot.pause(pause)
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def wait_until(app, pilot, done, tries: int = 100, pause: float = 0.05) -> None:
    """Settle until `done()` holds (statistics finished, an export written); at most `tries` rounds."""
    for _ in range(tries):
        if done():
            return
        await settle(app, pilot, pause=pause)


async def open_export(app, pilot, out):
    """Press x (the export dialog opens) and set its output path to `out`; returns the dialog."""
    from gsvinspect_tui.export_screen import ExportScreen

    await pilot.press("x")
    await settle(app, pilot, pause=0.1)
    screen = app.screen
    assert isinstance(screen, ExportScreen)
    screen.query_one("#export-out").value = str(out)
    return screen


def no_blink(app) -> None:
    from textual.widgets import Input, TextArea

    for w in app.query(Input):
        w.cursor_blink = False
    for w in app.query(TextArea):
        w.cursor_blink = False


# -- CLI commands around the app ------------------------------------------------------------------

def test_demo_no_tui_prints_summary(tmp_path_factory, capsys):
    from gsvinspect.cli.main import main

    root = tmp_path_factory.getbasetemp() / "tui-demo"   # the demo set the other TUI tests use
    rc = main(["demo", "--dir", str(root), "--no-tui", "--pair", "gpt"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "== pair gpt (selected)" in out and "== pair sovits" in out and "== pair export" in out
    assert "scaler under MixedPrecision" in out          # the GPT Lightning ckpt keeps its scaler state
    assert "strip_prefix 'module.'" in out                # the DDP pair needs (and gets) a rule
    assert "[enc-q-missing]" in out                       # the export pair's finding
    assert (root / "gsvinspect-demo.json").is_file()


def test_demo_cache_dir_from_environment(tmp_path, monkeypatch):
    from gsvinspect.cli.demo import cache_dir

    monkeypatch.setenv("GSVINSPECT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "demo"
    monkeypatch.delenv("GSVINSPECT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "gsvinspect" / "demo"


def test_open_without_terminal_is_a_usage_error(tmp_path, capsys):
    from gsvinspect.cli.main import main

    import torch

    f = tmp_path / "a.pth"
    torch.save({"weight": {"w": torch.zeros(2)}}, f)   # a readable file: unreadable ones are refused first (exit 3)
    assert main(["open", str(f)]) == 2          # pytest's stdin/stdout are not a terminal
    assert "needs an interactive terminal" in capsys.readouterr().err


def test_serve_without_textual_serve_says_how_to_install(tmp_path, capsys, monkeypatch):
    import builtins

    from gsvinspect.cli.main import main

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("textual_serve"):
            raise ImportError("no textual_serve")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert main(["serve", "a.pth", "b.pth"]) == 2
    assert "pip install 'gsvinspect[serve]'" in capsys.readouterr().err


def test_serve_command_line_uses_this_interpreter():
    import argparse
    import sys

    from gsvinspect.cli.serve import app_command

    cmd = app_command(argparse.Namespace(files=["p q.pth", "ft.pth"], rules=None, trust=False))
    assert cmd.startswith(f"exec {sys.executable}") and "-m gsvinspect open 'p q.pth' ft.pth" in cmd



def test_demo_without_terminal_prints_summary_instead_of_app(tmp_path_factory, capsys, monkeypatch):
    from gsvinspect.cli.main import main

    monkeypatch.delenv("TEXTUAL_DRIVER", raising=False)
    root = tmp_path_factory.getbasetemp() / "tui-demo"
    assert main(["demo", "--dir", str(root)]) == 0          # stdout is not a terminal under pytest
    assert "== pair sovits (selected)" in capsys.readouterr().out
