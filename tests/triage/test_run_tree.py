"""The generated run tree checked with plain torch.load (not our loader): containers, epoch fields,
exports equal to their training checkpoint cast to fp16, only the trained language's rows moved."""

from __future__ import annotations

import io
import sys
import types

import pytest

torch = pytest.importorskip("torch")


class _HParams:
    """Stands in for GPT-SoVITS's utils.HParams while unpickling."""


@pytest.fixture
def utils_stub(monkeypatch):
    mod = types.ModuleType("utils")
    mod.HParams = _HParams
    monkeypatch.setitem(sys.modules, "utils", mod)


def _same_bits(a, b) -> bool:
    """Equal bit for bit (NaN included, unlike torch.equal)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int16), b.view(torch.int16))


def _load(path):
    data = path.read_bytes()
    return data[:2], torch.load(io.BytesIO(b"PK" + data[2:]), map_location="cpu", weights_only=False)


def test_run_tree_reads_back_with_torch_load(run_tree, utils_stub):
    from gsvinspect.synth import symbol_rows

    _, base = _load(run_tree.pretrained["sovits-G"])
    table = "enc_p.text_embedding.weight"
    en = symbol_rows(run_tree.version, "en")
    others = [r for r in range(base["weight"][table].shape[0]) if r not in set(en)]
    for i, e in enumerate(run_tree.epochs):
        head, lightning = _load(run_tree.training["gpt"][i])
        assert head == b"PK" and lightning["epoch"] == e - 1 and "MixedPrecision" in lightning
        _, g = _load(run_tree.training["sovits-G"][i])
        assert g["iteration"] == e and set(g) == {"model", "iteration", "optimizer", "learning_rate"}
        _, ex = _load(run_tree.exports["sovits-G"][i])
        assert ex["info"] == f"{e}epoch_{run_tree.steps['sovits-G'][i]}iteration"
        assert not any(k.startswith("enc_q.") for k in ex["weight"])
        for k, v in ex["weight"].items():          # the export is the training weights cast to fp16
            assert _same_bits(v, g["model"][k].half()), k
        _, gx = _load(run_tree.exports["gpt"][i])
        assert gx["info"] == f"GPT-e{e}"
        assert all(_same_bits(v, lightning["state_dict"][k].half()) for k, v in gx["weight"].items())
        start = base["weight"][table].float()
        moved = g["model"][table]
        assert torch.equal(moved[others], start[others])                 # other languages: untouched
        assert not torch.equal(moved[en], start[en])
