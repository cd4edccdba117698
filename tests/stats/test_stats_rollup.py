"""Module roll-ups, rankings and labelled phoneme-embedding rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gsvinspect.errors import UsageError
from gsvinspect.stats.rollup import embedding_keys, embedding_rows, rollup, top_modules, top_tensors
from gsvinspect.stats.engine import compute_stats
from gsvinspect.load.symbols import label_rows, languages, symbol_set_for_rows, symbols
from helpers_stats import FakeCk


def _model(rng):
    shapes = {"enc_p.encoder.attn.0.w": (64, 64), "enc_p.encoder.attn.0.b": (64,), "enc_p.proj.w": (32, 64),
              "dec.ups.0.w": (128, 64), "dec.ups.0.b": (128,), "head": (10,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_rollup_sums_squares_and_ranks_modules():
    rng = np.random.default_rng(0)
    pre = _model(rng)
    moves = {"enc_p": 0.001, "dec": 0.1, "head": 0.0}
    ft = {k: v + np.float32(next(s for p, s in moves.items() if k.startswith(p))) *
          rng.standard_normal(v.shape).astype(np.float32) for k, v in pre.items()}
    ft["extra"] = np.ones(3, np.float32)
    pc = FakeCk({k: (v, "float32") for k, v in pre.items()})
    fc = FakeCk({k: (v, "float32") for k, v in ft.items()})
    tr = [(k, k, k) for k in pre] + [("extra", None, "extra")]
    res = compute_stats(pc, fc, tr, device="cpu")
    mods = rollup(res)
    assert {"", "enc_p", "enc_p.encoder", "enc_p.encoder.attn", "enc_p.encoder.attn.0", "enc_p.proj", "dec",
            "dec.ups", "dec.ups.0"} <= set(mods)
    assert "enc_p.proj.w" not in mods            # a tensor is not a module
    for prefix, keys in (("enc_p", [k for k in pre if k.startswith("enc_p.")]), ("", list(pre))):
        p = sum(float(np.sum(pre[k].astype(np.float64) ** 2)) for k in keys)
        d = sum(float(np.sum((ft[k].astype(np.float64) - pre[k]) ** 2)) for k in keys)
        assert mods[prefix].rel_change == pytest.approx(math.sqrt(d / p), rel=1e-6)
        assert mods[prefix].paired == len(keys)
    assert mods[""].tensors == len(pre) + 1 and mods[""].only_ft == 1
    assert mods["enc_p"].depth == 1 and mods["enc_p.encoder.attn.0"].depth == 4
    ranked = top_modules(mods, 3, depth=1)
    assert [m.prefix for m in ranked] == ["dec", "enc_p"]
    assert top_modules(mods, 100)[0].prefix.startswith("dec")
    assert "" not in [m.prefix for m in top_modules(mods, 100)]
    tt = top_tensors(res, 3)
    assert [t.target.split(".")[0] for t in tt] == ["dec", "dec", "enc_p"]
    assert top_tensors(res, None)[-1].target == "head" and top_tensors(res, None)[-1].rel_change == 0.0


def test_symbols_tables_and_labels():
    assert len(symbols("v1")) == 322 and len(symbols("v2")) == 732
    assert symbol_set_for_rows(322) == "v1" and symbol_set_for_rows(732) == "v2"
    assert symbol_set_for_rows(512) == "v1" and symbol_set_for_rows(100) is None
    lab = label_rows(512)
    assert lab[321].language != "unused" and lab[322].language == "unused" and len(lab) == 512
    assert {"zh", "ja", "en", "ko", "yue"} <= set(languages("v2"))
    assert "ko" not in languages("v1")
    assert label_rows(5)[0].language == "unknown"


def _table(n_rows, dim, rng, dtype=np.float16):
    return rng.standard_normal((n_rows, dim)).astype(dtype)


def test_embedding_rows_show_which_languages_moved():
    rng = np.random.default_rng(1)
    pre = _table(732, 48, rng)
    moved = [s.index for s in symbols("v2") if s.language == "en"]
    ft = pre.astype(np.float32)
    ft[moved] += 0.05 * rng.standard_normal((len(moved), 48)).astype(np.float32)
    pc = FakeCk({"enc_p.text_embedding.weight": (pre, "float16")})
    fc = FakeCk({"enc_p.text_embedding.weight": (ft, "float32")})
    rc = embedding_rows(pc, fc, "enc_p.text_embedding.weight", "enc_p.text_embedding.weight")
    assert rc.symbol_set == "v2" and len(rc.rows) == 732
    assert rc.moved_languages() == ["en"]
    en = rc.by_language["en"]
    assert en.moved == en.rows == len(moved) and en.rel_change > 0.01 and len(en.top) == 5
    assert rc.by_language["zh"].moved == 0 and rc.by_language["zh"].rel_change == 0.0
    assert rc.by_language["yue"].changed == 0
    r = rc.rows[moved[0]]
    assert r.symbol == symbols("v2")[moved[0]].symbol and r.language == "en"
    ref = np.linalg.norm(ft[moved[0]] - pre[moved[0]].astype(np.float32)) / np.linalg.norm(pre[moved[0]].astype(np.float64))
    assert r.rel_change == pytest.approx(ref, rel=1e-5)
    assert rc.top(1)[0].language == "en" and rc.rel_changes.shape == (732,)


def test_embedding_rows_pair_by_symbol_across_v1_v2():
    rng = np.random.default_rng(2)
    v1, v2 = symbols("v1"), symbols("v2")
    pos2 = {s.symbol: s.index for s in v2}
    pre = _table(322, 16, rng, np.float32)
    ft = rng.standard_normal((732, 16)).astype(np.float32)
    for s in v1:                       # every v1 symbol keeps its vector in its new row
        ft[pos2[s.symbol]] = pre[s.index]
    pc = FakeCk({"e": (pre, "float32")})
    fc = FakeCk({"e": (ft, "float32")})
    rc = embedding_rows(pc, fc, "e", "e")
    assert len(rc.rows) == 322 and all(r.norm_diff == 0.0 for r in rc.rows)
    assert len(rc.only_ft) == 732 - 322 and not rc.only_pre and "by symbol" in rc.note
    with pytest.raises(UsageError):
        embedding_rows(FakeCk({"e": (pre[:100], "float32")}), fc, "e", "e")


def test_embedding_keys_found_under_prefixes():
    keys = ["model.ar_text_embedding.word_embeddings.weight", "module.enc_p.text_embedding.weight",
            "enc_p.text_embedding.bias", "enc_p.encoder.x"]
    assert embedding_keys(keys) == keys[:2]
