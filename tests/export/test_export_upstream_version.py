"""The emulation of GPT-SoVITS's version detection: hash, then header, then the two size ladders.

Sizes are tested on sparse files (a zip signature, then a hole up to the exact size), so the
boundary cases cost no disk space.
"""

from __future__ import annotations

import hashlib

import pytest

from gsvinspect.export import upstream_version as uv

KIB, MIB = 1024, 1024 * 1024


def _sparse(path, size: int, head: bytes = b"PK\x03\x04") -> str:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return str(path)


@pytest.mark.parametrize("size, want", [
    (82978 * KIB - 1, ("v1", "v1", False)),
    (82978 * KIB, ("v2", "v2", False)),
    (700 * MIB - 1, ("v2", "v2", False)),
    (700 * MIB, ("v2", "v3", False)),
])
def test_fast_size_ladder_boundaries(tmp_path, size, want):
    got, step = uv.fast_version(_sparse(tmp_path / "f.pth", size))
    assert step == "size"
    assert got == want


@pytest.mark.parametrize("size, want", [
    (82978 * KIB - 1, "v1"), (82978 * KIB, "v2"), (100 * MIB - 1, "v2"), (100 * MIB, "v1"),
    (103520 * KIB - 1, "v1"), (103520 * KIB, "v2"), (700 * MIB - 1, "v2"), (700 * MIB, "v3"),
])
def test_semantic_ladder_boundaries(size, want):
    assert uv.semantic_version(size) == want


def test_measured_v2_base_is_misread_by_semantic_ladder():
    # FORMATS §2.3: a reconstructed fp16 v2 base G of 106,004,449 B is 31 B short of the v2 class
    assert uv.semantic_version(106_004_449) == "v1"
    assert uv.V2_BASE_G_MIN == 106_004_480


@pytest.mark.parametrize("head, want", sorted(uv.HEAD2VERSION.items()))
def test_header_table(tmp_path, head, want):
    p = _sparse(tmp_path / "h.pth", 5000, head + b"\x03\x04")
    got, step = uv.fast_version(p)
    assert (got, step) == (want, "header")


def test_unknown_header_raises_keyerror_like_upstream(tmp_path):
    p = _sparse(tmp_path / "x.pth", 100, b"\x80\x02")
    with pytest.raises(KeyError):
        uv.fast_version(p)


def test_hash_wins_over_header(tmp_path, monkeypatch):
    p = _sparse(tmp_path / "official.pth", 20000, b"05\x03\x04")
    with open(p, "rb") as f:
        digest = hashlib.md5(f.read(8192)).hexdigest()
    monkeypatch.setitem(uv.HASH_PRETRAINED, digest, ("v2", "v4", False))
    assert uv.fast_version(p) == (("v2", "v4", False), "hash")


def test_classify_v2_base_below_threshold_is_wrong(tmp_path):
    p = _sparse(tmp_path / "g.pth", uv.V2_BASE_G_MIN - 1)
    v = uv.classify_sovits_g(p, "v2", base=True, text_embedding_rows=732)
    assert not v.ok
    assert v.semantic == "v1"
    assert any("3-get-semantic" in n for n in v.notes)
    v2 = uv.classify_sovits_g(_sparse(tmp_path / "g2.pth", uv.V2_BASE_G_MIN), "v2", base=True,
                              text_embedding_rows=732)
    assert v2.ok, v2.notes


def test_classify_v1_base_range(tmp_path):
    lo, hi = uv.V1_BASE_G_RANGE
    ok = uv.classify_sovits_g(_sparse(tmp_path / "a.pth", lo), "v1", base=True, text_embedding_rows=322)
    assert ok.ok and ok.semantic == "v1" and ok.symbols == "v1"
    bad = uv.classify_sovits_g(_sparse(tmp_path / "b.pth", hi), "v1", base=True, text_embedding_rows=322)
    assert not bad.ok


def test_classify_symbols_from_embedding_rows(tmp_path):
    p = _sparse(tmp_path / "e.pth", 84_000_000)
    v = uv.classify_sovits_g(p, "v1", base=False, text_embedding_rows=732)
    assert not v.ok and v.symbols == "v2"


def test_classify_lora_header(tmp_path):
    p = _sparse(tmp_path / "l.pth", 75_550_459, b"04\x03\x04")
    v = uv.classify_sovits_g(p, "v4", base=False, text_embedding_rows=None, lora=True)
    assert v.ok and v.fast == ("v2", "v4", True) and v.fast_step == "header"
    wrong = uv.classify_sovits_g(p, "v3", base=False, text_embedding_rows=None, lora=True)
    assert not wrong.ok


def test_classify_gpt_vocab_must_match_embedding():
    cfg = {"model": {"phoneme_vocab_size": 732}, "data": {"max_sec": 54}}
    assert uv.classify_gpt(cfg, 732, "v2").ok
    assert not uv.classify_gpt(cfg, 512, "v2").ok
    v = uv.classify_gpt({"model": {"phoneme_vocab_size": 512}}, 732, "v2")
    assert not v.ok and any("phoneme_vocab_size" in n for n in v.notes)
