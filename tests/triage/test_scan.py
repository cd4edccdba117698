"""`scan` finds exactly what write_run put in the tree: groups, epochs/steps and where they came
from, scaler state, base usability, base ties with their rule, exports as copies."""

from __future__ import annotations

from pathlib import Path

from gsvinspect.triage.entry import epoch_step_from_name


def _by_path(result):
    return {Path(e.path): e for e in result.entries}


def test_every_file_is_found_once_and_grouped(run_tree, scanned):
    result, _ = scanned
    assert sorted(map(Path, (e.path for e in result.entries))) == sorted(run_tree.files())
    groups = {(exp, stage): [Path(e.path) for e in es] for exp, stage, es in result.groups()}
    assert list(groups)[0] == ("pretrained", "pretrained")
    assert groups[("myvoice", "s1 GPT")] == run_tree.training["gpt"]            # sorted by step
    assert groups[("myvoice", "s2 G")] == run_tree.training["sovits-G"]
    assert groups[("myvoice", "s2 D")] == run_tree.training["sovits-D"]
    assert sorted(groups[("myvoice", "exports")]) == sorted(run_tree.exports["gpt"] + run_tree.exports["sovits-G"])


def test_epoch_and_step_come_from_the_file_first(run_tree, scanned):
    by = _by_path(scanned[0])
    for i, e in enumerate(run_tree.epochs):
        lightning = by[run_tree.training["gpt"][i]]
        assert (lightning.epoch, lightning.epoch_from, lightning.step, lightning.step_from) == \
            (e, "file", run_tree.steps["gpt"][i], "file")
        g = by[run_tree.training["sovits-G"][i]]     # iteration holds the epoch; the step is only in the name
        assert (g.epoch, g.epoch_from, g.step, g.step_from) == (e, "file", run_tree.steps["sovits-G"][i], "name")
        sovits_export = by[run_tree.exports["sovits-G"][i]]
        assert (sovits_export.epoch, sovits_export.step, sovits_export.step_from) == \
            (e, run_tree.steps["sovits-G"][i], "file")
        gpt_export = by[run_tree.exports["gpt"][i]]   # GPT-e<N>: epoch in the file, step from its copy
        assert (gpt_export.epoch, gpt_export.epoch_from, gpt_export.step_from) == (e, "file", "copy")


def test_names_alone_give_epoch_and_step():
    assert epoch_step_from_name(Path("epoch=14-step=1500.ckpt")) == (15, 1500)
    assert epoch_step_from_name(Path("voice_e8_s2000.pth")) == (8, 2000)
    assert epoch_step_from_name(Path("voice_e8_s2000_l32.pth")) == (8, 2000)
    assert epoch_step_from_name(Path("G_233333333333.pth")) == (None, None)   # "save latest only"
    assert epoch_step_from_name(Path("voice-e15.ckpt")) == (15, None)


def test_scaler_and_base_usability(run_tree, scanned):
    by = _by_path(scanned[0])
    for p in run_tree.training["gpt"]:
        assert by[p].scaler is True and by[p].base_use.startswith("not directly")
    for p in run_tree.training["sovits-G"] + run_tree.exports["gpt"]:
        assert by[p].scaler is False
    for p in run_tree.exports["sovits-G"]:
        assert by[p].base_use.startswith("risky") and [m.split()[0] for m in by[p].missing] == ["enc_q"]
    for p in run_tree.exports["gpt"]:
        assert by[p].base_use.startswith("yes") and by[p].missing == []


def test_bases_are_tied_with_the_rule_that_matched(run_tree, scanned):
    by = _by_path(scanned[0])
    for model, paths in run_tree.training.items():
        for p in paths:
            assert Path(by[p].base) == run_tree.pretrained[model]
            assert by[p].base_rule == "same keys and version"
    for model, paths in run_tree.exports.items():
        for p in paths:
            assert Path(by[p].base) == run_tree.pretrained[model] and by[p].base_rule.startswith("config (")


def test_each_export_is_a_copy_of_its_training_checkpoint(run_tree, scanned):
    by = _by_path(scanned[0])
    for model in ("gpt", "sovits-G"):
        for export, training in zip(run_tree.exports[model], run_tree.training[model]):
            assert Path(by[export].copy_of) == training, export
    for p in run_tree.training["sovits-G"]:
        assert by[p].copy_of is None


def test_an_export_of_another_run_is_not_a_copy(run_tree, tmp_path):
    """Same keys and shapes, other values: the sampled tensors tell them apart."""
    from gsvinspect.meta import Layout
    from gsvinspect.synth import write_checkpoint
    from gsvinspect.triage.scan import scan

    other = write_checkpoint(tmp_path / "SoVITS_weights_v2" / "myvoice_e8_s200.pth", Layout.SOVITS_WEIGHTS, "v2",
                             scale=32, seed=99, iteration=8, step=200)
    result = scan([other, *run_tree.training["sovits-G"]])
    assert _by_path(result)[other].copy_of is None


def test_forked_workers_give_the_same_rows(run_tree, scanned, monkeypatch):
    """23 files: read by forked workers; the rows equal the ones read in this process."""
    import os

    from gsvinspect.triage import scan as scan_mod

    calls = []
    real = scan_mod._forked
    monkeypatch.setattr(scan_mod, "_forked", lambda *a: calls.append(a[2]) or real(*a))
    forked = scan_mod.scan([run_tree.root], cache=False)     # read, not taken from the scan cache
    if len(os.sched_getaffinity(0)) > 1:
        assert calls and calls[0] >= 2
    assert [e.as_dict() for e in forked.entries] == [e.as_dict() for e in scanned[0].entries]


def test_info_strings_with_gsvinspect_provenance_still_give_epoch_and_step():
    """`gsvinspect export` writes upstream's info followed by where the file came from."""
    from gsvinspect.meta import Layout
    from gsvinspect.triage.entry import epoch_step_from_file

    info = "8epoch_200iteration (gsvinspect 0.1.0: v2 sovits-g from G_200.pth over s2G2333k.pth)"
    assert epoch_step_from_file(Layout.SOVITS_WEIGHTS, {"info": info}) == (8, 200)
    assert epoch_step_from_file(Layout.GPT_WEIGHTS, {"info": "GPT-e15 (gsvinspect 0.1.0: ...)"}) == (15, None)
    assert epoch_step_from_file(Layout.SOVITS_WEIGHTS, {"info": "pretrained_s2G_v2"}) == (None, None)
