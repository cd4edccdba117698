"""Shared pieces of the export tests: one torch thread, synthetic pairs, plan+write from two paths,
file digests.

`one_torch_thread` is an autouse module fixture: import it into a test module to apply it there.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.export.plan import plan_export
from gsvinspect.export.writer import run_export

SCALE = 16  # synthetic files are scaled down 16x unless a test says otherwise


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # tiny tensors: thread hand-off costs more than the work on small CI machines
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pair_factory(tmp_path_factory):
    """`get(kind, version)`: a synthetic (pretrained, fine-tuned) pair at SCALE, written on first use.

    Wrap it in a module fixture (``return pair_factory(tmp_path_factory)``) so a module writes each pair once.
    """
    from gsvinspect import synth

    root = tmp_path_factory.mktemp("pairs")
    cache: dict = {}

    def get(kind: str, version: str):
        if (kind, version) not in cache:
            cache[(kind, version)] = synth.write_pair(root / f"{kind}-{version}", kind, version, scale=SCALE)
        return cache[(kind, version)]

    return get


def try_export(pre_p, ft_p, out, **kw):
    """plan_export + run_export on two files: (plan, report), report None when the plan is refused."""
    with open_checkpoint(pre_p) as pre, open_checkpoint(ft_p) as ft:
        plan = plan_export(pre, ft, **kw)
        if not plan.ok:
            return plan, None
        return plan, run_export(plan, out)


def export_ok(pre_p, ft_p, out, **kw):
    """Like `try_export`, but the plan must be accepted: (plan, report)."""
    plan, report = try_export(pre_p, ft_p, out, **kw)
    assert report is not None, plan.problems
    return plan, report


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
