"""One identity for every file: detection, `check`'s key set, the findings and the exporter agree.

Table-driven over every layout and version the synthetic generator writes (real `torch.save`
files, scaled down), plus wrapper-prefixed key sets. The expected answers are written out here from
FORMATS.md (which nets are identical across versions), not computed by the code under test.
"""

from __future__ import annotations

import pytest

from gsvinspect import synth
from gsvinspect.align.check import auto_check_name
from gsvinspect.align.knowledge import diagnose
from gsvinspect.align.alignment import align
from gsvinspect.export.layouts import manifest_name_for, model_kind as export_kind
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.load.identity import identify, model_kind, strip_wrapper, wrapper_prefix
from gsvinspect.load.manifest import expected_weights
from gsvinspect.meta import Layout

GPT_FAMILY = ("v2", "v3", "v4", "v2Pro", "v2ProPlus")

# layout -> kind
KIND = {Layout.GPT_PRETRAINED: "gpt", Layout.GPT_LIGHTNING: "gpt", Layout.GPT_WEIGHTS: "gpt",
        Layout.SOVITS_D_PRETRAINED: "sovits-D", Layout.SOVITS_D_TRAIN: "sovits-D",
        Layout.SOVITS_G_LORA_TRAIN: "sovits-G-lora", Layout.SOVITS_WEIGHTS_LORA: "sovits-G-lora",
        Layout.VOCODER: "vocoder"}
# layouts whose files name their version (config model.version / info / header) as written
MARKED = {Layout.GPT_LIGHTNING, Layout.GPT_WEIGHTS, Layout.SOVITS_G_PRETRAINED, Layout.SOVITS_WEIGHTS,
          Layout.SOVITS_WEIGHTS_LORA, Layout.VOCODER}


def expected(layout: Layout, v: str) -> tuple[str, str, tuple[str, ...], str]:
    """(kind, version, fits, manifest) for a file the generator wrote as `layout` at `v`."""
    kind = KIND.get(layout, "sovits-G")
    if layout in MARKED or kind == "sovits-G" and v in ("v1", "v2", "v2Pro", "v2ProPlus"):
        version, fits = v, (v,)
    elif kind == "gpt":
        version, fits = ("v1", ("v1",)) if v == "v1" else ("v2", GPT_FAMILY)
    elif kind == "sovits-D":
        version, fits = ("v2Pro", ("v2Pro", "v2ProPlus")) if "Pro" in v else ("v2", ("v1", "v2"))
    else:  # SynthesizerTrnV3 with nothing saying v4
        version, fits = "v3", ("v3", "v4")
    manifest = {"gpt": f"gpt-{version}", "sovits-D": f"sovits-D-{version}", "vocoder": "vocoder-v4",
                "sovits-G": f"sovits-G-{version}"}.get(kind)
    if kind == "sovits-G-lora":
        manifest = f"sovits-G-{version}-lora" + ("-export" if layout is Layout.SOVITS_WEIGHTS_LORA else "")
    return kind, version, fits, manifest


CASES = [(lay, v) for lay in Layout for v in synth.layout_versions(lay)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity")
    cache = {}

    def get(lay: Layout, v: str):
        if (lay, v) not in cache:
            cache[(lay, v)] = synth.write_checkpoint(root / f"{lay.value}-{v}.pth", lay, v, scale=16)
        return cache[(lay, v)]

    return get


@pytest.mark.parametrize("lay,v", CASES, ids=[f"{lay.value}-{v}" for lay, v in CASES])
def test_every_layout_and_version_has_one_identity(written, lay, v):
    kind, version, fits, manifest = expected(lay, v)
    with open_checkpoint(written(lay, v)) as ck:
        ident = identify(ck)
        assert (ident.kind, ident.version, ident.fits, ident.manifest) == (kind, version, fits, manifest)
        assert ident.wrapper == ""
        # the three former guessers now give the same answer
        assert auto_check_name(ck) == manifest
        ek = export_kind(ck)
        assert ek == {"gpt": "gpt", "sovits-D": "sovits-d", "vocoder": "unknown"}.get(kind, "sovits-g")
        if kind in ("gpt", "sovits-D") or (kind == "sovits-G" and lay is not Layout.SOVITS_WEIGHTS):
            assert manifest_name_for(ek, version, "pretrained", False) == manifest


def test_identical_nets_are_said_as_such(written):
    with open_checkpoint(written(Layout.SOVITS_D_PRETRAINED, "v1")) as ck:
        assert identify(ck).version_text == "v1 or v2: identical nets"
    with open_checkpoint(written(Layout.SOVITS_D_TRAIN, "v2ProPlus")) as ck:
        assert identify(ck).version_text == "v2Pro or v2ProPlus: identical nets"
    with open_checkpoint(written(Layout.SOVITS_G_PRETRAINED, "v2")) as ck:
        assert identify(ck).version_text == "v2"


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "net_g.", "generator.", "module._orig_mod."])
@pytest.mark.parametrize("name,kind", [("sovits-G-v2", "sovits-G"), ("gpt-v2", "gpt"), ("sovits-D-v1", "sovits-D"),
                                       ("sovits-G-v4-lora", "sovits-G-lora"), ("vocoder-v4", "vocoder")])
def test_wrappers_are_one_stack_everywhere(prefix, name, kind):
    keys = list(expected_weights(name))
    wrapped = [prefix + k for k in keys]
    assert wrapper_prefix(wrapped) == prefix and strip_wrapper(wrapped) == keys
    assert model_kind(wrapped) == model_kind(keys) == kind


def test_gpt_without_model_prefix_is_still_a_gpt_for_the_findings():
    """Detection refuses a GPT layout without 'model.', but the findings must still say why."""
    keys = {k[len("model."):]: t._replace(key=k[len("model."):]) for k, t in expected_weights("gpt-v2").items()}
    assert model_kind(list(keys)) == "gpt"
    found = diagnose(None, None, align(expected_weights("gpt-v2"), keys))
    assert "gpt-no-model-prefix" in [f.code for f in found]


def test_wrapper_finding_names_the_whole_stack():
    keys = {"module._orig_mod." + k: t for k, t in expected_weights("sovits-G-v2").items()}
    found = [f for f in diagnose(None, None, align(expected_weights("sovits-G-v2"), keys))
             if f.code == "wrapper-prefix"]
    assert len(found) == 1 and "'module._orig_mod.'" in found[0].message
    assert "DistributedDataParallel, torch.compile" in found[0].message


@pytest.mark.parametrize("lay,v,folder,want", [
    (Layout.GPT_PRETRAINED, "v4", "logs_s1_v4", "v4"),
    (Layout.GPT_PRETRAINED, "v2Pro", "GPT_weights_v2Pro", "v2Pro"),
    (Layout.SOVITS_D_TRAIN, "v1", "logs_s2_v1", "v1"),
    (Layout.SOVITS_D_TRAIN, "v2ProPlus", "logs_s2_v2ProPlus", "v2ProPlus"),
    (Layout.SOVITS_D_PRETRAINED, "v1", "gsv-v1", "v1"),
    (Layout.GPT_PRETRAINED, "v1", "logs_s1_v3", "v1"),     # a folder naming another net decides nothing
])
def test_a_run_folder_picks_the_sibling_of_an_identical_net(tmp_path, lay, v, folder, want):
    """Nothing in these files names a version; GPT-SoVITS's per-version folder names pick one of the
    versions sharing the net, and only one of those."""
    path = tmp_path / folder / "x.pth"
    path.parent.mkdir()
    synth.write_checkpoint(path, lay, v, scale=16)
    with open_checkpoint(path) as ck:
        assert (ck.version, identify(ck).fits) == (want, (want,))
        assert not [e for e in ck.evidence if "CONFLICT" in e]
