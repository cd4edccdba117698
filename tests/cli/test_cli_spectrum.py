"""`gsvinspect diff --spectrum / --spectrum-top` end to end: subprocess runs on files torch.save wrote."""

from __future__ import annotations

import json
import re

import pytest
from helpers_stats import write_spectrum_pair
from test_cli_diff import ANSI, run_sub

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_spectrum_pair(tmp_path_factory.mktemp("spectrum"))


def diff_json(pair, *argv):
    res = run_sub("diff", *pair, "--json", *argv)
    assert res.returncode == 1, res.stderr       # the pair has missing/unexpected keys: 1, not an error
    return json.loads(res.stdout)


def by_key(d):
    return {s["key"]: s for s in d["spectra"]}


def test_json_tells_a_rank_2_change_from_a_rewrite(pair):
    d = diff_json(pair, "--spectrum", "enc.low.weight", "--spectrum", "enc.full.weight", "--device", "cpu")
    assert d["schema"] == "gsvinspect.diff/1" and d["spectra_notes"] == []
    assert [s["key"] for s in d["spectra"]] == ["enc.low.weight", "enc.full.weight"]
    low, full = by_key(d)["enc.low.weight"], by_key(d)["enc.full.weight"]
    assert low["shape"] == [64, 48] and low["rank90"] == 2 and 1.0 < low["effective_rank"] < 2.0
    assert low["singular_values"][2] < 1e-4 * low["singular_values"][1]    # nothing beyond rank 2
    assert low["energy_top_k"] == pytest.approx(1.0) and low["verdict"].startswith("low-rank (LoRA-like)")
    assert full["rank90"] > 20 and full["effective_rank"] > 48 / 8 and "rewrote" in full["verdict"]
    assert low["method"] == "full" and low["device"] == "cpu"
    stats = {t["target"]: t for t in d["stats"]["top_tensors"]}
    assert low["rel_change"] == pytest.approx(stats["enc.low.weight"]["rel_change"], rel=1e-6)
    assert d["stats"]["spectra"] == d["spectra"]


def test_spectrum_top_takes_the_most_changed_2d_weights(pair):
    d = diff_json(pair, "--spectrum-top", "3")
    # enc.full.bias moved more than enc.full.weight but is 1-D; bad.nan.weight has no finite change
    assert [s["key"] for s in d["spectra"]] == ["enc.low.weight", "enc.full.weight", "enc.conv.weight"]
    assert by_key(d)["enc.conv.weight"]["shape"] == [32, 48]              # conv (out, in, k) -> (out, in*k)
    d = diff_json(pair, "--spectrum", "enc.conv.weight", "--spectrum-top", "2")   # named first, no repeats
    assert [s["key"] for s in d["spectra"]] == ["enc.conv.weight", "enc.low.weight", "enc.full.weight"]


def test_module_prefix_is_capped_to_its_most_changed_and_says_so(pair):
    d = diff_json(pair, "--spectrum", "blocks")
    # ranked like every most-changed list: by ‖Δ‖² (share of the model's change), from the stats
    moved = {t["target"]: t["norm_diff"] for t in d["stats"]["per_tensor"] if t["target"].startswith("blocks.")}
    assert [s["key"] for s in d["spectra"]] == sorted(moved, key=lambda k: -moved[k])[:16]
    assert d["spectra"][0]["key"] == "blocks.17.weight" and "blocks.0.weight" not in [s["key"] for s in d["spectra"]]
    assert d["spectra"][0]["rel_change"] == pytest.approx(0.018, rel=1e-5)
    assert len(d["spectra_notes"]) == 1 and "18 2-D weights" in d["spectra_notes"][0]
    assert "16 most changed" in d["spectra_notes"][0]
    d = diff_json(pair, "--spectrum", "enc.*", "--no-stats")     # small module: all, in file order
    assert d["stats"] is None and d["spectra_notes"] == []
    assert [s["key"] for s in d["spectra"]] == ["enc.low.weight", "enc.full.weight", "enc.conv.weight"]
    d = diff_json(pair, "--spectrum", "blocks", "--no-stats")    # no stats: the first 16
    assert [s["key"] for s in d["spectra"]] == [f"blocks.{i}.weight" for i in range(16)]
    assert "first" in d["spectra_notes"][0]


def test_weight_picked_from_a_module_is_skipped_with_a_note(pair):
    d = diff_json(pair, "--spectrum", "bad", "--spectrum", "enc.low.weight")
    assert [s["key"] for s in d["spectra"]] == ["enc.low.weight"]
    assert d["spectra_notes"] == ["bad.nan.weight: no spectrum: bad.nan.weight holds NaN or Inf; "
                                  "no SVD of a non-finite change"]


def test_markdown_and_plain_text_show_the_spectrum(pair):
    res = run_sub("diff", *pair, "--markdown", "--spectrum", "enc.low.weight", "--spectrum", "blocks")
    assert res.returncode == 1, res.stderr
    md = res.stdout
    assert "## Change spectra" in md and "### Spectrum of Δ `enc.low.weight` 64×48 (full SVD, cpu)" in md
    assert "| rank for 90% of ‖Δ‖² | 2 |" in md and "| verdict | low-rank (LoRA-like)" in md
    assert "- blocks: 18 2-D weights, showing the 16 most changed" in md
    assert md.index("## Weight changes") < md.index("## Change spectra")
    res = run_sub("diff", *pair, "--no-stats", "--spectrum", "enc.full.weight")
    out = res.stdout
    assert res.returncode == 1 and not ANSI.search(out) and not re.search("[│┃━─┏┓┗┛]", out)
    assert "Spectrum of Δ enc.full.weight 64×48 (full SVD, cpu)" in out and "rewrote this layer" in out
    assert re.search(r"rank for 90% of ‖Δ‖²\s+(\d+)", out).group(1) == str(
        by_key(diff_json(pair, "--no-stats", "--spectrum", "enc.full.weight"))["enc.full.weight"]["rank90"])
    assert "Most-changed tensors" not in out


ERRORS = {
    "1-D": (["--spectrum", "enc.full.bias"], "enc.full.bias is 1-D (64); a spectrum needs a 2-D or conv weight"),
    "only-pre": (["--spectrum", "enc.gone.weight"], "enc.gone.weight has no partner: it is only in the pretrained"),
    "only-ft": (["--spectrum", "enc.new.weight"], "enc.new.weight has no partner: it is only in the fine-tuned"),
    "shape": (["--spectrum", "enc.shape.weight"], "enc.shape.weight: shapes differ (8×8 vs 8×4)"),
    "unknown": (["--spectrum", "enc.lo.weight"], "no key or module 'enc.lo.weight' in the aligned pair; "
                                                   "did you mean enc.low.weight"),
    "module-1-D": (["--spectrum", "norm"], "module norm has no paired 2-D weight"),
    "nan": (["--spectrum", "bad.nan.weight"], "bad.nan.weight holds NaN or Inf"),
    "top-no-stats": (["--spectrum-top", "2", "--no-stats"], "--spectrum-top ranks weights by the stats"),
    "top-zero": (["--spectrum-top", "0"], "--spectrum-top needs a positive number"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_spectrum_requests_exit_2_with_one_line(pair, case):
    argv, message = ERRORS[case]
    res = run_sub("diff", *pair, *argv)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("gsvinspect: error: ") and message in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_spectrum_on_cuda_without_cuda_is_a_usage_error(pair):
    res = run_sub("diff", *pair, "--no-stats", "--spectrum", "enc.low.weight", "--device", "cuda")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "CUDA is not available" in res.stderr and "--device cpu" in res.stderr


def test_spectrum_top_leaves_out_matrices_too_narrow_to_tell(pair):
    """The 8x8 blocks moved the most, but an 8-wide change has at most 8 directions: picked for
    the user, they are left out; named, they come with a verdict that says so."""
    d = diff_json(pair, "--spectrum-top", "30")
    assert d["spectra"] and all(min(s["shape"]) >= 16 for s in d["spectra"])
    d = diff_json(pair, "--spectrum", "blocks.17.weight")
    assert d["spectra"][0]["verdict"].startswith("too narrow to tell: a 8×8 change")
