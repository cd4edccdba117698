"""Problems found by using the product from the user's seat (README commands on the demo set and on
generated GPT-SoVITS files), each as a subprocess run that failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def gsv(*argv, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    res = subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, argv)], capture_output=True, text=True,
                         env=env, timeout=timeout)
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    return res


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa-demo")
    res = gsv("demo", "--no-tui", "--dir", root)
    assert res.returncode == 0, res.stderr
    return root, res.stdout


def test_demo_summary_counts_read_like_diffs_headline(demo_dir):
    """`demo --no-tui` said "keys: 295 dtype-differs" for a pair `diff` calls "matched: 295 (295 differ
    only in dtype)": a dtype-only pair is matched everywhere (issue 13 point 9)."""
    _, out = demo_dir
    keys = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("keys:", "suggested rules"))]
    assert "keys: 295 matched (295 differ only in dtype)" in keys, keys
    assert any(k.endswith(": 776 matched (776 differ only in dtype)") for k in keys), keys
    assert not any("dtype-differs" in k for k in keys), keys


@pytest.fixture(scope="module")
def sovits_pair(tmp_path_factory):
    from gsvinspect import synth

    root = tmp_path_factory.mktemp("qa-pair")
    pre, ft = synth.write_pair(root, "sovits-G", "v2", scale=16)
    return root, pre, ft


def test_check_of_an_inference_export_agrees_with_what_export_said(sovits_pair):
    """`export --layout sovits-weights` ends with "expected keys sovits-G-v2-export: OK"; a plain `check`
    of that file said only "NOT loadable as-is: 103 missing", and `check --as sovits-G-v2-export`
    named s2_train.py's loader, which never reads an inference export (issue 13 point 13)."""
    root, pre, ft = sovits_pair
    out = root / "export_w.pth"
    res = gsv("export", pre, ft, "-o", out, "--layout", "sovits-weights")
    assert res.returncode == 0, res.stderr
    said = next(ln for ln in res.stdout.splitlines() if ln.startswith("expected keys"))
    assert "sovits-G-v2-export" in said
    verdict = said.split("sovits-G-v2-export: ", 1)[1].strip()
    chk = gsv("check", out)
    assert chk.returncode == 1 and "[enc-q-missing]" in chk.stdout       # as a training base: enc_q is missing
    text = " ".join(chk.stdout.split())
    assert "[export-complete] as an inference export (sovits-G-v2-export" in text
    assert verdict.split(":")[0] in text                                  # the same verdict as export's
    chk2 = gsv("check", out, "--as", "sovits-G-v2-export")
    loader = next(ln for ln in chk2.stdout.splitlines() if ln.startswith("loader:"))
    assert "inference" in loader and "s2_train.py" not in loader


def test_repair_plan_lists_no_change_that_changes_nothing(tmp_path):
    """A v2Pro SoVITS_weights export (header 05, HParams config whose model.version is already v2Pro)
    repaired with --header plain: the plan listed "change config.model.version: 'v2Pro' -> 'v2Pro'"."""
    import torch

    from gsvinspect import synth
    from gsvinspect.meta import Layout

    src = synth.write_checkpoint(tmp_path / "pro.pth", Layout.SOVITS_WEIGHTS, "v2Pro", scale=16)
    out = tmp_path / "fixed.pth"
    res = gsv("repair", src, "-o", out, "--header", "plain")
    assert res.returncode == 0, res.stderr
    changes = [ln for ln in res.stdout.splitlines() if ln.startswith("change")]
    assert changes and all("HParams" in c for c in changes), changes
    assert "config.model.version is already 'v2Pro'" in " ".join(res.stdout.split())
    d = torch.load(out, weights_only=True)
    assert d["config"]["model"]["version"] == "v2Pro" and out.read_bytes()[:2] == b"PK"


def test_scan_shows_bracketed_names_and_the_base_rule_as_text(sovits_pair, tmp_path):
    """Rich read file names and the relation as markup: a folder named ``[/x]`` stopped `scan` with
    "internal error: MarkupError" (exit 4), and the relation's rule (``[keys]``) silently vanished from
    every table although the README (and --markdown) show it."""
    import shutil

    root, pre, ft = sovits_pair
    tree = tmp_path / "tree"
    (tree / "pretrained_models").mkdir(parents=True)
    shutil.copy(pre, tree / "pretrained_models" / pre.name)
    odd = tree / "logs" / "[/x]" / "logs_s2_v2"
    odd.mkdir(parents=True)
    shutil.copy(ft, odd / "G_[b]8.pth")
    for argv in (("scan", tree), ("scan", tree, "--drift")):
        res = gsv(*argv)
        assert res.returncode == 0, res.stderr
        assert "logs/[/x]/logs_s2_v2/G_[b]8.pth" in res.stdout
    rel = next(ln for ln in res.stdout.splitlines() if "G_[b]8.pth" in ln and "base " in ln)
    assert f"base {pre.name} [keys]" in rel


def test_diff_of_a_ddp_pair_names_the_option_that_lines_it_up(tmp_path):
    """The README's second pair (pretrained G vs a DDP ``G_*.pth``): a plain `diff` printed 0 matched,
    then 1,552 missing/unexpected rows, without naming --suggest or `rules suggest`."""
    from gsvinspect import synth

    pre, ft = synth.write_pair(tmp_path, "sovits-G-ddp", "v2", scale=16)
    res = gsv("diff", pre, ft, "--no-stats")
    assert res.returncode == 1
    head = res.stdout[:res.stdout.find("findings")]
    assert "hint: the suggested rules (strip_prefix 'module.') pair up 776 of 776" in " ".join(head.split())
    assert "--suggest" in head and "gsvinspect rules suggest PRE FT > rules.toml" in " ".join(head.split())
    assert "**hint:**" in gsv("diff", pre, ft, "--no-stats", "--markdown").stdout
    ok = gsv("diff", pre, ft, "--no-stats", "--suggest")
    assert ok.returncode == 0 and "hint:" not in ok.stdout


def test_a_folder_where_a_file_is_expected_names_scan(tmp_path):
    """`gsvinspect info logs/exp/` said only "is a directory, not a checkpoint file"; the command that
    reads a folder of checkpoints is `scan`."""
    res = gsv("info", tmp_path)
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1
    assert f"{tmp_path}: is a directory" in res.stderr and "gsvinspect scan DIR" in res.stderr


def test_diff_and_check_name_an_identical_net_as_info_does(tmp_path):
    """`info` says "v2Pro or v2ProPlus: identical nets" for a pretrained D of that family; the header of
    `diff` and `check` named one of them ("sovits-d-pretrained, v2Pro")."""
    import json

    from gsvinspect import synth

    pre, ft = synth.write_pair(tmp_path, "sovits-D", "v2Pro", scale=16)
    assert "v2Pro or v2ProPlus: identical nets" in gsv("info", pre).stdout
    head = gsv("diff", pre, ft, "--no-stats").stdout.splitlines()[0]
    assert "(sovits-d-pretrained, v2Pro or v2ProPlus, 147 keys" in head, head
    assert "v2Pro or v2ProPlus" in gsv("check", pre).stdout.splitlines()[0]
    d = json.loads(gsv("diff", pre, ft, "--no-stats", "--json").stdout)
    assert d["pretrained"]["version"] == "v2Pro" and d["pretrained"]["version_fits"] == ["v2Pro", "v2ProPlus"]


def test_alpha_beside_an_alpha_table_with_a_default_is_refused_not_ignored(sovits_pair, tmp_path):
    """`diff`/`export --rules R --alpha 0.5` where R's [alpha] table has `default = 0.7`: the 0.5 was
    silently ignored (the plan and the preview used 0.7 everywhere), exit 0."""
    _, pre, ft = sovits_pair
    rules = tmp_path / "r.toml"
    rules.write_text('[alpha]\ndefault = 0.7\n"enc_p.text_embedding" = 0.3\n')
    for argv in (("diff", pre, ft), ("export", pre, ft, "-o", tmp_path / "o.pth")):
        res = gsv(*argv, "--rules", rules, "--alpha", "0.5")
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "--alpha 0.5 would never be used" in res.stderr and "default = 0.7" in res.stderr
    assert not (tmp_path / "o.pth").exists()
    rules.write_text('[alpha]\n"enc_p.text_embedding" = 0.3\n')       # no default: --alpha sets the rest
    res = gsv("export", pre, ft, "-o", tmp_path / "o.pth", "--rules", rules, "--alpha", "0.5", "--dry-run")
    assert res.returncode == 0 and "alpha 0.3 x1, 0.5 x775" in res.stdout
