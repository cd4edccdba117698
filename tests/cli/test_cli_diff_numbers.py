"""`gsvinspect diff` numbers from the user's seat (issue 13, points 7-12), as subprocess runs.

The pair is written in upstream's containers (fp16 pretrained G, fp32 ``G_*.pth`` training
checkpoint: every key differs only in dtype, the normal case) with the pretrained side's
zero-initialised tensors at zero, as in the official s2G2333k.pth.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys

import pytest

from helpers_stats import zero_init_sovits_pair

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("numbers")
    pre, ft, zero = zero_init_sovits_pair(root)
    return pre, ft, zero, root


def run(*argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    res = subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, argv)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def test_plain_diff_leads_with_what_matters_and_collapses_dtype_rows(pair):
    pre, ft, zero, _ = pair
    res = run("diff", pre, ft)
    out = res.stdout
    assert res.returncode == 0
    lines = out.splitlines()
    assert len(lines) < 120                                       # was 860+ lines, 776 of them dtype rows
    order = ["fully aligned", "matched: 776 (776 differ only in dtype)", "findings", "where the change went",
             "Most-changed tensors", "Most-changed modules", "Phoneme embedding", "rows moved per language",
             "dtype-differs (776): pair up, differing only in dtype (float16 → float32); --all lists them"]
    pos = [out.find(s) for s in order]
    assert -1 not in pos and pos == sorted(pos), dict(zip(order, pos))
    assert "dtype-differs: 776" not in out and "matched: 0" not in out    # one headline, as the app says it
    res = run("diff", pre, ft, "--all")
    assert re.search(r"^dtype-differs \(776\) *$", res.stdout, re.M) and len(res.stdout.splitlines()) > 776 + len(lines) - 2
    assert "enc_p.ssl_proj.bias" in res.stdout and "enc_p.ssl_proj.bias" not in out


def test_rankings_never_show_inf_and_zero_tensors_sit_where_their_change_puts_them(pair):
    pre, ft, zero, _ = pair
    out = run("diff", pre, ft, "--top", "20").stdout
    table = out[out.find("Most-changed tensors"):out.find("Phoneme embedding")]
    assert not re.search(r"\binf\b", table) and not any(k + " " in table for k in zero)
    assert not re.search(r"flow\.flows\.\d+\.post ", table)
    out = run("diff", pre, ft, "--top", "2000").stdout             # every tensor listed
    assert "from 0" in out and not re.search(r"\binf\b", out)
    row = next(ln for ln in out.splitlines() if ln.split()[1:2] == [zero[0]])
    assert "from 0" in row


def test_one_unit_and_one_shape_format(pair):
    pre, ft, zero, _ = pair
    out = run("diff", pre, ft, "--top", "2000", "--all").stdout
    body = out[out.find("Most-changed tensors"):]
    # every relative change / share / fraction cell is a percentage (or 'from 0'): no bare 5e-03
    for ln in body.splitlines():
        cells = ln.split()
        if len(cells) >= 10 and cells[0].isdigit() and "." in cells[1]:
            share, rel, changed = cells[4], cells[6], cells[-1]
            assert all(c.endswith("%") or c == "from" for c in (share, rel, changed)), ln
    assert not re.search(r"\[\d+, \d+", out) and "24×96×1 float16   24×96×1 float32" in out   # diff listing
    ls = run("ls", pre).stdout
    assert re.search(r"enc_p\.ssl_proj\.weight +24×96×1 ", ls)


def test_json_has_every_pair_and_csv_has_its_columns(pair):
    pre, ft, zero, _ = pair
    d = json.loads(run("diff", pre, ft, "--json", "--top", "3").stdout)
    st = d["stats"]
    assert len(st["top_tensors"]) == 3 and len(st["top_modules"]) == 3
    assert len(st["per_tensor"]) == 776 and all(t["share"] is not None for t in st["per_tensor"])
    assert math.fsum(t["share"] for t in st["per_tensor"]) == pytest.approx(1.0, rel=1e-9)
    assert st["top_tensors"][0] == max(st["per_tensor"], key=lambda t: t["share"])
    res = run("diff", pre, ft, "--csv")
    assert res.returncode == 0
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 776
    by = {t["target"]: t for t in st["per_tensor"]}
    json_cols = set(by[zero[0]]) - {"shape_pre", "shape_ft"}
    assert json_cols <= set(rows[0]) and {"status", "rule", "shape_pre", "shape_ft"} <= set(rows[0])
    for r in rows[:50] + [next(r for r in rows if r["target"] == zero[0])]:
        t = by[r["target"]]
        for col in ("norm_diff", "share", "cosine", "numel"):
            assert float(r[col]) == pytest.approx(float(t[col]), rel=1e-12), (r["target"], col)
        assert r["rel_change"] == str(t["rel_change"]) or float(r["rel_change"]) == pytest.approx(t["rel_change"])
        assert json.loads(r["shape_pre"]) == t["shape_pre"] and r["status"] == "dtype-differs"
    assert next(r for r in rows if r["target"] == zero[0])["rel_change"] == "inf"   # float("inf") in pandas


def test_mixing_preview_matches_the_file_export_writes(pair):
    pre, ft, zero, root = pair
    rules = root / "mix.toml"
    rules.write_text('[alpha]\ndefault = 0.5\n"enc_p.text_embedding" = 0.2\n"dec." = 0.8\n')
    d = json.loads(run("diff", pre, ft, "--rules", rules, "--json").stdout)
    mixed = d["mixed"]
    assert mixed["alphas_used"] == {"0.2": 1, "0.5": 776 - 1 - mixed["alphas_used"]["0.8"], "0.8": mixed["alphas_used"]["0.8"]}
    preview = {t["target"]: t for t in mixed["stats"]["per_tensor"]}
    plain = {t["target"]: t for t in d["stats"]["per_tensor"]}
    emb = "enc_p.text_embedding.weight"
    assert preview[emb]["alpha"] == 0.2 and preview["dec.conv_pre.weight"]["alpha"] == 0.8
    assert preview[emb]["norm_diff"] == pytest.approx(0.2 * plain[emb]["norm_diff"], rel=1e-12)
    out = root / "mixed.pth"
    res = run("export", pre, ft, "--rules", rules, "--dtype", "float", "-o", out)
    assert res.returncode == 0, res.stderr
    written = json.loads(run("diff", pre, out, "--json").stdout)
    actual = {t["target"]: t for t in written["stats"]["per_tensor"]}
    assert set(actual) == set(preview)
    for k, t in actual.items():
        p = preview[k]
        assert t["norm_diff"] == pytest.approx(p["norm_diff"], rel=1e-4, abs=1e-7), k
        if isinstance(t["rel_change"], float) and t["rel_change"] > 1e-5:
            assert t["rel_change"] == pytest.approx(p["rel_change"], rel=1e-4), k
            assert t["one_minus_cos"] == pytest.approx(p["one_minus_cos"], rel=2e-2, abs=1e-9), k
    langs = {x["language"]: x["rel_change"] for x in mixed["stats"]["embeddings"][0]["languages"]}
    real = {x["language"]: x["rel_change"] for x in written["stats"]["embeddings"][0]["languages"]}
    assert langs == pytest.approx(real, rel=1e-4)
    text = run("diff", pre, ft, "--alpha", "0.5").stdout
    assert "mixing preview (--alpha 0.5)" in text and "the statistics below are the mixed result" in text
    for bad in (["--alpha", "1.5"], ["--alpha", "0.5", "--no-stats"]):
        res = run("diff", pre, ft, *bad)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--alpha" in res.stderr, bad


def _sig_digits(cell: str) -> int:
    return len(cell.rstrip("%").replace(".", "").lstrip("0"))


def test_percentages_keep_three_significant_digits(pair):
    """A column never mixes ``1%`` with ``1.00%`` or ``0.5%`` with ``0.502%`` (seen on a full-size
    GPT pair: shares ``1.00%`` and ``1%`` on adjacent rows); the drift table uses the same format."""
    pre, ft, _, root = pair
    out = run("diff", pre, ft, "--top", "2000").stdout
    cells = [c for c in out.split() if re.fullmatch(r"\d+\.?\d*%", c) and 0.001 <= float(c[:-1]) < 100]
    assert len(cells) > 500
    assert all(_sig_digits(c) == 3 for c in cells), sorted({c for c in cells if _sig_digits(c) != 3})
    from gsvinspect.report.numbers import fmt_rel
    from gsvinspect.report.scan import pct
    assert [fmt_rel(x) for x in (0.009996, 0.005, 0.0100004)] == ["1.00%", "0.500%", "1.00%"]
    assert [fmt_rel(x, compact=True) for x in (0.009996, 0.005)] == ["1.0%", "0.50%"]
    assert [pct(x) for x in (0.005, math.inf, None)] == [fmt_rel(0.005), "from 0", "-"]
