"""Pilot tests of `v`, the change spectrum in the detail pane (a thread worker, cancelled when stale)."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from helpers_stats import write_spectrum_pair
from test_tui_support import settle, wait_until

from gsvinspect_tui.app import GsvInspectApp
from gsvinspect_tui.help_screen import KEYS

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_spectrum_pair(tmp_path_factory.mktemp("tui-spectrum"))


async def spectrum_of(app, pilot, ident: str) -> str:
    """Put the cursor on `ident`, press v, wait for the worker; the detail pane's text."""
    assert app.diff.move_to(ident), ident
    await pilot.pause()
    await pilot.press("v")
    await settle(app, pilot)
    return app.query_one("#detail").plain_text(width=120)


def rank90(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"rank90\s+(\d+) of", text)]


async def test_v_tells_a_rank_2_change_from_a_rewrite(pair):
    app = GsvInspectApp(*pair, stats=False, device="cpu")
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        text = await spectrum_of(app, pilot, "enc.low.weight")
        assert "change spectrum" in text and "low-rank (LoRA-like): 90% of the change lies in 2 direction(s)" in text
        assert rank90(text) == [2] and re.search(r"effective rank\s+1\.\d+ ", text)
        assert "full SVD of 64×48 on cpu" in text and "σ₁…σ₁₆" in text and "█" in text
        text = await spectrum_of(app, pilot, "enc.full.weight")
        assert "rewrote this layer" in text and rank90(text)[0] > 20 and "low-rank" not in text
        assert set(app.session.spectra) == {(k, k) for k in ("enc.low.weight", "enc.full.weight")}
        # back on the first key: its spectrum is still there, from the cache
        app.diff.move_to("enc.low.weight")
        await pilot.pause()
        assert "LoRA-like" in app.query_one("#detail").plain_text(width=120)
    assert any(k == "v" and "spectrum of the change" in v for _, rows in KEYS for k, v in rows)


@pytest.mark.parametrize("key, why", [
    ("enc.full.bias", "not applicable: enc.full.bias is 1-D (64); a spectrum needs a 2-D or conv weight"),
    ("enc.gone.weight", "not applicable: enc.gone.weight has no partner: it is only in the pretrained file"),
    ("enc.new.weight", "not applicable: enc.new.weight has no partner: it is only in the fine-tuned file"),
    ("enc.shape.weight", "not applicable: enc.shape.weight: shapes differ (8×8 vs 8×4)"),
    ("norm/", "not applicable: norm.* holds no paired 2-D weight"),
])
async def test_v_where_it_does_not_apply_says_why(pair, key, why):
    app = GsvInspectApp(*pair, stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        text = await spectrum_of(app, pilot, key)
        assert why in text and not app.session.spectra


async def test_v_on_a_module_takes_its_most_changed_weights(pair):
    app = GsvInspectApp(*pair, stats=True, device="cpu")
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: not app.stats_running)
        text = await spectrum_of(app, pilot, "enc/")
        assert "change spectra of 3 most-changed 2-D weights under enc.*" in text
        order = [text.index(k) for k in ("\nenc.low.weight", "\nenc.full.weight", "\nenc.conv.weight")]
        assert order == sorted(order) and rank90(text)[0] == 2 and len(rank90(text)) == 3
        text = await spectrum_of(app, pilot, "blocks/")             # 18 weights: the 4 most changed
        blocks = {k: lf.share for k, lf in app.model.leaves.items() if k.startswith("blocks.")}
        top4 = sorted(blocks, key=lambda k: -blocks[k])[:4]          # ranked by share, like `diff`
        assert [f"blocks.{k}.weight" for k in re.findall(r"\nblocks\.(\d+)\.weight", text)] == top4
        assert top4[0] == "blocks.17.weight"
        text = await spectrum_of(app, pilot, "bad.nan/")            # the worker reports, the app lives on
        assert "no spectrum: bad.nan.weight holds NaN or Inf" in text


async def test_v_on_a_single_file_needs_two(pair):
    app = GsvInspectApp(pair[0], stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        text = await spectrum_of(app, pilot, "enc.low.weight")
        assert "not applicable: a change spectrum needs a pretrained and a fine-tuned checkpoint" in text


def _blocking(app):
    """Make the session's SVD wait for `release`; returns (calls, release, finished SVDs)."""
    calls, release, finished = [], threading.Event(), []
    real = app.session.spectrum

    def slow(row):
        calls.append(row.target)
        release.wait(10)
        try:
            return real(row)          # after quitting the files are closed: this raises, the worker notes it
        finally:
            finished.append(row.target)

    app.session.spectrum = slow
    return calls, release, finished


async def test_moving_away_cancels_a_running_spectrum(pair):
    app = GsvInspectApp(*pair, stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        calls, release, _ = _blocking(app)
        assert app.diff.move_to("enc/")
        await pilot.pause()
        await pilot.press("v")
        await pilot.pause()
        assert "computing…" in app.query_one("#detail").plain_text(width=120) and calls == ["enc.low.weight"]
        [worker] = [w for w in app.workers if w.group == "spectrum"]
        await pilot.press("down")                                   # the cursor moves on
        assert worker.is_cancelled and "enc/" not in app.spectra.asked
        release.set()
        await settle(app, pilot)
        assert calls == ["enc.low.weight"]                          # stopped before the next SVD
        assert list(app.session.spectra) == [("enc.low.weight", "enc.low.weight")]   # the finished one is kept
        assert "spectr" not in app.query_one("#detail").plain_text(width=120)


async def test_quit_while_a_spectrum_runs(pair):
    app = GsvInspectApp(*pair, stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        calls, release, finished = _blocking(app)
        app.diff.move_to("blocks/")
        await pilot.pause()
        await pilot.press("v")
        await pilot.pause()
        [worker] = [w for w in app.workers if w.group == "spectrum"]
        threading.Timer(0.2, release.set).start()
        await pilot.press("q")
    assert app.return_code == 0 and worker.is_cancelled
    for _ in range(100):                                            # the thread finishes its one SVD…
        if finished:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert len(finished) == 1 and calls == ["blocks.0.weight"]      # …and starts no other
