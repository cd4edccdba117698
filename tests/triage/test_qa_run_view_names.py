"""The run view shows file names as they are: a name with brackets is text, not Rich markup
(found from the user's seat: ``G_[b]8.pth`` was listed as ``G_8.pth``)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("textual")

from gsvinspect import synth  # noqa: E402
from gsvinspect_tui.run_view import RunApp, RunState  # noqa: E402


async def _wait(pilot, cond, timeout: float = 60.0) -> None:
    """Pause until cond() holds; a timeout fails the test (it no longer goes on half-loaded)."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out")


async def test_bracketed_file_name_is_shown_as_is(tmp_path):
    pre, ft = synth.write_pair(tmp_path / "pair", "sovits-G", "v2", scale=16)
    tree = tmp_path / "tree"
    (tree / "pretrained_models").mkdir(parents=True)
    shutil.copy(pre, tree / "pretrained_models" / pre.name)
    (tree / "logs" / "exp" / "logs_s2_v2").mkdir(parents=True)
    shutil.copy(ft, tree / "logs" / "exp" / "logs_s2_v2" / "G_[b]8.pth")
    state = RunState(tree)
    app = RunApp(state)
    async with app.run_test(size=(100, 24)) as pilot:
        await _wait(pilot, lambda: state.drift is not None and app.drift_by_path)
        await pilot.pause()
        screen = app.export_screenshot()
        assert "G_[b]8.pth" in screen


async def test_epoch_and_step_taken_from_the_name_are_marked_as_in_scan(tmp_path):
    """`scan` prints ``13*  369668*`` for the pretrained GPT (from its file name); the run view showed
    ``13  369668``, as if the file said so."""
    from gsvinspect.report.scan import epoch_step

    pre, _ = synth.write_pair(tmp_path / "pair", "gpt", "v2", scale=16)
    state = RunState(pre.parent)
    app = RunApp(state)
    async with app.run_test(size=(100, 24)) as pilot:
        await _wait(pilot, lambda: state.result is not None and app.rows)
        e = next(e for e in app.rows if e.path.name == pre.name)
        assert epoch_step(e) == ("13*", "369668*")
        row = app.query_one("#runs").get_row(str(e.path))
        assert (str(row[3]), str(row[4])) == ("13*", "369668*")
