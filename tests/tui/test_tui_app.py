"""Pilot tests of the inspector app on real files written by gsvinspect.synth (torch.save)."""

from __future__ import annotations

import os
import re
import zipfile

import pytest
from test_tui_support import PAIRS, demo_files, make_app, open_export, settle, wait_until

from gsvinspect_tui.app import GsvInspectApp
from gsvinspect_tui.dialogs import MessageScreen
from gsvinspect_tui.help_screen import HelpScreen
from gsvinspect_tui.rules_editor import RulesEditor


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_files(tmp_path_factory.getbasetemp() / "tui-demo")  # shared by the TUI test modules


def leaves(app):
    return [ln.node.target for ln in app.diff.lines if not ln.is_group]


def plain(renderable, width: int = 120) -> str:
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


async def test_opens_pair_and_shows_problem_counts(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.load_error is None
        counts = app.counts()
        assert counts == {"MISSING": 776, "UNEXPECTED": 776}     # DDP `module.` keys, no rule yet
        top = [ln.node.name for ln in app.diff.lines if ln.depth == 0]
        assert "module" in top and "enc_q" in top
        assert "776 missing" in str(app.query_one("#status").render())
        # the wrapper finding is in the info tab
        assert any(f.code == "wrapper-prefix" for f in app.session.findings)
        assert "[wrapper-prefix]" in app.query_one("#info").plain_text(width=160)


async def test_filter_regex_and_escape_clears(demo):
    app = make_app(demo, "export")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        n_all = len(app.diff.lines)
        await pilot.press("slash")
        assert app.focused.id == "filter"
        await pilot.press(*"re:s.1.w")
        await pilot.pause()
        expected = {k for k in app.model.leaves if re.search("s.1.w", k)}
        assert "enc_q.enc.in_layers.1.weight_g" in expected and len(expected) < 100
        assert set(leaves(app)) == expected
        await pilot.press("enter")
        assert app.focused is app.diff
        await pilot.press("escape")
        await pilot.pause()
        assert app.model.filter_text == "" and len(app.diff.lines) == n_all


async def test_expand_collapse_and_cursor_keeps_key(demo):
    app = make_app(demo, "gpt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        n0 = len(app.diff.lines)
        first_group = next(i for i, ln in enumerate(app.diff.lines) if ln.is_group and not ln.expanded)
        app.diff.cursor = first_group
        await pilot.press("enter")
        assert len(app.diff.lines) > n0 and app.diff.lines[first_group].expanded
        await pilot.press("enter")
        assert len(app.diff.lines) == n0
        await pilot.press("e")
        assert len(leaves(app)) == 295
        key = "model.h.layers.7.linear1.weight"
        assert app.diff.move_to(key) and app.diff.current_ident == key
        await pilot.press("slash", *"linear1")
        await pilot.pause()
        assert app.diff.current_ident == key              # still on it after filtering
        await pilot.press("escape")
        await pilot.press("c")                            # collapse: cursor goes to its visible group
        assert app.diff.current.is_group and key.startswith(app.diff.current.node.prefix + ".")
        await pilot.press("s")
        assert app.model.sort_by_change
        await pilot.press("f")                            # flat list: every key under its full name
        assert len(app.diff.lines) == 295
        assert all(not ln.is_group and ln.label == ln.node.target for ln in app.diff.lines)
        assert "flat" in str(app.query_one("#status").render())


async def test_rule_edit_changes_counts_and_error_shows_at_line(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("r")
        editor = app.query_one(RulesEditor)
        assert app.focused is editor.text_area
        await pilot.press("slash", "1", "q", "question_mark", "n", "x")   # app keys type text here
        assert editor.text == "/1q?nx" and app.is_running and app.screen is app.screen_stack[0]
        editor.text_area.load_text("")
        editor.text_area.insert("[[rule]]\nstrip_prefix = 'module")
        await pilot.press("end", *".'")  # the last keystrokes complete the rule
        await settle(app, pilot, pause=0.3)
        assert app.counts() == {"DTYPE_DIFFERS": 776}
        # one headline, as the CLI says it: dtype-only rows are matched, never listed beside the problems
        for pane in ("#rules-counts", "#status"):
            shown = str(app.query_one(pane).render())
            assert "776 matched (776 dtype only)" in shown and "· 776 dtype" not in shown, shown
        assert "rules OK" in str(app.query_one("#rules-error").render())
        leaf = app.model.leaves["enc_q.pre.weight"]
        assert leaf.row.ft_key == "module.enc_q.pre.weight" and leaf.row.rule == 0
        app.diff.move_to("enc_q.pre.weight")
        await pilot.pause()
        detail = app.query_one("#detail").plain_text()
        assert "module.enc_q.pre.weight" in detail and "rule 1" in detail and "module." in detail
        # a broken edit: the error names its line; the last good alignment stays
        editor.text_area.insert("\n[[rule]]\nfrobnicat", location=editor.text_area.document.end)
        await pilot.press("end", *"e = 1")
        await settle(app, pilot, pause=0.3)
        err = str(app.query_one("#rules-error").render())
        assert err.startswith("✗ line 4") and "frobnicate" in err
        assert editor.text_area.error_line == 4
        assert app.counts() == {"DTYPE_DIFFERS": 776}


async def test_suggest_button_inserts_rules_and_realigns(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.query_one("#side").active = "tab-rules"
        await pilot.pause()
        await pilot.click("#rules-suggest")
        await settle(app, pilot, pause=0.3)
        assert "strip_prefix = 'module.'" in app.query_one(RulesEditor).text
        assert app.counts() == {"DTYPE_DIFFERS": 776}


async def test_stats_fill_in_chart_and_embedding_detail(demo):
    app = make_app(demo, "gpt", stats=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: not app.stats_running)
        assert not app.stats_running
        assert app.model.n_with_stats == 295
        st = app.model.leaves["model.h.layers.0.linear1.weight"].stats
        assert st.rel_change > 0 and 0 < st.cosine <= 1
        chart = app.query_one("#chart")
        names = [n for n, _, _ in chart._items]
        assert "model.h.layers" in names or "model" in names
        # detail of a key shows its statistics
        app.diff.move_to("model.h.layers.0.linear1.weight")
        await settle(app, pilot)
        text = app.query_one("#detail").plain_text()
        assert "relative change" in text and "cosine" in text
        # the phoneme embedding: most-changed rows with symbols, languages (the demo moved English)
        app.diff.move_to("model.ar_text_embedding.word_embeddings.weight")
        await settle(app, pilot, pause=0.1)
        text = app.query_one("#detail").plain_text(width=120)
        assert "most-changed rows" in text and "by language" in text
        table = text.split("by language")[1].split()
        assert table[:4] == ["language", "rows", "moved", "change"] and table[4] == "en"  # most-moved first


async def test_next_problem_and_only_problems(demo):
    app = make_app(demo, "export")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("n")
        assert app.diff.current_ident.startswith("enc_q.")
        first = app.diff.current_ident
        await pilot.press("n")
        second = app.diff.current_ident
        assert second != first and second.startswith("enc_q.")
        await pilot.press("N")
        assert app.diff.current_ident == first
        await pilot.press("p")
        assert set(k.split(".")[0] for k in leaves(app)) == {"enc_q"} and len(leaves(app)) == 103
        assert app.diff.current_ident == first
        assert any(f.code == "enc-q-missing" and f.severity == "error" for f in app.session.findings)


async def test_unreadable_checkpoint_shows_message_not_traceback(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive at all" * 10)
    app = GsvInspectApp(bad, bad, stats=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.load_error and "broken.pth" in app.load_error
        assert app.query_one("#message").display
        assert "broken.pth" in str(app.query_one("#message").render())
        await pilot.press("x")            # nothing to export: a notice, no crash
        await pilot.press("q")
    assert app.return_code == 0


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


async def test_refused_pickle_is_reported_in_app(tmp_path):
    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"weight": {"a": torch.zeros(2)}, "x": _Evil()}, evil)
    assert zipfile.is_zipfile(evil)
    app = GsvInspectApp(evil, stats=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.load_error and "refused" in app.load_error
        assert "refused" in str(app.query_one("#message").render())


async def test_bad_rules_file_shows_error_and_keys_still_appear(demo, tmp_path):
    rules = tmp_path / "bad.toml"
    rules.write_text("[[rule]]\nrename = '('\nto = 'x'\n")
    app = make_app(demo, "gpt", rules=rules)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.load_error is None and app.model is not None and len(app.model.leaves) == 295
        err = str(app.query_one("#rules-error").render())
        assert err.startswith("✗ line 2")
        assert app.query_one(RulesEditor).text.startswith("[[rule]]")


async def test_single_file_browse(demo):
    app = GsvInspectApp(demo["gpt_finetune"], stats=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.model.single and len(app.model.leaves) == 295
        await pilot.press("e")
        assert len(leaves(app)) == 295
        info = app.query_one("#info").plain_text()
        assert "MixedPrecision" in info and "gpt-lightning" in info


async def test_help_screen_palette_and_quit_cancels_stats(demo):
    app = make_app(demo, "sovits", stats=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"only problems")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await pilot.pause()
        assert app.model.only_problems
        cancel = app.stats.cancel_event
        await pilot.press("q")
    assert cancel.is_set()


async def test_number_keys_switch_tabs_and_f1_opens_help(demo):
    """README: `1`-`4` pick Detail, Rules, Modules, Info; `?` / `F1` open the help."""
    app = make_app(demo, "gpt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        side = app.query_one("#side")
        for key, tab in (("4", "tab-info"), ("3", "tab-modules"), ("2", "tab-rules"), ("1", "tab-detail")):
            await pilot.press(key)
            assert side.active == tab, key
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_rules_save_and_load(demo, tmp_path):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.action_suggest_rules()
        await settle(app, pilot, pause=0.3)
        app.session.rules_path = tmp_path / "saved.toml"
        await pilot.press("ctrl+s")
        await pilot.pause()
        saved = (tmp_path / "saved.toml").read_text()
        assert "strip_prefix = 'module.'" in saved
        # saving into a missing directory: a message, not a crash
        app.session.rules_path = tmp_path / "nope" / "x.toml"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, MessageScreen)
        await pilot.press("escape")
        # loading replaces the text and re-aligns
        (tmp_path / "empty.toml").write_text("# nothing\n")
        app.action_load_rules()
        await pilot.pause()
        inp = app.screen.query_one("#prompt-input")
        inp.value = str(tmp_path / "empty.toml")
        await pilot.press("enter")
        await settle(app, pilot, pause=0.3)
        assert app.query_one(RulesEditor).text == "# nothing\n"
        assert app.counts() == {"MISSING": 776, "UNEXPECTED": 776}


# -- export dialog -------------------------------------------------------------------------------

async def _write(app, pilot, screen, *confirm: str):
    """Press Ctrl+S (then the `confirm` keys, e.g. "y" to overwrite) and wait for the write to end."""
    await pilot.press("ctrl+s")
    if confirm:
        await pilot.pause()
        await pilot.press(*confirm)
    await settle(app, pilot, pause=0.1)
    await wait_until(app, pilot, lambda: not screen.writing, pause=0.1)


async def test_export_writes_file_our_loader_and_torch_read(demo, tmp_path):
    import torch

    from gsvinspect.load.checkpoint import open_checkpoint

    out = tmp_path / "new-base.ckpt"
    app = make_app(demo, "gpt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = await open_export(app, pilot, out)
        assert screen.plan is not None and screen.plan.ok
        plan_text = plain(screen.query_one("#export-plan-text").content)
        assert "Dry run" in plan_text and "MixedPrecision" in plan_text.split("scaler state")[1].splitlines()[0]
        assert out.exists() is False
        await _write(app, pilot, screen)
        assert screen.error is None and screen.report is not None
        await pilot.press("escape")
        assert not hasattr(app.screen, "plan")
    ck = open_checkpoint(out)
    assert len(ck.weights) == 295 and ck.scaler is not None and ck.scaler.path == ("MixedPrecision",)
    ck.close()
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert set(obj) >= {"weight", "config", "MixedPrecision"}
    assert obj["weight"]["model.h.layers.0.linear1.weight"].dtype == torch.float16


async def test_export_asks_before_overwriting_and_reports_bad_paths(demo, tmp_path):
    from gsvinspect_tui.dialogs import ConfirmScreen

    out = tmp_path / "exists.pth"
    out.write_bytes(b"keep me")
    app = make_app(demo, "export")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = await open_export(app, pilot, out)
        assert screen.plan is not None
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")                        # no: nothing written
        await settle(app, pilot)
        assert out.read_bytes() == b"keep me" and app.screen is screen
        # a path inside a missing directory: the error is shown in the dialog, the app lives on
        screen.query_one("#export-out").value = str(tmp_path / "no" / "such" / "dir" / "x.pth")
        await _write(app, pilot, screen)
        assert screen.error and "x.pth" in screen.error
        assert "export failed" in str(screen.query_one("#export-plan-text").render())
        # refusal policy: enc_q is missing and the policy says error -> plan refused, Write disabled
        screen.query_one("#export-missing").value = "error"
        await settle(app, pilot, pause=0.1)
        assert screen.plan is not None and not screen.plan.ok
        assert screen.query_one("#export-write").disabled
        # yes: overwritten with a verified file
        screen.query_one("#export-missing").value = "pretrained"
        await settle(app, pilot, pause=0.1)
        screen.query_one("#export-out").value = str(out)
        await _write(app, pilot, screen, "y")
        assert screen.error is None, screen.error
    assert out.read_bytes()[:2] == b"PK"


async def test_switch_demo_pair_from_palette(demo):
    pairs = {name: (demo[a], demo[b], None) for name, (a, b) in PAIRS.items()}   # as `demo` passes them
    app = make_app(demo, "sovits", pairs=pairs, pair="sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert len(app.model.leaves) == 776 * 2
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Demo pair: gpt")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await settle(app, pilot, pause=0.1)
        assert app.pair == "gpt" and len(app.model.leaves) == 295
        assert "[demo: gpt]" in str(app.query_one("#topbar").render())


@pytest.mark.slow
async def test_twenty_thousand_keys_rule_edit_filter_expand(tmp_path):
    import torch

    from gsvinspect.synth import wide_state_dict

    sd = wide_state_dict(20000)
    pre, ft = tmp_path / "pre.pth", tmp_path / "G_ft.pth"
    torch.save({"weight": sd}, pre)
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, ft)
    app = GsvInspectApp(pre, ft, stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        assert app.counts() == {"MISSING": 20000, "UNEXPECTED": 20000}
        app.rules_editor.set_text("[[rule]]\nstrip_prefix = 'module.'\n")
        await settle(app, pilot, pause=0.3)
        assert app.counts() == {"MATCHED": 20000}
        await pilot.press("e")
        assert len(leaves(app)) == 20000
        await pilot.press("end")
        assert app.diff.cursor == len(app.diff.lines) - 1
        await pilot.press("slash", *"layers.7.attn.q")
        await pilot.pause()
        assert 0 < len(leaves(app)) < 200 and all("layers.7.attn.q" in k for k in leaves(app))


async def test_rendered_lines_show_marks_sides_and_change(demo):
    app = make_app(demo, "export", stats=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await wait_until(app, pilot, lambda: not app.stats_running)
        app.diff.move_to("enc_q.pre.weight")
        app.diff.move_to("enc_p.text_embedding.weight")
        text = app.diff.dump(width=150)
        missing = next(ln for ln in text.splitlines() if ln.strip().startswith("weight") and "∅" in ln)
        assert "48×257×1 f16 -" in missing                # left side, mark "-", right side absent
        emb = next(ln for ln in text.splitlines() if "732×" in ln)    # phoneme rows kept at full size
        assert emb.count("f16") == 2 and " = " in emb and "%" in emb and any(c in emb for c in "█▉▊▋▌▍▎▏")
        group = next(ln for ln in text.splitlines() if ln.startswith("▼ enc_q"))
        assert "103 missing" in group


async def test_rules_weights_entry_picks_the_state_dict_shown(tmp_path):
    """Like diff --rules: a rules file's weights_entry decides which state dict the inspector opens."""
    import torch

    from gsvinspect import synth

    pre_p, ft_p = synth.write_pair(tmp_path / "d", "sovits-D", "v1", scale=16)
    real = torch.load(ft_p, map_location="cpu", weights_only=True)["model"]
    two = tmp_path / "D_two.pth"
    torch.save({"model": {f"ema.{k}": v for k, v in real.items()}, "ema_model": real, "iteration": 9}, two)
    rules = tmp_path / "entry.toml"
    rules.write_text('weights_entry = "ema_model"\n')
    app = GsvInspectApp(pre_p, two, rules=rules, stats=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.load_error is None
        assert tuple(app.session.ft.weights_path) == ("ema_model",)
        counts = app.counts()                     # every key matched (fp32 training file vs fp16 base)
        assert "MISSING" not in counts and "UNEXPECTED" not in counts and counts.get("DTYPE_DIFFERS") == 111
