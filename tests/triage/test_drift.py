"""`scan --drift` finds exactly the drift write_run put in: linear growth with the epoch, only the
English phoneme rows moving, the jump at its epoch, NaN from its epoch on; every byte read once;
numbers equal a torch.load reference."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from gsvinspect.triage import drift as drift_mod


def _group(drift, stage, model):
    (g,) = [g for g in drift if g.stage == stage and g.model == model]
    return g


@pytest.mark.parametrize("stage,model", [("s1 GPT", "gpt"), ("s2 G", "sovits-G"), ("s2 D", "sovits-D"),
                                         ("exports", "gpt"), ("exports", "sovits-G")])
def test_change_from_base_grows_with_the_epoch_as_written(run_tree, scanned, stage, model):
    g = _group(scanned[1], stage, model)
    assert [p.epoch for p in g.points] == list(run_tree.epochs)
    assert Path(g.base) == run_tree.pretrained[model]
    for p in g.points:
        want = run_tree.expected_rel_from_base(p.epoch)
        # the model total mixes in the phoneme table (moving 12x more on ~1/20 of its rows) and the
        # frozen leaves: within 15 %; a plain module (the decoder / transformer blocks) within 5 %
        assert p.from_base == pytest.approx(want, rel=0.15), (p.path, p.from_base, want)
        body = {"gpt": "model.h", "sovits-G": "dec", "sovits-D": "discriminators"}[model]
        assert p.modules[body][0] == pytest.approx(want, rel=0.05)


def test_only_the_trained_language_moves(run_tree, scanned):
    for stage, model in (("s1 GPT", "gpt"), ("s2 G", "sovits-G")):
        g = _group(scanned[1], stage, model)
        for p in g.points:
            moved = {lang for lang, (b, _) in p.languages.items() if b and b > 0}
            assert moved == {"en"}, (p.path, p.languages)
            assert p.languages["en"][0] == pytest.approx(run_tree.expected_language_from_base(p.epoch), rel=0.1)


def test_nan_appears_exactly_where_it_was_put(run_tree, scanned):
    for g in scanned[1]:
        if g.model == "sovits-D" and g.stage == "exports":
            continue
        for p in g.points:
            bad = p.epoch >= run_tree.nan_at
            assert bool(p.nan) == bad, (g.model, g.stage, p.path)
            assert p.nonfinite_new == (p.epoch == run_tree.nan_at)
            assert math.isfinite(p.from_base)      # NaN left out of the norms, not poisoning them


def test_the_jump_is_flagged_at_its_epoch_only(run_tree, scanned):
    for g in scanned[1]:
        assert [p.epoch for p in g.points if p.jump] == [run_tree.jump_at], g.model


def _count_reads(monkeypatch) -> dict:
    """(file, key) -> how many times the drift pass read that tensor: through the mapping
    (``_flat``: big tensors, workers) or with ``pread`` (``_tensor_span``: packed small tensors)."""
    reads: dict = {}

    def counting(real):
        def f(ck, key):
            reads[(str(ck.path), key)] = reads.get((str(ck.path), key), 0) + 1
            return real(ck, key)
        return f

    monkeypatch.setattr(drift_mod, "_flat", counting(drift_mod._flat))
    monkeypatch.setattr(drift_mod, "_tensor_span", counting(drift_mod._tensor_span))
    return reads


def test_every_byte_is_read_once(run_tree, monkeypatch):
    """Each (file, tensor) is read once for the whole trajectory, the base included, and every
    tensor a point compared was read."""
    from gsvinspect.triage.scan import scan

    reads = _count_reads(monkeypatch)
    result = scan([run_tree.root], keep_open=True)
    try:
        groups = drift_mod.compute_drift(result)
    finally:
        result.close()
    assert reads and max(reads.values()) == 1, [k for k, n in reads.items() if n > 1][:5]
    base = str(run_tree.pretrained["sovits-G"])
    # the base was read (once) though it is the base of two trajectories: s2 G and the SoVITS exports
    assert sum(1 for (path, _), n in reads.items() if path == base) > 0
    assert len([g for g in groups if g.base == base]) == 2
    per_file: dict = {}
    for path, _ in reads:
        per_file[path] = per_file.get(path, 0) + 1
    points = [p for g in groups for p in g.points]
    assert points and all(per_file.get(p.path) == p.compared for p in points)


def test_small_tensors_go_in_packs_with_the_same_numbers(run_tree, scanned, monkeypatch):
    """Packs (small tensors read one after another and summed as one block) give the numbers the
    one-tensor-at-a-time path gives, and a tiny BLOCK (big tensors in many blocks, many packs)
    too; packing is really used (far fewer jobs than tensors)."""
    from gsvinspect.triage.scan import scan

    jobs_seen = []
    real_run_jobs = drift_mod.run_jobs

    def spy(n_jobs, *a, **kw):
        jobs_seen.append(n_jobs)
        return real_run_jobs(n_jobs, *a, **kw)

    def drift_with(**patches):
        with monkeypatch.context() as m:
            for name, value in patches.items():
                m.setattr(drift_mod, name, value)
            m.setattr(drift_mod, "run_jobs", spy)
            result = scan([run_tree.root], keep_open=True)
            try:
                return [g.as_dict() for g in drift_mod.compute_drift(result)]
            finally:
                result.close()

    single = drift_with(_packable=lambda ck, key: False)
    unpacked_jobs = sum(jobs_seen)
    jobs_seen.clear()
    packed = [g.as_dict() for g in scanned[1]]
    drift_with()
    assert sum(jobs_seen) * 5 < unpacked_jobs, (sum(jobs_seen), unpacked_jobs)
    tiny = drift_with(BLOCK=1 << 10)
    for other in (single, tiny):
        for a, b in zip(other, packed):
            assert len(a["points"]) == len(b["points"]) > 0
            for pa, pb in zip(a["points"], b["points"]):
                assert (pa["nan"], pa["inf"], pa["ovf16"], pa["compared"]) == (pb["nan"], pb["inf"], pb["ovf16"], pb["compared"])
                if pb["from_base"] is None:
                    continue
                assert pa["from_base"] == pytest.approx(pb["from_base"], rel=1e-6)
                assert pa["from_prev"] == pytest.approx(pb["from_prev"], rel=1e-6)
                for mod, v in pb["modules"].items():
                    assert pa["modules"][mod]["from_base"] == pytest.approx(v["from_base"], rel=1e-6, abs=1e-12)


def test_a_file_truncated_during_the_pass_is_one_clean_error(run_tree, tmp_path, monkeypatch):
    """A file truncated under the pass (a trainer rewriting it in place) is one CheckpointError
    from the worker that reads it with pread, re-raised here; no process touches a mapping past
    the file's end (that would be SIGBUS: the interpreter dead), nothing hangs."""
    import shutil

    from gsvinspect.errors import CheckpointError
    from gsvinspect.stats import files as files_mod
    from gsvinspect.triage.scan import scan

    root = tmp_path / "run"
    base = Path(run_tree.pretrained["sovits-G"])
    cks = sorted(Path(run_tree.root).rglob("G_*.pth"))[:3]
    for p in [base, *cks]:
        dst = root / p.relative_to(run_tree.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    victim = root / cks[1].relative_to(run_tree.root)
    real_init = files_mod._Files.__init__

    def init_then_truncate(self, *a):
        real_init(self, *a)
        with open(victim, "r+b") as fh:       # after the fds were proven: as a trainer rewriting it
            fh.truncate(victim.stat().st_size // 3)
        time.sleep(0.02)                      # past zip_index's 10 ms between size checks

    monkeypatch.setattr(drift_mod, "POOL_FROM", 0)
    monkeypatch.setattr(drift_mod, "_cpu_workers", lambda: 2)
    monkeypatch.setattr(drift_mod._Files, "__init__", init_then_truncate)
    result = scan([root], keep_open=True)
    try:
        with pytest.raises(CheckpointError) as exc:
            drift_mod.compute_drift(result)
    finally:
        result.close()
    assert "shrank" in str(exc.value) and victim.name in str(exc.value)


def test_numbers_match_a_torch_load_reference(run_tree, scanned):
    """‖ck − base‖/‖base‖ and ‖ck − prev‖/‖prev‖ of the G trajectory, computed with plain torch."""
    torch = pytest.importorskip("torch")

    g = _group(scanned[1], "s2 G", "sovits-G")
    base = torch.load(run_tree.pretrained["sovits-G"], map_location="cpu", weights_only=True)["weight"]
    prev = {k: v.double() for k, v in base.items() if v.is_floating_point()}
    for p in g.points[:3]:
        ck = torch.load(p.path, map_location="cpu", weights_only=True)["model"]
        cur = {k.removeprefix("module."): v.double() for k, v in ck.items() if v.is_floating_point()}
        keys = [k for k in prev if k in cur]
        for ref, got in ((base, p.from_base), (prev, p.from_prev)):
            num = sum(float(((cur[k] - ref[k].double()) ** 2).sum()) for k in keys)
            den = sum(float((ref[k].double() ** 2).sum()) for k in keys)
            assert got == pytest.approx(math.sqrt(num / den), rel=1e-5)
        dec = [k for k in keys if k.startswith("dec.")]
        num = sum(float(((cur[k] - base[k].double()) ** 2).sum()) for k in dec)
        den = sum(float((base[k].double() ** 2).sum()) for k in dec)
        assert p.modules["dec"][0] == pytest.approx(math.sqrt(num / den), rel=1e-5)
        prev = cur


def test_cancel_stops_the_pass(run_tree):
    import threading

    from gsvinspect.triage.scan import scan

    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        if len(seen) == 3:
            cancel.set()

    result = scan([run_tree.root], keep_open=True)
    try:
        with pytest.raises(drift_mod.DriftCancelled):
            drift_mod.compute_drift(result, progress=progress, cancel=cancel)
    finally:
        result.close()
    assert len(seen) == 3


def test_forked_workers_give_the_same_drift(run_tree, scanned, monkeypatch):
    """The pool path (forced on with a 0-byte threshold and two workers) sums exactly the same."""
    from gsvinspect.triage.scan import scan

    monkeypatch.setattr(drift_mod, "POOL_FROM", 0)
    monkeypatch.setattr(drift_mod, "_cpu_workers", lambda: 2)
    result = scan([run_tree.root], keep_open=True)
    try:
        groups = drift_mod.compute_drift(result)
    finally:
        result.close()
    want = [g.as_dict() for g in scanned[1]]
    got = [g.as_dict() for g in groups]
    for a, b in zip(got, want):
        for pa, pb in zip(a["points"], b["points"]):
            assert pa["from_base"] == pytest.approx(pb["from_base"], rel=1e-12)
            assert (pa["nan"], pa["inf"], pa["jump"], pa["compared"]) == (pb["nan"], pb["inf"], pb["jump"], pb["compared"])
            for m, v in pb["modules"].items():
                assert pa["modules"][m]["from_prev"] == pytest.approx(v["from_prev"], rel=1e-12)


def test_fp16_overflow_is_counted_and_alone_makes_the_exit_code_1():
    """README: ``ovf16`` counts the finite values an fp16 export would turn into Inf (NaN/Inf are
    counted apart, and an fp16 file cannot hold any); such a checkpoint is unhealthy: exit 1."""
    import numpy as np

    from gsvinspect.cli.scan import exit_code
    from gsvinspect.triage.entry import ScanEntry
    from gsvinspect.triage.scan import ScanResult
    from gsvinspect.triage.trajectory import DriftGroup, DriftPoint

    block = np.array([1.0, 65519.0, 65520.0, -1e5, 1e6, np.inf, np.nan, 2.0], dtype=np.float32)
    s, nan, inf, ovf = drift_mod._health(block, "float32")
    assert (nan, inf, ovf) == (1, 1, 3)
    assert s == pytest.approx(1 + 65519.0 ** 2 + 65520.0 ** 2 + 1e10 + 1e12 + 4, rel=1e-12)
    assert drift_mod._health(block[:2], "float32")[3] == 0
    assert drift_mod._health(np.array([65504.0, -65504.0, np.inf], dtype=np.float16), "float16")[3] == 0

    result = ScanResult([ScanEntry(path=Path("G_8.pth"), stage="s2 G", model="sovits-G")])
    healthy = DriftGroup("x", "s2 G", "sovits-G", None, [DriftPoint("G_8.pth", 8, 200)])
    assert exit_code(result, [healthy]) == 0
    healthy.points[0].ovf16 = 1
    assert exit_code(result, [healthy]) == 1



def test_progress_reaches_its_total_with_the_bytes_read(scanned):
    """progress(done, total): done adds up the weight bytes compared, each base once for all its
    trajectories (training checkpoints and their exports share one), and reaches total by itself."""
    result, _ = scanned
    calls = []
    groups = drift_mod.compute_drift(result, progress=lambda done, total: calls.append((done, total)))
    assert len({g.base for g in groups if g.points}) < sum(1 for g in groups if g.points)   # a base is shared
    total = calls[-1][1]
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-2] == done[-1] == total       # the ticks reach it themselves
