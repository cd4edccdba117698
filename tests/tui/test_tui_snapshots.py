"""Snapshots of the main screens at 80x24 and 160x50 (pytest-textual-snapshot).

Deterministic by construction: the demo files are seeded, paths are relative to a chdir'd
tmp folder, statistics are either off or waited for, cursors do not blink, and no timing or
absolute path is shown. Update with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import pytest
from test_tui_support import PAIRS, demo_files, no_blink, settle, wait_until

from gsvinspect_tui.app import GsvInspectApp


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tui-demo"
    demo_files(root)
    return root


@pytest.fixture
def app_for(demo_root, monkeypatch):
    from gsvinspect.synth import DEMO_FILES

    monkeypatch.chdir(demo_root)

    def make(pair: str, **kwargs) -> GsvInspectApp:
        pre, ft = PAIRS[pair]
        kwargs.setdefault("stats", False)
        return GsvInspectApp(DEMO_FILES[pre], DEMO_FILES[ft], **kwargs)

    return make


def _before(*keys: str, stats: bool = False, then=None):
    async def run_before(pilot) -> None:
        app = pilot.app
        await settle(app, pilot)
        if stats:
            await wait_until(app, pilot, lambda: not app.stats_running)
        no_blink(app)
        for key in keys:
            await pilot.press(key)
            await settle(app, pilot)
        if then is not None:
            await then(pilot)
        no_blink(app)
        await settle(app, pilot)

    return run_before


def test_main_gpt_80x24(snap_compare, app_for):
    assert snap_compare(app_for("gpt"), terminal_size=(80, 24), run_before=_before("down", "down", "enter"))


def test_main_gpt_stats_160x50(snap_compare, app_for):
    app = app_for("gpt", stats=True)
    assert snap_compare(app, terminal_size=(160, 50), run_before=_before("3", "down", stats=True))


def test_problems_only_with_findings_160x50(snap_compare, app_for):
    assert snap_compare(app_for("export"), terminal_size=(160, 50), run_before=_before("p", "n", "4"))


def test_rules_editor_after_suggest_160x50(snap_compare, app_for):
    async def suggest(pilot):
        pilot.app.action_suggest_rules()
        await settle(pilot.app, pilot, pause=0.3)

    assert snap_compare(app_for("sovits"), terminal_size=(160, 50), run_before=_before(then=suggest))


def test_rules_error_80x24(snap_compare, app_for):
    async def break_it(pilot):
        pilot.app.action_edit_rules()
        pilot.app.rules_editor.set_text("[[rule]]\nstrip_prefix = 'module.'\nbogus = 1\n")
        await settle(pilot.app, pilot, pause=0.3)

    assert snap_compare(app_for("sovits"), terminal_size=(80, 24), run_before=_before(then=break_it))


def test_help_80x24(snap_compare, app_for):
    assert snap_compare(app_for("gpt"), terminal_size=(80, 24), run_before=_before("question_mark"))


def test_export_dialog_160x50(snap_compare, app_for):
    assert snap_compare(app_for("gpt"), terminal_size=(160, 50), run_before=_before("x"))


def test_export_dialog_80x24(snap_compare, app_for):
    assert snap_compare(app_for("export"), terminal_size=(80, 24), run_before=_before("x"))
