"""The app's numbers are the CLI's (issue 13, points 7 and 8): `s` sorts by the share of the
model's change that the tree shows, the Modules tab ranks by it, zero-initialised pretrained
tensors read "from 0", every percentage is the library's one format, shapes read 48×192×1.

Real files: a v2 SoVITS pair in upstream's containers whose zero-initialised tensors are zero on
the pretrained side (helpers_stats.zero_init_sovits_pair).
"""

from __future__ import annotations

import json
import re

import pytest
from test_tui_support import settle, wait_until

from gsvinspect.cli.main import main
from helpers_stats import zero_init_sovits_pair


@pytest.fixture(scope="module")
def zero_pair(tmp_path_factory):
    return zero_init_sovits_pair(tmp_path_factory.mktemp("tui-numbers"))


def _cli_per_tensor(pre, ft, capsys) -> dict:
    assert main(["diff", str(pre), str(ft), "--json"]) == 0
    return {t["target"]: t for t in json.loads(capsys.readouterr().out)["stats"]["per_tensor"]}


async def test_sort_modules_and_detail_show_the_cli_numbers(zero_pair, capsys):
    from gsvinspect_tui.app import GsvInspectApp

    pre, ft, zero = zero_pair
    cli = _cli_per_tensor(pre, ft, capsys)
    app = GsvInspectApp(pre, ft, stats=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: not app.stats_running)
        assert app.model.n_with_stats == 776
        for k, t in cli.items():                        # the same share for every key
            assert app.model.leaves[k].share == pytest.approx(t["share"], rel=1e-9, abs=1e-15), k
        await pilot.press("f", "s", "home")             # flat list, sorted, from the top
        await settle(app, pilot)
        order = [ln.node.target for ln in app.diff.lines]
        ranked = sorted(cli, key=lambda k: -cli[k]["share"])
        assert order[:20] == ranked[:20] and not set(order[:100]) & set(zero)
        # the number on each line is that share, in the one percentage format
        text = "\n".join(app.diff.render_line(y).text for y in range(10))
        first = app.model.leaves[order[0]]
        assert f" {first.share * 100:.1f}% " in text.splitlines()[0]
        assert not re.search(r"\d(e-\d+)(?!%)", text) and "inf" not in text
        assert "×" in text and "[" not in text             # shapes: 48×192×1
        # Modules tab: ranked by the same share, the flow's zero-initialised `post` convs not on top
        chart = app.query_one("#chart")
        items = chart._items
        assert [s for _, s, _ in items] == sorted((s for _, s, _ in items), reverse=True)
        assert not any(n.endswith(".post") for n, _, _ in items[:10])
        # Detail of a zero-initialised tensor: "from 0", its share, never inf
        app.diff.move_to(zero[0])
        await settle(app, pilot)
        detail = app.query_one("#detail").plain_text(width=120)
        assert "from 0" in detail and "share of the model" in detail and "inf" not in detail


async def test_alpha_in_the_rules_shows_the_mix_like_diff(zero_pair, tmp_path, capsys):
    """An [alpha] table in the rules: the tree, Detail and phoneme rows show the mixed result
    against pretrained, the numbers `diff --rules` prints (issue 13, point 12)."""
    from gsvinspect_tui.app import GsvInspectApp

    pre, ft, zero = zero_pair
    rules = tmp_path / "mix.toml"
    rules.write_text('[alpha]\ndefault = 0.5\n"enc_p.text_embedding" = 0.2\n')
    assert main(["diff", str(pre), str(ft), "--rules", str(rules), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["mixed"]["stats"]
    cli = {t["target"]: t for t in doc["per_tensor"]}
    app = GsvInspectApp(pre, ft, rules=rules, stats=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: not app.stats_running)
        emb = "enc_p.text_embedding.weight"
        leaf = app.model.leaves[emb]
        assert leaf.alpha == 0.2 and app.model.leaves["dec.conv_pre.weight"].alpha == 0.5
        for k, t in cli.items():
            lf = app.model.leaves[k]
            assert lf.stats.norm_diff == pytest.approx(t["norm_diff"], rel=1e-12), k
            assert lf.share == pytest.approx(t["share"], rel=1e-9, abs=1e-15), k
        app.diff.move_to(emb)
        await settle(app, pilot, pause=0.1)
        detail = app.query_one("#detail").plain_text(width=160)
        assert "statistics of the mix pre + 0.2·(ft − pre)" in detail
        langs = {x["language"]: x["rel_change"] for x in doc["embeddings"][0]["languages"]}
        from gsvinspect.report.numbers import fmt_rel

        by_language = detail.split("by language")[1]
        en_line = next(ln for ln in by_language.splitlines() if ln.split()[:1] == ["en"])
        assert fmt_rel(langs["en"]) in en_line


def test_share_bars_are_proportional_to_the_norm_of_the_change():
    """Bars beside the share column read as the share does: 48 % is visibly longer than 5 %."""
    from gsvinspect_tui.diff_view import BAR_WIDTH, change_bar

    def cells(share):
        bar = change_bar(share, width=8)
        return sum(1 for ch in bar if ch == "█") + (0.5 if bar.rstrip() and bar.rstrip()[-1] != "█" else 0)

    assert cells(0.48) >= 2.5 * cells(0.05) and cells(0.05) > 0
    assert change_bar(1.0, width=8) == "█" * 8 and change_bar(0.0, width=8) == " " * 8
    assert change_bar(float("nan"), width=BAR_WIDTH) == " " * BAR_WIDTH
