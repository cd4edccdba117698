"""Full-size (scale 1, ~106 MB) v1/v2 base G files against GPT-SoVITS's size-based version detection.

FORMATS §2.3: dataset preparation (3-get-semantic.py) reads the version of pretrained_s2G from its
size alone; a v2 base G must be >= 106,004,480 B and a v1 base G in [100 MiB, 106,004,480 B). The
exporter pads `info` when a file would fall short, and refuses when padding cannot help.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from gsvinspect import synth
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import ExportError
from gsvinspect.export.build import PADDING_NOTE
from gsvinspect.export.plan import plan_export
from gsvinspect.export.writer import run_export
from gsvinspect.export.upstream_version import V1_BASE_G_RANGE, V2_BASE_G_MIN, fast_version, semantic_version

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    # the SoVITS_weights export as fine-tuned side: smallest full-size input, and enc_q gets filled
    return {v: synth.write_pair(root / v, "sovits-G-export", v, scale=1) for v in ("v1", "v2")}


@contextmanager
def _plan(pair, **kw):
    with open_checkpoint(pair[0]) as pre, open_checkpoint(pair[1]) as ft:
        yield plan_export(pre, ft, **kw)


def test_v2_base_lands_in_the_v2_size_class(full_pairs, tmp_path):
    with _plan(full_pairs["v2"]) as plan:
        assert plan.full_size and plan.size_rule == (V2_BASE_G_MIN, 700 * 1024 * 1024)
        out = tmp_path / "s2G_new.pth"
        rep = run_export(plan, out)
    size = out.stat().st_size
    assert size >= V2_BASE_G_MIN and semantic_version(size) == "v2"
    assert fast_version(out) == (("v2", "v2", False), "size")
    assert rep.verdict.ok and rep.verdict.semantic == "v2" and rep.verdict.symbols == "v2"
    assert rep.manifest_check["shapes_checked"] and not rep.manifest_check["shape_mismatch"]
    assert len(dict(plan.filled())) == 103  # enc_q from the pretrained file


def test_v2_base_padded_when_short(full_pairs, tmp_path):
    """Force the padding path at full size: demand 3,000 B more than the natural size."""
    from gsvinspect.export import torch_writer
    from gsvinspect.export.build import build_object
    from gsvinspect.export.mixing import compute_tensor as _compute

    with _plan(full_pairs["v2"]) as plan:
        natural = torch_writer.saved_size(build_object(plan, {t.key: _compute(plan, t) for t in plan.tensors},
                                                       plan.info))
        plan.size_rule = (natural + 3000, plan.size_rule[1])
        rep = run_export(plan, tmp_path / "padded.pth")
    assert rep.padded >= 3000 - 64 and rep.size >= natural + 3000
    info = torch.load(tmp_path / "padded.pth", weights_only=True)["info"]
    assert PADDING_NOTE in info and info.startswith(plan.info)
    assert rep.verdict.ok


def test_v1_base_lands_in_the_v1_size_class(full_pairs, tmp_path):
    with _plan(full_pairs["v1"]) as plan:
        assert plan.size_rule == V1_BASE_G_RANGE and plan.full_size
        rep = run_export(plan, tmp_path / "s2G_v1.pth")
    lo, hi = V1_BASE_G_RANGE
    assert lo <= rep.size < hi and semantic_version(rep.size) == "v1"
    assert rep.verdict.ok and rep.verdict.symbols == "v1"
    # fp32 would be ~212 MB: read as v2 by dataset preparation, so it is refused up front
    with _plan(full_pairs["v1"], dtype="float") as plan32:
        assert not plan32.ok and any("--dtype half" in p for p in plan32.problems)
        with pytest.raises(ExportError):
            run_export(plan32, tmp_path / "v1_fp32.pth")
    assert not (tmp_path / "v1_fp32.pth").exists()
