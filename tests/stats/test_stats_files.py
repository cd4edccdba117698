"""End to end on real files: torch.save / gsvinspect.synth writers -> open_checkpoint -> align -> stats -> report."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from rich.console import Console

from gsvinspect.stats import files as stats_files
from gsvinspect.report import stats as stats_report
from gsvinspect import synth
from gsvinspect.align.alignment import align
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import CheckpointError
from gsvinspect.stats.rollup import embedding_keys, embedding_rows, rollup, top_modules
from gsvinspect.stats.spectrum import spectrum
from gsvinspect.stats.engine import compute_stats
from helpers_stats import DEVICES, engine_device



def _torch_ref(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    d = b - a
    return {"norm_pre": a.norm().item(), "norm_ft": b.norm().item(), "norm_diff": d.norm().item(),
            "rel_change": (d.norm() / a.norm()).item(), "cosine": torch.nn.functional.cosine_similarity(a, b, 0).item(),
            "max_abs_diff": d.abs().max().item(), "changed_frac": (a != b).double().mean().item()}


@pytest.mark.parametrize("device", DEVICES)
def test_torch_saved_files_mixed_dtypes(tmp_path, device, monkeypatch):
    device = engine_device(device, monkeypatch)
    g = torch.Generator().manual_seed(0)
    pre = {"model.a.weight": torch.randn(300, 200, generator=g).half(),
           "model.a.bias": torch.randn(200, generator=g).half(),
           "model.b.weight": torch.randn(64, 64, 3, generator=g).to(torch.bfloat16),
           "model.t": torch.randn(50, 40, generator=g).t(),          # non-contiguous storage
           "model.gone": torch.randn(7, generator=g)}
    ft = {k: (v.float() + 0.01 * torch.randn(v.shape, generator=g)) for k, v in pre.items() if k != "model.gone"}
    ft["model.b.weight"] = ft["model.b.weight"].to(torch.bfloat16)
    ft["model.new"] = torch.randn(5, generator=g).half()
    torch.save({"weight": pre, "config": {"x": 1}}, tmp_path / "pre.ckpt")
    torch.save({"state_dict": ft}, tmp_path / "ft.ckpt")
    with open_checkpoint(tmp_path / "pre.ckpt") as pc, open_checkpoint(tmp_path / "ft.ckpt") as fc:
        al = align(pc.weights, fc.weights)
        res = compute_stats(pc, fc, al.triples(), device=device, chunk_elems=1 << 14)
    assert set(res.per_key) == set(pre) | {"model.new"}
    for k in ("model.a.weight", "model.a.bias", "model.b.weight", "model.t"):
        ts = res.per_key[k]
        for name, v in _torch_ref(pre[k], ft[k]).items():
            assert getattr(ts, name) == pytest.approx(v, rel=1e-5, abs=1e-9), (k, name)
    assert res.per_key["model.gone"].norm_ft is None
    assert res.per_key["model.new"].norm_ft == pytest.approx(ft["model.new"].double().norm().item(), rel=1e-6)
    assert res.bytes_read == res.bytes_total > 0


@pytest.fixture(scope="module")
def sovits_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return synth.write_pair(d, "sovits-G", "v2", scale=8, strength=0.01)


@pytest.mark.parametrize("device", DEVICES)
def test_synth_sovits_pair_end_to_end(sovits_pair, device, monkeypatch):
    device = engine_device(device, monkeypatch)
    pre_p, ft_p = sovits_pair
    with open_checkpoint(pre_p) as pc, open_checkpoint(ft_p) as fc:
        al = align(pc.weights, fc.weights)
        res = compute_stats(pc, fc, al.triples(), device=device)
        sd_pre = {k: pc.tensor(k).clone() for k in pc.weights}
        sd_ft = {k: fc.tensor(k).clone() for k in fc.weights}
        emb = embedding_keys(res.per_key)
        assert emb == ["enc_p.text_embedding.weight"]
        rc = embedding_rows(pc, fc, emb[0], emb[0])
        sp = spectrum(pc, fc, "enc_p.encoder_ssl.attn_layers.0.conv_q.weight",
                      "enc_p.encoder_ssl.attn_layers.0.conv_q.weight", device="cpu")
    paired = [ts for ts in res.per_key.values() if ts.paired]
    assert len(paired) == len(pc.weights) > 700
    for ts in paired[::37]:
        a, b = sd_pre[ts.pre_key], sd_ft[ts.ft_key]
        if not a.is_floating_point() or a.numel() == 0:
            continue
        ref = _torch_ref(a, b)
        assert ts.norm_diff == pytest.approx(ref["norm_diff"], rel=1e-5, abs=1e-12), ts.target
        assert ts.norm_pre == pytest.approx(ref["norm_pre"], rel=1e-5, abs=1e-12), ts.target
    mods = rollup(res)
    assert {"enc_p", "dec", "flow", "enc_q"} <= {m.prefix for m in top_modules(mods, 50, depth=1)}
    assert 0.003 < mods[""].rel_change < 0.03          # every tensor moved ~1% of its rms
    assert rc.symbol_set == "v2" and len(rc.rows) == 732 and rc.by_language["yue"].moved > 0
    assert sp.shape[0] == sp.shape[1] and sp.effective_rank > 1

    doc = stats_report.report_dict(res, mods, top=5, depth=1, embeddings=[rc], spectra=[sp])
    text = json.dumps(doc, allow_nan=False)
    assert len(doc["top_tensors"]) == 5 and len(doc["top_modules"]) <= 5 and '"yue"' in text
    md = stats_report.to_markdown(res, mods, top=5, embeddings=[rc], spectra=[sp])
    assert "### Most-changed tensors (top 5 by share" in md and "| language |" in md and "Spectrum" in md
    md_langs = [ln.split("|")[1].strip() for ln in md.split("| language |")[1].splitlines()[2:] if ln.startswith("|")]
    assert md_langs[0] == max(rc.by_language.values(), key=lambda s: s.rel_change).language   # as the text table
    con = Console(record=True, width=200)
    stats_report.print_report(con, res, mods, top=5, embeddings=[rc], spectra=[sp])
    out = con.export_text()
    assert "Most-changed modules" in out and doc["top_tensors"][0]["target"] in out and "yue" in out


def test_report_handles_non_finite_values_and_health(tmp_path):
    pre = {"a": torch.tensor([1.0, float("nan"), 3.0]), "b": torch.tensor([0.0, 0.0]),
           "c": torch.tensor([1e5, 2.0])}
    ft = {"a": torch.tensor([1.0, 2.0, float("inf")]), "b": torch.tensor([1.0, 0.0]), "c": torch.tensor([1e5, 2.0])}
    torch.save(pre, tmp_path / "p.pt")
    torch.save(ft, tmp_path / "f.pt")
    with open_checkpoint(tmp_path / "p.pt") as pc, open_checkpoint(tmp_path / "f.pt") as fc:
        res = compute_stats(pc, fc, [(k, k, k) for k in pre], device="cpu")
    assert res.per_key["b"].rel_change == math.inf
    doc = stats_report.report_dict(res)
    json.dumps(doc, allow_nan=False)
    health = {d["target"]: d for d in doc["health"]}
    assert set(health) == {"a", "c"}
    assert health["a"]["nan_pre"] == 1 and health["a"]["inf_ft"] == 1 and health["c"]["overflow16_pre"] == 1
    assert doc["top_tensors"][0]["target"] == "b" and doc["top_tensors"][0]["rel_change"] == "inf"
    con = Console(record=True, width=160)
    stats_report.print_report(con, res, top=3)
    assert "Health" in con.export_text()
    md = stats_report.to_markdown(res, top=3)
    assert "### Health" in md and "`a`" in md


def _big_pair(tmp_path):
    """fp16 and fp32 weights big enough to be read block by block (>= _SMALL elements each)."""
    g = torch.Generator().manual_seed(3)
    pre = {"w16": torch.randn(300_000, generator=g).half(), "w32": torch.randn(70_000, 3, generator=g),
           "wbf": torch.randn(200_001, generator=g).to(torch.bfloat16)}
    ft = {k: (v.float() + 0.01 * torch.randn(v.shape, generator=g)).to(v.dtype) for k, v in pre.items()}
    torch.save(pre, tmp_path / "pre.pth")
    torch.save(ft, tmp_path / "ft.pth")
    return pre, ft


def _fields(ts):
    return (ts.sumsq_pre, ts.sumsq_ft, ts.sumsq_diff, ts.max_abs_diff, ts.changed, ts.nan_pre, ts.inf_ft)


@pytest.mark.parametrize("device", DEVICES)
def test_pread_and_mapping_give_identical_results(tmp_path, device, monkeypatch):
    """Big tensors are read with pread from a second fd of the same file; the mapping is the
    fallback. Both read the same bytes, so every sum is bit-identical, and pread was really used."""
    device = engine_device(device, monkeypatch)
    pre, ft = _big_pair(tmp_path)
    log = tmp_path / "reads"          # appended to by the worker processes too
    block = stats_files._Src.block

    def counting(self, i, j, raw):
        with open(log, "a") as fh:
            fh.write("P" if self.fd is not None else "M")
        return block(self, i, j, raw)

    def reads():
        text = log.read_text() if log.exists() else ""
        log.unlink(missing_ok=True)
        return text

    monkeypatch.setattr(stats_files._Src, "block", counting)
    with open_checkpoint(tmp_path / "pre.pth") as pc, open_checkpoint(tmp_path / "ft.pth") as fc:
        tr = [(k, k, k) for k in pre]
        by_pread = compute_stats(pc, fc, tr, device=device, chunk_elems=1 << 17)
        assert set(reads()) == {"P"}
        monkeypatch.setattr(stats_files._Files, "_open", staticmethod(lambda ck: None))
        by_map = compute_stats(pc, fc, tr, device=device, chunk_elems=1 << 17)
        assert "P" not in reads()
    for k in pre:
        assert _fields(by_pread.per_key[k]) == _fields(by_map.per_key[k])
        want = _torch_ref(pre[k], ft[k])
        assert by_pread.per_key[k].norm_diff == pytest.approx(want["norm_diff"], rel=1e-5)


def test_a_file_replaced_after_open_is_still_read_as_opened(tmp_path):
    """The path now names another file: the engine reads the mapping of the file that was opened."""
    pre, ft = _big_pair(tmp_path)
    with open_checkpoint(tmp_path / "pre.pth") as pc, open_checkpoint(tmp_path / "ft.pth") as fc:
        tr = [(k, k, k) for k in pre]
        before = compute_stats(pc, fc, tr, device="cpu")
        torch.save({k: v * 3 for k, v in pre.items()}, tmp_path / "other.pth")
        os.replace(tmp_path / "other.pth", tmp_path / "pre.pth")
        after = compute_stats(pc, fc, tr, device="cpu")
    for k in pre:
        assert _fields(after.per_key[k]) == _fields(before.per_key[k])


@pytest.mark.parametrize("device", ["cpu", "cpu-forked"])
def test_a_file_truncated_after_open_is_a_clean_error(tmp_path, device, monkeypatch):
    """Truncated under our feet (same file): a one-line CheckpointError naming it, not a SIGBUS."""
    device = engine_device(device, monkeypatch)
    pre, _ = _big_pair(tmp_path)
    with open_checkpoint(tmp_path / "pre.pth") as pc, open_checkpoint(tmp_path / "ft.pth") as fc:
        os.truncate(tmp_path / "ft.pth", pc.size // 3)
        with pytest.raises(CheckpointError, match=r"ft\.pth: file shrank since it was opened"):
            compute_stats(pc, fc, [(k, k, k) for k in pre], device=device)
