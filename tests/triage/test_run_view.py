"""Pilot tests of the run view on a generated run tree: the table, drift filled in by the worker,
the chart per module and language, opening one row with its base or two marked rows, and quit
cancelling the drift pass."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("textual")

from gsvinspect_tui.run_view import RunApp, RunState  # noqa: E402


async def _wait(pilot, cond, timeout=60.0):
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out")


def _text(renderable, width=100) -> str:
    import io

    from rich.console import Console

    con = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    con.print(renderable)
    return con.export_text()


async def test_table_then_drift_then_chart(run_tree):
    state = RunState(run_tree.root)
    app = RunApp(state)
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait(pilot, lambda: state.drift is not None and app.drift_by_path)
        table = app.query_one("#runs")
        assert table.row_count == len(run_tree.files())
        g_last = str(run_tree.training["sovits-G"][-1])
        row = table.get_row(g_last)
        assert "NaN" in str(row[7]) and row[5].endswith("%")            # health, Δ base filled in
        jump_row = table.get_row(str(run_tree.training["sovits-G"][2]))
        assert "jump" in str(jump_row[7])
        table.move_cursor(row=app.rows.index(next(e for e in app.rows if str(e.path) == g_last)))
        await pilot.pause()
        chart = _text(app.chart)
        assert "language" in chart and " en " in chart and "dec" in chart and "s2 G" in chart
        assert "10 with a problem" in str(app.query_one("#status").render())   # 5 trajectories x (jump, NaN)


def _done_state(run_tree, scanned) -> RunState:
    """A run view coming back from the inspector: the scan and drift are already there."""
    state = RunState(run_tree.root)
    state.result, state.drift = scanned
    return state


async def test_enter_opens_the_row_with_its_base(run_tree, scanned):
    state = _done_state(run_tree, scanned)
    app = RunApp(state)
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait(pilot, lambda: state.result is not None and app.rows)
        target = run_tree.training["sovits-G"][1]
        app.query_one("#runs").move_cursor(row=[Path(e.path) for e in app.rows].index(target))
        await pilot.press("enter")
        await pilot.pause()
    assert app.return_value == ("open", run_tree.pretrained["sovits-G"], target)
    back = RunApp(state)                       # back from the inspector: same row, no new scan
    async with back.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert Path(back.current().path) == target
        assert not list(back.workers)


async def test_drift_columns_widen_to_what_drift_fills_in(run_tree):
    """The Δ, health and trend cells arrive (from the drift worker) after the table sized its
    columns to their headers: the columns grow to fit them ('jump ×13' showed as 'jump ×')."""
    from rich.cells import cell_len

    state = RunState(run_tree.root)
    app = RunApp(state)
    async with app.run_test(size=(200, 50)) as pilot:
        await _wait(pilot, lambda: state.drift is not None and app.drift_by_path)
        await pilot.pause()
        table = app.query_one("#runs")
        jump = str(table.get_cell(str(run_tree.training["sovits-G"][2]), "health"))
        assert jump.startswith("jump ×") and jump[-1].isdigit()
        for col in ("Δ base", "Δ prev", "health", "trend"):
            widest = max(cell_len(str(table.get_cell(str(e.path), col))) for e in app.rows)
            assert table.columns[col].content_width >= widest, col


async def test_two_marked_rows_open_each_other(run_tree, scanned):
    state = _done_state(run_tree, scanned)
    app = RunApp(state)
    a, b = run_tree.training["gpt"][0], run_tree.training["gpt"][3]
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait(pilot, lambda: state.result is not None and app.rows)
        paths = [Path(e.path) for e in app.rows]
        table = app.query_one("#runs")
        for p in (a, b):
            table.move_cursor(row=paths.index(p))
            await pilot.press("space")
        assert "●" in str(table.get_row(str(a))[0])
        await pilot.press("enter")
        await pilot.pause()
    assert app.return_value == ("open", a, b)


async def test_quit_cancels_the_drift_pass(run_tree, monkeypatch):
    """A slow drift pass (each progress tick waits) is stopped by q: the worker ends cancelled."""
    import time

    from gsvinspect.triage import drift as drift_mod

    real = drift_mod._Pass.run

    def slow_run(self):
        orig = self.progress

        def tick(n):
            time.sleep(0.02)
            orig(n)
        self.progress = tick
        return real(self)

    monkeypatch.setattr(drift_mod._Pass, "run", slow_run)
    state = RunState(run_tree.root)
    app = RunApp(state)
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait(pilot, lambda: "drift:" in str(app.query_one("#status").render()))
        await pilot.press("q")
        await pilot.pause()
    assert app.cancel.is_set() and state.drift is None
    workers = list(app.workers)
    for _ in range(100):
        if all(w.is_finished for w in workers):
            break
        await asyncio.sleep(0.05)
    assert all(w.is_finished for w in workers)
    state.result.close()
