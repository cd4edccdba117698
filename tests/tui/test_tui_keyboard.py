"""Issue 13 part A and the TUI bits of point 17, from the user's seat: keyboard only, on the demo's
real files (torch.save). Every test here failed on the app before the fix it names."""

from __future__ import annotations

import shutil

import pytest
from test_tui_support import PAIRS, demo_files, make_app, open_export, settle, wait_until

from gsvinspect_tui.app import GsvInspectApp
from gsvinspect_tui.dialogs import ConfirmScreen
from gsvinspect_tui.help_screen import HelpScreen, help_text
from gsvinspect_tui.module_chart import chart_text
from gsvinspect_tui.rules_editor import RulesEditor


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_files(tmp_path_factory.getbasetemp() / "tui-demo")


async def _tree_takes_keys(app, pilot) -> None:
    """The next keys reach the key tree: j moves its cursor down, k back up."""
    assert app.focused is app.diff, app.focused
    at = app.diff.cursor
    await pilot.press("j")
    assert app.diff.cursor == at + 1
    await pilot.press("k")
    assert app.diff.cursor == at


def _footer_keys(app) -> set[str]:
    from textual.widgets._footer import FooterKey

    return {k.key for k in app.screen.query(FooterKey)}


# -- 1. the rules editor never keeps the keyboard ------------------------------------------------

async def test_esc_and_tab_leave_the_rules_editor(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        editor = app.query_one(RulesEditor)
        await pilot.press("r", "#", "x")
        assert app.focused is editor.text_area and editor.text == "#x"
        await pilot.press("escape")
        await _tree_takes_keys(app, pilot)
        await pilot.press("1", "slash")               # app keys work again at once: tab, filter
        assert app.focused.id == "filter"
        await pilot.press("escape", "escape")
        await _tree_takes_keys(app, pilot)
        await pilot.press("r", "tab")                  # Tab leaves the editor instead of indenting
        assert app.focused is not editor.text_area and editor.text == "#x"
        await pilot.press("escape")
        await _tree_takes_keys(app, pilot)
        assert editor.text == "#x"                     # nothing typed into the rules on the way
        # over SSH, Esc and the next key often arrive together and read as Alt+key
        await pilot.press("r", "alt+j")
        await settle(app, pilot)
        assert app.focused is app.diff and app.diff.cursor == 1 and editor.text == "#x"


async def test_palette_suggest_then_esc_leaves_keys_with_the_tree(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("r", "ctrl+p")               # from the editor, as a user looking for help would
        await pilot.pause()
        await pilot.press(*"Suggest rules")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await settle(app, pilot, pause=0.3)
        suggested = app.rules_editor.text
        assert "strip_prefix = 'module.'" in suggested
        await pilot.press("escape")
        await _tree_takes_keys(app, pilot)
        assert app.rules_editor.text == suggested


async def test_after_each_dialog_keys_reach_the_tree(demo):
    app = make_app(demo, "gpt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        for opener in ("question_mark", "x"):
            await pilot.press(opener)
            await settle(app, pilot, pause=0.1)
            assert app.screen is not app.main
            await pilot.press("escape")
            await settle(app, pilot)
            await _tree_takes_keys(app, pilot)
        app.action_load_rules()
        await pilot.pause()
        await pilot.press("escape")
        await _tree_takes_keys(app, pilot)


def plan_text(screen) -> str:
    import io

    from rich.console import Console

    console = Console(width=120, record=True, file=io.StringIO(), color_system=None)
    console.print(screen.query_one("#export-plan-text").content)
    return console.export_text()


# -- 2. the export dialog writes with a key no field swallows, never an unseen plan ----------------

async def test_export_writes_from_the_alpha_field_with_what_was_typed(demo, tmp_path):
    out = tmp_path / "mixed.ckpt"
    app = make_app(demo, "gpt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = await open_export(app, pilot, out)
        screen.query_one("#export-alpha").focus()
        await pilot.press(*"0.7")
        await settle(app, pilot, pause=0.1)
        assert "alpha 0.7: 0.7·fine-tuned + 0.3·pretrained" in plan_text(screen)
        await pilot.press("ctrl+s")                    # Ctrl+W deleted "7" here and planned alpha 0.0
        await wait_until(app, pilot, lambda: screen.report is not None or screen.error is not None)
        assert screen.query_one("#export-alpha").value == "0.7"
        assert screen.error is None and out.exists()
        assert screen.plan.alphas_used() == {"0.7": 295}       # every tensor mixed at what was typed


async def test_export_never_writes_a_plan_still_being_made(demo, tmp_path):
    import threading

    out = tmp_path / "never.ckpt"
    app = make_app(demo, "gpt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = await open_export(app, pilot, out)
        release = threading.Event()
        real = screen._plan_export

        def slow_plan(*args, **kwargs):
            release.wait(10)
            return real(*args, **kwargs)

        screen._plan_export = slow_plan
        screen.query_one("#export-alpha").focus()
        await pilot.press("0", "ctrl+s")               # the edit's plan is not on screen yet
        await pilot.pause(0.2)
        assert not out.exists() and not screen.writing
        release.set()
        await settle(app, pilot, pause=0.1)
        assert "alpha 0: every weight from the PRETRAINED file" in plan_text(screen)
        assert not out.exists()


async def test_export_path_change_clears_the_written_result(demo, tmp_path):
    app = make_app(demo, "gpt")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = await open_export(app, pilot, tmp_path / "one.ckpt")
        await pilot.press("ctrl+s")
        await wait_until(app, pilot, lambda: screen.report is not None)
        assert "written and verified" in plan_text(screen)
        screen.query_one("#export-out").value = str(tmp_path / "two.ckpt")
        await pilot.pause()
        text = plan_text(screen)
        assert "written and verified" not in text and "Dry run" in text and screen.report is None


# -- 3. panes scroll by keyboard; what a key asks for comes into view -----------------------------

async def test_v_scrolls_the_spectrum_into_view_and_the_pane_scrolls_by_keys(demo):
    app = make_app(demo, "gpt")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        key = "model.ar_text_embedding.word_embeddings.weight"
        assert app.diff.move_to(key)
        await settle(app, pilot, pause=0.1)            # the phoneme-row table arrives first
        await pilot.press("v")
        await settle(app, pilot, pause=0.1)
        await pilot.pause()
        detail = app.query_one("#detail")
        lines = detail.plain_text(width=detail.scrollable_content_region.width).splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.startswith("change spectrum"))
        height = detail.scrollable_content_region.height
        assert at >= height                            # below the fold: it had to be scrolled to
        assert detail.scroll_y <= at < detail.scroll_y + height
        detail.focus()                                 # Tab reaches it; arrows and pages scroll it
        await pilot.press("home")
        assert detail.scroll_y == 0
        await pilot.press("pagedown")
        assert detail.scroll_y > 0


async def test_export_plan_scrolls_from_any_field_at_80x24(demo):
    app = make_app(demo, "export")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("x")
        await settle(app, pilot, pause=0.1)
        plan = app.screen.query_one("#export-plan")
        assert plan.max_scroll_y > 0 and app.screen.focused.id == "export-layout"
        await pilot.press("pagedown")
        assert plan.scroll_y > 0
        await pilot.press("pageup")
        assert plan.scroll_y == 0


# -- 4. focus is always visible; the cursor row stays readable ------------------------------------

async def test_focused_pane_is_marked_by_a_glyph(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        panes = {"#diff": app.diff, "#rules-text": app.rules_editor.text_area}
        for tab, wid in (("tab-detail", "#detail"), ("tab-modules", "#chart"), ("tab-info", "#info")):
            app.main.show_tab(tab)
            await pilot.pause()
            panes[wid] = app.query_one(wid)
            panes[wid].focus()
            await pilot.pause()
            assert panes[wid].styles.border_left[0] == "thick", wid
        for wid, widget in panes.items():
            if wid == "#rules-text":
                app.main.show_tab("tab-rules")
                await pilot.pause()
            widget.focus()
            await pilot.pause()
            assert widget.styles.border_left[0] == "thick", wid          # a glyph: 16 colours too
            others = [w for w in panes.values() if w is not widget and w.display]
            assert all(w.styles.border_left[0] in ("blank", "") for w in others), wid


async def test_esc_from_every_pane_gives_the_keys_back_to_the_tree(demo):
    """README: "Esc goes back to the key tree from any pane": Detail, Modules, Info and the tab strip
    (Tab stops there), not only the rules editor."""
    from textual.widgets import Tabs

    app = make_app(demo, "sovits")
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        for tab, wid in (("tab-detail", "#detail"), ("tab-modules", "#chart"), ("tab-info", "#info"),
                         ("tab-detail", None)):
            app.main.show_tab(tab)
            await pilot.pause()
            pane = app.main.side.query_one(Tabs) if wid is None else app.query_one(wid)
            pane.focus()
            await pilot.pause()
            assert app.focused is pane
            await pilot.press("escape")
            await _tree_takes_keys(app, pilot)


async def test_cursor_row_has_no_red_text(demo):
    app = make_app(demo, "export")
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        assert app.diff.move_to("enc_q.pre.weight")    # a missing key: red mark and ∅ side
        await pilot.pause()
        strip = app.diff.render_line(app.diff.cursor - int(app.diff.scroll_offset.y))
        text = "".join(seg.text for seg in strip)
        assert "∅" in text and " -" in text             # the mark still says "missing"
        colours = {seg.style.color.name for seg in strip if seg.style and seg.style.color and seg.text.strip()}
        assert not colours & {"red", "bright_red", "magenta"}, colours
        assert len({seg.style.color for seg in strip if seg.text.strip()}) == 1


# -- 5. quitting with unsaved rules asks; the footer shows only keys that do something -----------

async def test_quit_with_unsaved_rule_edits_asks_first(demo, tmp_path):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("r", "#", "escape")
        await settle(app, pilot, pause=0.3)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen) and app.is_running
        await pilot.press("n")
        await _tree_takes_keys(app, pilot)
        app.session.rules_path = tmp_path / "kept.toml"
        await pilot.press("ctrl+s")                    # saved: nothing to lose any more
        await pilot.pause()
        assert (tmp_path / "kept.toml").read_text() == "#"
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0                        # quit at once, without a question


async def test_quit_confirmed_with_y(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("a")                         # the offered rule: an edit that is in no file
        await settle(app, pilot, pause=0.3)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
    assert app.return_code == 0


async def test_footer_hides_keys_that_do_nothing(demo):
    app = GsvInspectApp(demo["gpt_finetune"], stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        keys = _footer_keys(app)
        assert {"q", "slash"} <= keys and not keys & {"x", "r", "p", "s", "n", "a"}, keys
        await pilot.press("x", "r")                    # and they do nothing: no dialog, no editor
        assert app.screen is app.main and app.focused is app.diff
    app = make_app(demo, "gpt")                        # a pair that lines up: no problem keys
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        keys = _footer_keys(app)
        assert {"x", "r", "s"} <= keys and not keys & {"p", "n", "a"}, keys


# -- 6. first run: the offered rule, one key away --------------------------------------------------

async def test_first_run_offers_the_suggested_rule_on_one_key(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        hint = app.query_one("#hint")
        text = str(hint.render())
        assert hint.display and "strip_prefix 'module.'" in text and " a " in text
        assert "a" in _footer_keys(app)
        await pilot.press("a")
        await settle(app, pilot, pause=0.3)
        assert app.counts() == {"DTYPE_DIFFERS": 776} and not hint.display
        assert "a" not in _footer_keys(app)
        await _tree_takes_keys(app, pilot)
    app = make_app(demo, "gpt")                        # already aligned: nothing offered
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert not app.query_one("#hint").display


# -- 17. the smaller things -----------------------------------------------------------------------

async def test_groups_show_on_their_own_side_and_marks_mean_one_thing(demo):
    app = make_app(demo, "sovits")
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        from gsvinspect_tui.diff_view import MID_WIDTH

        rows = app.diff.dump(width=150).splitlines()
        w = (150 - MID_WIDTH) // 2                      # the left side's width; the mark follows it
        module = next(r for r in rows if "module" in r)
        left, right = module[:w], module[w + MID_WIDTH:]
        assert "module" not in left and "∅" in left     # the pretrained side has no `module.` keys
        assert "▶ module" in right and "776 unexpected" in right
        enc_p = next(r for r in rows if "enc_p" in r)
        assert "▶ enc_p" in enc_p[:w] and "enc_p" not in enc_p[w:]
        assert enc_p[w:w + 2] == " -" and module[w:w + 2] == " +"   # the keys' marks: missing, unexpected
        assert all(r[w:w + 2] != " !" for r in rows)   # `!` is a conflict, and there is none
    legend = [row for row in help_text().columns[0].cells]
    assert any(getattr(c, "plain", c) == "*" for c in legend) and any(getattr(c, "plain", c) == "!" for c in legend)


def test_help_lists_every_key_of_the_main_screen():
    """The help screen promises every key binding: a key bound on the main screen is in its key column."""
    from gsvinspect_tui.main_screen import MainScreen

    shown = {tok for c in help_text().columns[0].cells for tok in str(getattr(c, "plain", c)).split()}
    names = {"slash": "/", "escape": "Esc", "question_mark": "?", "f1": "F1", "ctrl+s": "Ctrl+S"}
    bound = {names.get(k, k) for b in MainScreen.BINDINGS for k in b.key.split(",")}
    assert bound <= shown, bound - shown


def test_module_chart_never_repeats_a_label():
    items = [("model.ar_text_embedding.word_embeddings", 0.3, 1), ("model.ar_audio_embedding.word_embeddings", 0.2, 1),
             ("model.h.layers", 0.1, 288), ("model.ar_text_position", 0.05, 1)]
    labels = [line.split(" ")[0] for line in chart_text(items, 44).plain.splitlines()]
    assert len(set(labels)) == len(items), labels
    assert all(len(label) <= 18 for label in labels)


async def test_title_keeps_the_fine_tuned_name_after_the_dialog(demo, tmp_path):
    pre, ft = (demo[n] for n in PAIRS["gpt"])
    long_pre = tmp_path / ("s1bert25hz-5kh-longer-epoch=12-step=369668-pretrained-from-the-hub" + pre.suffix)
    long_ft = tmp_path / "my-voice-finetune-e15-step=1200.ckpt"
    shutil.copy(pre, long_pre)
    shutil.copy(ft, long_ft)
    app = GsvInspectApp(long_pre, long_ft, stats=False, pair="gpt")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("x")
        await settle(app, pilot, pause=0.1)
        await pilot.press("escape")
        await settle(app, pilot)
        shot = app.export_screenshot()
        assert long_ft.name.replace("=", "&#61;") in shot or long_ft.name in shot


# -- text from a file never reaches the terminal raw (gsvinspect.errors.safe_text) ---------------

async def test_control_characters_from_the_file_are_escaped_everywhere_in_the_app(tmp_path):
    import torch

    evil_key = "enc\x1b]0;pwned\x07.w\u202eeight"
    path = tmp_path / "odd\x1b[31mname.pth"
    torch.save({"weight": {evil_key: torch.ones(2, 2), "dec.bias": torch.zeros(2)},
                "config": {"model": {"name": "x\x1b[2Jcleared"}}}, path)
    app = GsvInspectApp(path, stats=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        assert app.load_error is None, app.load_error
        app.diff.move_to(evil_key)
        await pilot.pause()
        shown = "\n".join([app.diff.dump(width=150), app.query_one("#detail").plain_text(),
                           app.query_one("#info").plain_text(width=160), app.title_text(160).plain])
        assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
        assert "\\x1b" in shown and "cleared" in shown


async def test_export_dialog_names_the_rules_alpha_table_when_it_decides_the_mix(demo, tmp_path):
    """With an [alpha] table in the rules, the plan says the table decides the mix (not 'alpha: none')."""
    out = tmp_path / "mixed.ckpt"
    rules = tmp_path / "mix.toml"
    rules.write_text('[alpha]\n"model.ar_text_embedding" = 0.3\n')
    app = make_app(demo, "gpt", rules=rules)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        screen = await open_export(app, pilot, out)
        await settle(app, pilot, pause=0.1)
        text = plan_text(screen)
        assert "alpha from the rules' [alpha] table" in text and "alpha: none" not in text
