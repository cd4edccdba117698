"""Bad inputs (issue #2 point 7): one stderr line naming the file and the problem, exit 3.

Real `python -m gsvinspect info/ls` processes with a timeout (a hang fails the test); `--debug`
brings the traceback back.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import hostile_corpus as hc

TIMEOUT = 60


def _png() -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x00\xff\x00\x00" * 1
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    from gsvinspect.meta import Layout
    from gsvinspect.synth import write_checkpoint

    w = tmp_path_factory.mktemp("bad")
    good = write_checkpoint(w / "good_G_1000.pth", Layout.SOVITS_G_TRAIN, "v2", scale=64, optimizer=False)
    headered = write_checkpoint(w / "good_e8_s100.pth", Layout.SOVITS_WEIGHTS, "v2Pro", scale=64)
    data, hdata = good.read_bytes(), headered.read_bytes()
    files = {}

    def put(name, content: bytes):
        p = w / name
        p.write_bytes(content)
        return p

    files["missing"] = (w / "does_not_exist.pth", "no such file")
    (w / "a_directory.pth").mkdir()
    files["directory"] = (w / "a_directory.pth", "directory")
    files["empty"] = (put("empty.pth", b""), "empty file")
    files["truncated_zip"] = (put("truncated.pth", data[: len(data) // 2]), "truncated")
    files["truncated_headered"] = (put("truncated_05.pth", hdata[: len(hdata) // 3]), "truncated")
    files["truncated_directory"] = (put("truncated_tail.pth", data[:-30]), "truncated")
    files["png_renamed"] = (put("picture.pth", _png()), "PNG")
    files["text_renamed"] = (put("notes.pth", b"these are my training notes\nepoch 8 was best\n"), "text")
    files["html_download"] = (put("download.pth", b"<!DOCTYPE html><html><body>404</body></html>"), "HTML")
    files["lfs_pointer"] = (put("lfs.pth", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"),
                            "LFS")
    files["garbage_pickle"] = (put("garbage_pickle.pth", hc.rezip(b"\x80\x02\xff\xfe garbage")), "corrupt pickle")
    files["garbage_bytes"] = (put("garbage.pth", bytes(range(7, 256)) * 40), "not a PyTorch checkpoint")
    files["unknown_header_digits"] = (put("hdr99.pth", b"99" + data[2:]), "header")
    files["unknown_header_letters"] = (put("hdrZq.pth", b"Zq" + data[2:]), "header")
    files["legacy_pickle"] = (put("legacy.pth", hc.pkl(hc.d((hc.s("a"), hc.i(1))))), "legacy")
    files["tensor_past_record"] = (put("past.pth", hc.rezip(hc.pkl(hc.d((hc.s("weight"), hc.d(
        (hc.s("enc_p.proj.weight"), hc.tensor("0", 16, (4, 8), (8, 1))))))))), "runs past its storage")
    files["storage_past_record"] = (put("past_record.pth", hc.rezip(hc.pkl(hc.d((hc.s("weight"), hc.d(
        (hc.s("enc_p.proj.weight"), hc.tensor("0", 1000, (10, 100), (100, 1))))))))), "holds only")
    os.mkfifo(w / "fifo.pth")  # opening it for reading would block without O_NONBLOCK
    files["fifo"] = (w / "fifo.pth", "not a regular file")
    files["char_device"] = (Path("/dev/zero"), "not a regular file")
    files["no_tensors"] = (put("no_tensors.pth", hc.rezip(hc.pkl(hc.d((hc.s("config"), hc.d()))))), "no tensors")
    return w, files


CASES = ["missing", "directory", "empty", "truncated_zip", "truncated_headered", "truncated_directory",
         "png_renamed", "text_renamed", "html_download", "lfs_pointer", "garbage_pickle", "garbage_bytes",
         "unknown_header_digits", "unknown_header_letters", "legacy_pickle", "tensor_past_record",
         "storage_past_record", "no_tensors", "fifo", "char_device"]


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "gsvinspect", *args], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cmd", ["info", "ls"])
def test_bad_input_one_line_exit_3(bad_files, case, cmd):
    w, files = bad_files
    path, expect = files[case]
    proc = _run([cmd, str(path)], w)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gsvinspect: error: ") and str(path) in lines[0]
    assert expect.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("case", ["truncated_zip", "png_renamed", "tensor_past_record"])
def test_debug_shows_the_traceback(bad_files, case):
    w, files = bad_files
    path, _ = files[case]
    proc = _run(["info", "--debug", str(path)], w)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "CheckpointError" in proc.stderr


def test_several_files_report_each_bad_one_and_go_on(bad_files):
    w, files = bad_files
    good = w / "good_G_1000.pth"
    proc = _run(["info", str(files["png_renamed"][0]), str(good), str(files["empty"][0])], w)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "picture.pth" in lines[0] and "empty.pth" in lines[1]
    assert "sovits-g-train" in proc.stdout


def test_good_files_still_open(bad_files):
    w, _ = bad_files
    for name in ("good_G_1000.pth", "good_e8_s100.pth"):
        proc = _run(["info", "--json", str(w / name)], w)
        assert proc.returncode == 0, proc.stderr
