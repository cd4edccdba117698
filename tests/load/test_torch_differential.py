"""Issue 12 point 3: gsvinspect reads what torch reads, or refuses the file as ambiguous.

Each case is a real `torch.save` archive rewritten the way a parser-differential attack would
(names differing only in case, a ZIP64 end record naming another directory than the classic one,
odd version/byteorder/alignment records, TorchScript markers, prefixes, appended bytes). For
every case either gsvinspect refuses it, or it shows exactly the keys, shapes and values that
`torch.load` (run in a child process) returns. The attack cases also check that torch really reads
something other than the naive reading, so the differential is not toothless.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")


def _template(values=(0.0, 1.0, 2.0, 3.0), key="enc_p.w") -> list[tuple[str, bytes]]:
    buf = io.BytesIO()
    torch.save(OrderedDict(weight=OrderedDict({key: torch.tensor(values)}), config={"sr": 32000}), buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    prefix = z.namelist()[0].split("/")[0] + "/"
    return [(i.filename[len(prefix):], z.read(i.filename)) for i in z.infolist()]


BENIGN = _template()
OTHER = _template(key="evil.w")   # the pickle an attacker wants torch to read (same storage record)


def _zip(records, prefix="archive/") -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for name, data in records:
                z.writestr(zipfile.ZipInfo(prefix + name if prefix is not None else name), data)
    return out.getvalue()


def _replace(records, name, data):
    return [(n, data if n == name else d) for n, d in records]


def _rename(records, old, new):
    return [(new if n == old else n, d) for n, d in records]


def _zip64_split() -> bytes:
    """One file, two central directories: the classic end record names the benign one, the ZIP64
    record the other (torch, via miniz, follows ZIP64)."""
    other_pkl = dict(OTHER)["data.pkl"]
    raw = _zip(BENIGN + [("data.pkl", other_pkl)])   # two local records named archive/data.pkl
    eocd = raw.rfind(b"PK\x05\x06")
    n, cd_size, cd_off = struct.unpack_from("<HIH", raw, eocd + 10)[0], *struct.unpack_from("<II", raw, eocd + 12)
    entries, pos = [], cd_off
    for _ in range(n):
        nlen, elen, clen = struct.unpack_from("<HHH", raw, pos + 28)
        entries.append(raw[pos:pos + 46 + nlen + elen + clen])
        pos += 46 + nlen + elen + clen
    body = raw[:cd_off]
    cd_a = b"".join(entries[:-1])                      # benign data.pkl first in the list
    cd_b = b"".join([entries[-1]] + entries[1:-1])     # the other one instead
    off_a, off_b = len(body), len(body) + len(cd_a)
    z64_off = off_b + len(cd_b)
    m = n - 1
    z64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, m, m, len(cd_b), off_b)
    loc = struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_off, 1)
    classic = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, m, m, len(cd_a), off_a, 0)
    return body + cd_a + cd_b + z64 + loc + classic


def _case_dup(first_upper: bool, extra: int) -> bytes:
    recs = list(BENIGN) + [(f"pad{i}", b"x") for i in range(extra)]
    evil = ("Data.pkl", dict(OTHER)["data.pkl"])
    return _zip([evil] + recs if first_upper else recs + [evil])


CASES = {
    # name: (bytes builder, gsvinspect must refuse?)
    "plain": (lambda: _zip(BENIGN), False),
    "upper_case_names": (lambda: _zip(_rename(_rename(_rename(BENIGN, "data.pkl", "DATA.PKL"), "data/0", "Data/0"),
                                              "byteorder", "BYTEORDER")), False),
    "case_duplicate_pickle_after": (lambda: _case_dup(False, 0), True),
    "case_duplicate_pickle_before": (lambda: _case_dup(True, 0), True),
    "case_duplicate_pickle_many_records": (lambda: _case_dup(False, 9), True),
    # which copy torch's binary search finds depends on the record count: with these, the big one
    "case_duplicate_byteorder": (lambda: _zip(BENIGN + [("pad0", b"x"), ("pad1", b"x"), ("BYTEORDER", b"big")]), True),
    "zip64_names_another_directory": (_zip64_split, True),
    "version_0": (lambda: _zip(_replace(BENIGN, "version", b"0")), True),
    "version_11": (lambda: _zip(_replace(BENIGN, "version", b"11")), True),
    "version_99": (lambda: _zip(_replace(BENIGN, "version", b"99\n")), True),
    "version_text": (lambda: _zip(_replace(BENIGN, "version", b"x")), True),
    "version_empty": (lambda: _zip(_replace(BENIGN, "version", b"")), True),
    "version_negative": (lambda: _zip(_replace(BENIGN, "version", b"-1")), True),
    "version_missing": (lambda: _zip([r for r in BENIGN if r[0] != "version"]), True),
    "version_10": (lambda: _zip(_replace(BENIGN, "version", b"10")), False),
    "version_plus_3": (lambda: _zip(_replace(BENIGN, "version", b" +3abc")), False),
    "data_version_99_wins": (lambda: _zip(BENIGN + [(".data/version", b"99")]), True),
    "data_version_5_over_bad_version": (lambda: _zip(_replace(BENIGN, "version", b"99") + [(".data/version", b"5")]),
                                        False),
    "byteorder_big": (lambda: _zip(_replace(BENIGN, "byteorder", b"big")), True),
    "byteorder_capitalised": (lambda: _zip(_replace(BENIGN, "byteorder", b"Little")), True),
    "byteorder_newline": (lambda: _zip(_replace(BENIGN, "byteorder", b"little\n")), True),
    "byteorder_absent": (lambda: _zip([r for r in BENIGN if r[0] != "byteorder"]), False),
    "alignment_text": (lambda: _zip(_replace(BENIGN, ".storage_alignment", b"x")), True),
    "alignment_underscore": (lambda: _zip(_replace(BENIGN, ".storage_alignment", b"6_4")), False),
    "torchscript_constants": (lambda: _zip(BENIGN + [("constants.pkl", dict(BENIGN)["data.pkl"])]), True),
    "first_record_outside_a_folder": (lambda: _zip([("readme", b"x")] + [("archive/" + n, d) for n, d in BENIGN],
                                                   prefix=None), True),
    "first_record_in_another_folder": (lambda: _zip([("other/readme", b"x")] + [("archive/" + n, d) for n, d in BENIGN],
                                                    prefix=None), True),
    "record_outside_the_folder": (lambda: _zip([("archive/" + n, d) for n, d in BENIGN] + [("other/x", b"x")],
                                               prefix=None), True),
    "appended_bytes": (lambda: _zip(BENIGN) + b"\x00junk" * 200, False),
    "prepended_bytes": (lambda: b"junk" + _zip(BENIGN), True),
}

_TORCH_CHILD = r"""
import json, sys, warnings
import torch
warnings.simplefilter("ignore")
out = {}
for name, path in json.loads(sys.stdin.read()).items():
    try:
        root = torch.load(path, map_location="cpu", weights_only=False)
        sd = root["weight"]
        out[name] = {k: [list(v.shape), v.flatten().tolist()] for k, v in sd.items()}
    except Exception as exc:
        out[name] = "error: " + type(exc).__name__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def readings(tmp_path_factory):
    """(what torch.load returns, what gsvinspect shows) for every case."""
    from gsvinspect.errors import CheckpointError
    from gsvinspect.load.checkpoint import open_checkpoint

    work = tmp_path_factory.mktemp("differential")
    paths = {}
    for name, (build, _refuse) in CASES.items():
        paths[name] = work / f"{name}.pth"
        paths[name].write_bytes(build())
    proc = subprocess.run([sys.executable, "-c", _TORCH_CHILD], input=json.dumps({k: str(v) for k, v in paths.items()}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_torch = json.loads(proc.stdout)
    by_us = {}
    for name, path in paths.items():
        try:
            with open_checkpoint(path) as ck:
                by_us[name] = {k: [list(ck.weights[k].shape), ck.array(k).flatten().tolist()] for k in ck.weights}
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            by_us[name] = "refused: " + exc.problem
    return by_torch, by_us


@pytest.mark.parametrize("name", sorted(CASES))
def test_gsvinspect_refuses_or_reads_exactly_what_torch_reads(readings, name):
    by_torch, by_us = readings
    ours, theirs = by_us[name], by_torch[name]
    must_refuse = CASES[name][1]
    if must_refuse:
        assert isinstance(ours, str) and ours.startswith("refused"), (name, ours, theirs)
    else:
        assert ours == theirs, (name, ours, theirs)


def test_the_attack_cases_really_fool_a_naive_reader(readings):
    """torch reads the other pickle or byteswaps, where a first-match reader sees the benign file."""
    by_torch, _ = readings
    benign = by_torch["plain"]
    assert benign == {"enc_p.w": [[4], [0.0, 1.0, 2.0, 3.0]]}
    # (the other pickle names the same storage record: other keys, same bytes)
    assert by_torch["zip64_names_another_directory"] == {"evil.w": [[4], [0.0, 1.0, 2.0, 3.0]]}
    fooled = [n for n in ("case_duplicate_pickle_after", "case_duplicate_pickle_before",
                          "case_duplicate_pickle_many_records") if by_torch[n] != benign]
    assert fooled, "no case-duplicate variant made torch read the other pickle"
    assert by_torch["case_duplicate_byteorder"] != benign and by_torch["byteorder_big"] != benign
    for refused_by_torch in ("version_0", "version_11", "version_99", "version_text", "version_empty",
                             "version_negative", "version_missing", "byteorder_capitalised", "alignment_text",
                             "first_record_outside_a_folder", "record_outside_the_folder"):
        assert str(by_torch[refused_by_torch]).startswith("error"), refused_by_torch
    assert by_torch["upper_case_names"] == benign  # torch looks names up ignoring case; so do we


def test_refusals_say_why_in_one_line(readings):
    _, by_us = readings
    assert "ambiguous" in by_us["zip64_names_another_directory"]
    assert "letter case" in by_us["case_duplicate_pickle_after"]
    assert "TorchScript" in by_us["torchscript_constants"]
    assert "version" in by_us["version_99"] and "byteorder" in by_us["byteorder_capitalised"]
