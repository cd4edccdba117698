"""Fuzzing the loader: mutated checkpoints of every layout only ever raise GsvError.

Hypothesis draws the mutation ops (byte flips, truncation, splices, zip-directory field edits,
pickle-opcode mutations, header and safetensors-JSON edits; see fuzz/fuzz_loader.py) and a
worker process opens each case, reads every tensor's first and last element and builds the
`info` summary. A hang (per-case timeout), a dead worker or any non-GsvError fails the case.
The standalone fuzz/fuzz_loader.py runs the same engine for 20,000+ random cases.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
CI_CASES = 520


def _engine():
    spec = importlib.util.spec_from_file_location("gsv_fuzz_loader", REPO / "fuzz" / "fuzz_loader.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


fz = _engine()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return [fz.Seed.load(p) for p in fz.write_seeds(tmp_path_factory.mktemp("fuzzseeds"), all_versions=False)]


@pytest.fixture(scope="module")
def worker():
    w = fz.Worker(case_timeout=20.0)
    yield w
    w.close()


def test_seeds_cover_every_layout_and_open_cleanly(seeds, worker, tmp_path):
    from gsvinspect.meta import Layout

    names = {s.name.split("_v")[0] for s in seeds}
    assert {layout.name for layout in Layout} <= names
    assert any(s.data[:2] == b"05" for s in seeds) and any(s.kind == "safetensors" for s in seeds)
    for s in seeds:
        p = tmp_path / s.name
        p.write_bytes(s.data)
        assert worker.run(p)[0] == "ok", s.name


def test_mutate_is_deterministic_and_changes_bytes(seeds):
    rng = random.Random(3)
    changed = 0
    for _ in range(200):
        s = rng.choice(seeds)
        ops = fz.random_ops(rng)
        a, b = fz.mutate(s, ops, seeds), fz.mutate(s, ops, seeds)
        assert a == b
        changed += a != s.data
    assert changed > 150


_op = st.tuples(st.sampled_from(fz.KINDS), st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1),
                st.integers(0, 2 ** 32 - 1))


def test_fuzz_loader_with_hypothesis(seeds, worker, tmp_path):
    seen: list[str] = []
    case = tmp_path / "case.pth"

    @settings(max_examples=CI_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(idx=st.integers(0, len(seeds) - 1), ops=st.lists(_op, min_size=1, max_size=4))
    def one(idx, ops):
        data = fz.mutate(seeds[idx], ops, seeds)
        case.write_bytes(data)
        outcome, _peak = worker.run(case)
        seen.append(outcome)
        assert not fz.is_failure(outcome), f"{seeds[idx].name} {ops}: {outcome}"

    one()
    assert len(seen) >= 500
    # the mutations reach both ends: some cases still open, most are refused with a GsvError
    assert sum(o == "ok" for o in seen) > 20
    assert sum(o.startswith("error:") for o in seen) > 200


def test_random_batch_covers_the_opcode_and_directory_mutators(seeds, worker, tmp_path):
    """A fixed-seed random batch aimed at the pickle and the zip directory only."""
    rng = random.Random(20240607)
    case = tmp_path / "case.pth"
    outcomes = []
    zips = [s for s in seeds if s.kind == "zip"]
    for _ in range(150):
        s = rng.choice(zips)
        kind = rng.choice(("pickle_op", "pickle_arg", "pickle_cut", "zip_field"))
        ops = [(kind, rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(rng.randint(1, 3))]
        case.write_bytes(fz.mutate(s, ops, seeds))
        outcome, _ = worker.run(case)
        assert not fz.is_failure(outcome), f"{s.name} {ops}: {outcome}"
        outcomes.append(outcome)
    assert any(o.startswith("error:") for o in outcomes)


def test_worker_reports_hangs_and_crashes(tmp_path):
    """The harness itself: a hang or a dead interpreter is reported as a failure, not swallowed."""
    case = tmp_path / "x.pth"
    case.write_bytes(b"not a checkpoint at all")
    w = fz.Worker(case_timeout=5.0)
    try:
        assert w.run(case)[0] == "error:CheckpointError"
        w.proc.kill()
        w.proc.wait()
        assert w.run(case)[0] == "error:CheckpointError"  # a worker killed between cases: restarted
    finally:
        w.close()
    slow = fz.Worker(case_timeout=0.001)  # no answer in time (the interpreter is still starting)
    try:
        outcome, _ = slow.run(case)
        assert outcome == "hang" and fz.is_failure(outcome) and slow.proc is None
    finally:
        slow.close()
    starved = fz.Worker(mem_limit_gb=1 / 1024)  # 1 MiB of address space: dies before answering
    try:
        outcome, _ = starved.run(case)
        assert outcome.startswith("crash:exit") and fz.is_failure(outcome)
    finally:
        starved.close()
