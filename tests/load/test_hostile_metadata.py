"""Tensor-metadata and container attacks end in one clear CheckpointError, never a crash.

Offsets and sizes past their record, negative strides, 1e12-element shapes without data,
missing/duplicated/compressed records, zip-bomb sizes, memo-index bombs, cyclic, deep and
exponentially shared containers: every case must be refused at open time (before any tensor
byte is read), with a one-line message, in a child process whose peak RSS stays small.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import hostile_corpus as hc

RSS_BOUND_MB = 100  # python + numpy + gsvinspect is ~40 MB; one 1e12-element allocation would be TBs


@pytest.fixture(scope="module")
def attack_files(tmp_path_factory):
    work = tmp_path_factory.mktemp("metadata")
    files = {}
    for name, (_expect, build) in hc.METADATA_ATTACKS.items():
        path = work / f"{name}.pth"
        path.write_bytes(build())
        files[name] = path
    return work, files


def test_there_are_many_attack_kinds():
    assert len(hc.METADATA_ATTACKS) >= 25


@pytest.mark.parametrize("name", sorted(hc.METADATA_ATTACKS))
def test_attack_is_refused_with_one_line(attack_files, name):
    from gsvinspect.load.checkpoint import open_checkpoint
    from gsvinspect.errors import CheckpointError

    _work, files = attack_files
    expect = hc.METADATA_ATTACKS[name][0]
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(files[name])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(files[name]))
    assert expect in msg, msg


def test_headered_attacks_are_refused_too(tmp_path):
    from gsvinspect.load.checkpoint import open_checkpoint
    from gsvinspect.errors import CheckpointError

    for name in ("offset_past_storage", "negative_stride", "huge_shape_no_data", "compressed_pickle",
                 "memo_index_4gib", "recursive_containers", "duplicate_record_names"):
        expect, build = hc.METADATA_ATTACKS[name]
        data = bytearray(build())
        data[0:2] = b"05"
        path = tmp_path / f"{name}_05.pth"
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=expect):
            open_checkpoint(path)


_CHILD = hc.PEAK_RSS_SNIPPET + r"""
import json, sys
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.errors import GsvError
out = {}
for path in sys.argv[1:]:
    try:
        with open_checkpoint(path) as ck:
            for k in ck.weights:
                ck.array(k).sum()
        out[path] = "opened"
    except GsvError as exc:
        out[path] = "refused: " + str(exc)
out["__torch__"] = "torch" in sys.modules
out["__peak_kb__"] = _peak_rss_kb()
print(json.dumps(out))
"""


def test_child_process_refuses_all_with_small_peak_rss(attack_files):
    work, files = attack_files
    proc = subprocess.run([sys.executable, "-c", _CHILD, *map(str, files.values())], capture_output=True,
                          cwd=work, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    res = json.loads(proc.stdout)
    assert res.pop("__torch__") is False
    peak_mb = res.pop("__peak_kb__") / 1024
    opened = [p for p, r in res.items() if not r.startswith("refused: ")]
    assert not opened, opened
    assert peak_mb < RSS_BOUND_MB, f"peak RSS {peak_mb:.0f} MB"


def test_cli_info_and_ls_print_one_line_exit_3(attack_files):
    work, files = attack_files
    jobs = [[cmd, str(p)] for p in files.values() for cmd in ("info", "ls")]
    results = hc.run_cli_batch(jobs, cwd=work)
    bad = []
    for argv, (rc, err, _out) in zip(jobs, results):
        lines = err.strip().splitlines()
        if not (rc == 3 and len(lines) == 1 and argv[1] in lines[0] and "Traceback" not in err):
            bad.append(f"{argv}: rc={rc} {err[:300]}")
    assert not bad, "\n".join(bad)


def test_info_json_of_scaler_like_state_stays_serialisable(tmp_path):
    """A shared (not cyclic) dict under MixedPrecision is data: info --json must still work."""
    shared = hc.d((hc.s("scale"), b"G" + __import__("struct").pack(">d", 65536.0)),
                  (hc.s("growth_factor"), b"G" + __import__("struct").pack(">d", 2.0))) + hc.put(0)
    body = hc.pkl(hc.d((hc.s("weight"), hc.benign_weights()), (hc.s("MixedPrecision"), shared),
                       (hc.s("copy"), hc.get(0))))
    path = tmp_path / "shared.pth"
    path.write_bytes(hc.rezip(body))
    (rc, err, out), = hc.run_cli_batch([["info", "--json", str(path)]], cwd=tmp_path)
    assert rc == 0, err
    assert json.loads(out)["scaler"]["state"]["scale"] == 65536.0


def test_info_on_a_terminal_shows_markup_like_text_verbatim(tmp_path):
    """Strings from the file (and its path) are text to rich, never markup: `[/bold]` is shown."""
    import io
    import re

    from rich.console import Console

    from gsvinspect.load.checkpoint import open_checkpoint
    from gsvinspect.report.summary import render_info

    body = hc.pkl(hc.d((hc.s("weight"), hc.benign_weights()), (hc.s("info"), hc.s("[/bold] x [red]y"))))
    (tmp_path / "[").mkdir()
    path = tmp_path / "[" / "x].pth"  # the path reads `[/x]`
    path.write_bytes(hc.rezip(body))
    buf = io.StringIO()
    with open_checkpoint(path) as ck:
        render_info(Console(file=buf, force_terminal=True, width=200), ck, with_globals=True)
    text = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())
    assert str(path) in text
    assert "'[/bold] x [red]y'" in text
    assert "torch._utils._rebuild_tensor_v2" in text


def test_as_plain_is_bounded_on_shared_structures():
    """Opaque.as_plain on an exponential DAG (built without the file checks) returns quickly."""
    import pickle

    from gsvinspect.load.safe_unpickle import SafeUnpickler

    data = hc.pkl(hc.g("utils", "HParams") + hc.EMPTY_TUPLE + b"\x81" + hc._laughs(60) + hc.BUILD)
    obj = SafeUnpickler(data, "x").load()
    plain = obj.as_plain()
    assert isinstance(plain, dict)
    assert len(repr(obj)) < 400
    assert pickle.dumps(plain)  # a finite, plain structure


# ---------------------------------------------------------------------------------------------
# memory bounds on real-size files (issue #7 point 5; bench/bench_memory.py prints the table)

INFO_LS_BOUND_MIB = 60


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """~320 MB: a full-size v2 SoVITS G pretrained (fp16) and a G_*.pth training ckpt (fp32)."""
    from gsvinspect.meta import Layout
    from gsvinspect.synth import state_dict, write_checkpoint

    folder = tmp_path_factory.mktemp("bigpair")
    sd = state_dict("sovits-G", "v2", seed=0)
    pre = write_checkpoint(folder / "s2G2333k.pth", Layout.SOVITS_G_PRETRAINED, "v2", weights=sd)
    ft = write_checkpoint(folder / "G_1000.pth", Layout.SOVITS_G_TRAIN, "v2", weights=sd, optimizer="light")
    del sd
    return pre, ft


@pytest.mark.slow
def test_info_ls_diff_peak_rss_does_not_grow_with_file_size(big_pair, tmp_path):
    pre, ft = big_pair
    size_mib = (pre.stat().st_size + ft.stat().st_size) / 2 ** 20
    assert size_mib > 280
    peaks = {}
    for label, argv in (("info", ["info", str(ft)]), ("info-pre", ["info", str(pre)]), ("ls", ["ls", str(ft)]),
                        ("diff", ["diff", str(pre), str(ft), "--no-stats"])):
        rc, _out, err, peak = hc.run_cli_measured(argv, cwd=tmp_path)
        assert rc in (0, 1), err
        peaks[label] = peak
    assert max(peaks["info"], peaks["info-pre"], peaks["ls"]) < INFO_LS_BOUND_MIB, peaks
    assert peaks["diff"] < INFO_LS_BOUND_MIB + 20, peaks  # key alignment only: metadata, no tensor data
    assert all(p < size_mib / 4 for p in peaks.values()), (peaks, size_mib)


# ---------------------------------------------------------------------------------------------
# issue 12 point 4: inputs that crashed the interpreter (SIGSEGV on a 1,000,000-deep tuple key)
# or ended in "internal error": child processes only, so a regression cannot take pytest down

def test_interpreter_crashers_are_refused_in_one_line(tmp_path):
    paths = {}
    for name, (_expect, build) in hc.CRASHERS.items():
        paths[name] = tmp_path / f"{name}.pth"
        paths[name].write_bytes(build())
    jobs = [[cmd, str(p)] for p in paths.values() for cmd in ("info", "ls")]
    results = hc.run_cli_batch(jobs, cwd=tmp_path, timeout=600)
    bad = []
    for argv, (rc, err, _out) in zip(jobs, results):
        name = next(n for n, p in paths.items() if str(p) == argv[1])
        lines = err.strip().splitlines()
        if not (rc == 3 and len(lines) == 1 and hc.CRASHERS[name][0] in lines[0] and "internal" not in err):
            bad.append(f"{argv[0]} {name}: rc={rc} {err.strip()[:200]}")
    assert not bad, "\n".join(bad)


def test_tuple_depth_needs_the_big_stack(tmp_path):
    """Control: the same 1,000,000-deep tuple key does kill a plain unpickler on the default stack."""
    import subprocess

    code = ("import pickle, sys; sys.path.insert(0, %r); import hostile_corpus as hc; "
            "pickle.loads(hc.pkl(hc._tuple_key(1_000_000)))") % str(hc.Path(hc.__file__).parent)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode < 0, proc.returncode  # killed by a signal (SIGSEGV)
