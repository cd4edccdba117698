"""One generated run tree for the triage tests (writing it is the slow part: ~5 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def run_tree(tmp_path_factory):
    """v2 run, epochs 2/4/6/8, English rows moving, a jump at epoch 6 and NaN from epoch 8."""
    from gsvinspect.synth import write_run

    return write_run(tmp_path_factory.mktemp("run") / "GPT-SoVITS", "v2", scale=32, nan_at=8, jump_at=6)


@pytest.fixture(scope="session")
def scanned(run_tree):
    from gsvinspect.triage.drift import compute_drift
    from gsvinspect.triage.scan import scan

    result = scan([run_tree.root], keep_open=True)
    drift = compute_drift(result)
    yield result, drift
    result.close()
