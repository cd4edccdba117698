"""The scan cache: a second ``scan`` of unchanged files opens none of them and says exactly what the
first said; any change to a file (bytes, identity), to the cache file or to the code is a miss;
the cache never errs, never writes where it is told not to, and is off on request.

Every test scans a private copy of the session's run tree (14 MB, copied in well under a second)
with its own cache folder; ``RACY_NS`` is 0 here (the copies are seconds old, and the rule that
a just-written file is not kept has its own test) and scans run in this process, so counting
``open_checkpoint`` calls counts every file read.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

import gsvinspect.load.checkpoint as ckmod
from gsvinspect.cli.main import main
from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.report.scan import scan_dict
from gsvinspect.triage import cache as cache_mod
from gsvinspect.triage import scan as scan_mod
from gsvinspect.triage.scan import scan

import hostile_corpus as hc


@pytest.fixture
def tree(run_tree, tmp_path):
    root = tmp_path / "GPT-SoVITS"
    shutil.copytree(run_tree.root, root)
    return root


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache" / "gsvinspect"
    monkeypatch.setenv("GSVINSPECT_CACHE_DIR", str(d))
    monkeypatch.delenv("GSVINSPECT_NO_CACHE", raising=False)
    monkeypatch.setattr(cache_mod, "RACY_NS", 0)
    return d


@pytest.fixture
def opens(monkeypatch):
    """Paths open_checkpoint was called with (all scans in this process)."""
    seen: list[Path] = []
    real = ckmod.open_checkpoint

    def counting(path, **kw):
        seen.append(Path(path))
        return real(path, **kw)

    monkeypatch.setattr(ckmod, "open_checkpoint", counting)
    monkeypatch.setattr(scan_mod, "FORK_FROM", 10**9)
    return seen


def _dict(result) -> dict:
    return scan_dict(result, None, None, None)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_second_scan_opens_nothing_and_says_the_same(tree, cache_dir, opens, capsys, monkeypatch):
    first = scan([tree])
    n = len(first.entries)
    assert len(opens) == n and first.cached == 0
    d1 = _dict(first)
    assert sum(1 for f in d1["files"] if f["copy_of"]) == 8 and all(f["base"] for f in d1["files"]
                                                                    if f["stage"] != "pretrained")
    opens.clear()
    second = scan([tree])
    assert opens == [] and second.cached == n
    assert _dict(second) == d1                       # relations included, worked out again

    # the key is the absolute path: the same files named relatively hit, and keep the walk's names
    monkeypatch.chdir(tree.parent)
    rel = scan([tree.name])
    assert opens == [] and rel.cached == n
    assert [str(e.path) for e in rel.entries] == [os.path.relpath(e.path, tree.parent) for e in first.entries]
    assert [e.experiment for e in rel.entries] == [e.experiment for e in first.entries]

    # and the CLI's table and JSON are the same cold and warm
    shutil.rmtree(cache_dir)
    outs = []
    for _ in range(2):
        code_t, table, err_t = _cli(capsys, "scan", str(tree))
        code_j, js, err_j = _cli(capsys, "scan", "--json", str(tree))
        doc = json.loads(js)
        doc.pop("timing")
        outs.append((code_t, table, err_t, code_j, doc, err_j))
    assert outs[0] == outs[1] and outs[0][0] == 0 and outs[0][2] == ""


def test_a_file_rewritten_in_place_with_its_old_mtime_is_read_again(run_tree, tree, cache_dir, opens):
    target = tree / "SoVITS_weights_v2" / "myvoice_e2_s50.pth"
    other = tree / "SoVITS_weights_v2" / "myvoice_e4_s100.pth"
    before = scan([tree])
    old = os.stat(target)
    assert os.stat(other).st_size == old.st_size
    target.write_bytes(other.read_bytes())             # other bytes, same size
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = os.stat(target)
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns) and new.st_ctime_ns != old.st_ctime_ns
    opens.clear()
    after = scan([tree])
    assert opens == [target] and after.cached == len(before.entries) - 1
    by = {Path(e.path): e for e in after.entries}
    g100 = tree / "logs" / "myvoice" / "logs_s2_v2" / "G_100.pth"
    assert (by[target].epoch, by[target].step, by[target].copy_of) == (4, 100, str(g100))


def test_a_new_file_is_read_and_the_others_hit(tree, cache_dir, opens):
    first = scan([tree])
    # a sub-folder scanned alone hits too, and does not drop the others' entries
    opens.clear()
    sub = scan([tree / "logs"])
    assert opens == [] and sub.cached == len(sub.entries) > 0
    added = tree / "SoVITS_weights_v2" / "myvoice_e10_s250.pth"
    shutil.copyfile(tree / "SoVITS_weights_v2" / "myvoice_e8_s200.pth", added)
    again = scan([tree])
    assert opens == [added] and again.cached == len(first.entries)
    opens.clear()
    assert scan([tree]).cached == len(first.entries) + 1 and opens == []


def test_a_file_replaced_by_a_hostile_one_is_refused(tree, cache_dir, opens, tmp_path):
    target = tree / "GPT_weights_v2" / "myvoice-e2.ckpt"
    scan([tree])
    payload = next(p for p in hc.PAYLOADS if p.name == "os_system")
    work = tmp_path / "hostile"
    work.mkdir()
    bad, marker = hc.write_hostile(payload, work, headered=False)
    os.replace(bad, target)
    for _ in range(2):        # read, refused; then kept as refused: the same bytes, the same verdict
        opens.clear()
        result = scan([tree])
        e = next(e for e in result.entries if Path(e.path) == target)
        assert e.refused and e.error.startswith("unsafe, refused") and e.stage == "unreadable"
        assert not marker.exists()
    assert opens == []


def test_a_corrupt_or_foreign_cache_file_is_no_cache_and_is_rewritten(tree, cache_dir, opens, capsys):
    d1 = _dict(scan([tree]))
    files = sorted(cache_dir.glob("*.json"))
    assert files
    garbage = [b"{not json", b"[]", json.dumps({"format": "other/1", "files": {}}).encode(), b"\xff\xfe"]
    for i, f in enumerate(files):
        f.write_bytes(garbage[i % len(garbage)])
    opens.clear()
    assert _dict(scan([tree])) == d1
    assert len(opens) == len(d1["files"])
    assert capsys.readouterr().err == ""
    for f in files:                                     # rewritten, whole
        assert json.loads(f.read_bytes())["format"] == cache_mod.FORMAT
    # one entry with a field of the wrong type: that file alone is read again
    doc = json.loads(files[0].read_bytes())
    path, rec = next(iter(doc["files"].items()))
    rec[2]["dtypes"] = ["float32"]
    files[0].write_text(json.dumps(doc))
    opens.clear()
    assert _dict(scan([tree])) == d1 and opens == [Path(path)]


def test_an_unusable_cache_folder_is_silently_no_cache(tree, tmp_path, monkeypatch, opens, capsys):
    tree = tree / "SoVITS_weights_v2"          # one folder is enough here
    monkeypatch.setattr(cache_mod, "RACY_NS", 0)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("GSVINSPECT_CACHE_DIR", str(blocker / "cache"))    # cannot be created
    code, out, err = _cli(capsys, "scan", str(tree))
    assert code == 0 and err == "" and "myvoice_e2_s50.pth" in out
    code, out, err = _cli(capsys, "scan", str(tree))
    assert code == 0 and err == "" and not (blocker / "cache").exists()

    # a folder others can write is never read (its files could hide a hostile file) nor written
    shared = tmp_path / "shared"
    monkeypatch.setenv("GSVINSPECT_CACHE_DIR", str(shared))
    n = len(scan([tree]).entries)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in shared.glob("*.json"))
    os.chmod(shared, 0o777)
    opens.clear()
    assert scan([tree]).cached == 0 and len(opens) == n
    os.chmod(shared, 0o700)
    for f in shared.glob("*.json"):
        os.chmod(f, 0o666)
    opens.clear()
    assert scan([tree]).cached == 0 and len(opens) == n


def test_no_cache_flag_and_env_read_and_write_nothing(tree, cache_dir, opens, capsys, monkeypatch):
    tree = tree / "SoVITS_weights_v2"          # one folder is enough here
    code, out, err = _cli(capsys, "scan", "--no-cache", str(tree))
    assert code == 0 and err == "" and not cache_dir.exists()
    monkeypatch.setenv("GSVINSPECT_NO_CACHE", "1")
    scan([tree])
    assert not cache_dir.exists()
    monkeypatch.delenv("GSVINSPECT_NO_CACHE")
    n = len(scan([tree]).entries)                    # now it is filled
    stamp = {f: f.stat().st_mtime_ns for f in cache_dir.glob("*.json")}
    for argv in (["scan", "--no-cache", str(tree)], ["scan", "--no-cache", "--json", str(tree)]):
        opens.clear()
        assert _cli(capsys, *argv)[0] == 0 and len(opens) == n
    monkeypatch.setenv("GSVINSPECT_NO_CACHE", "1")
    opens.clear()
    assert scan([tree]).cached == 0 and len(opens) == n
    assert {f: f.stat().st_mtime_ns for f in cache_dir.glob("*.json")} == stamp
    code, out, _ = _cli_help(capsys)
    assert "--no-cache" in out


def _cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scan", "--help"])
    out, err = capsys.readouterr()
    return exc.value.code, " ".join(out.split()), err


def test_drift_and_trust_do_not_use_the_cache(tree, cache_dir, opens):
    tree = tree / "SoVITS_weights_v2"          # one folder is enough here
    n = len(scan([tree]).entries)
    opens.clear()
    r = scan([tree], keep_open=True)
    r.close()
    assert r.cached == 0 and len(opens) == n
    opens.clear()
    assert scan([tree], trust=True).cached == 0 and len(opens) == n


def test_a_code_change_is_a_miss(tree, cache_dir, opens, monkeypatch, tmp_path):
    n = len(scan([tree]).entries)
    monkeypatch.setattr(cache_mod, "code_stamp", lambda: "0.1.0:another-build")
    opens.clear()
    assert scan([tree]).cached == 0 and len(opens) == n
    opens.clear()
    assert scan([tree]).cached == n and opens == []

    # the stamp follows every .py and .json file's name, size and mtime (not __pycache__)
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    s0 = cache_mod.stamp_of(pkg, "1.0")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "c.py").write_text("")
    assert cache_mod.stamp_of(pkg, "1.0") == s0 != cache_mod.stamp_of(pkg, "1.1")
    st = os.stat(pkg / "sub" / "b.py")
    os.utime(pkg / "sub" / "b.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    s1 = cache_mod.stamp_of(pkg, "1.0")
    (pkg / "sub" / "new.py").write_text("")
    s2 = cache_mod.stamp_of(pkg, "1.0")
    (pkg / "manifest.json").write_text("{}")
    (pkg / "notes.txt").write_text("")
    assert len({s0, s1, s2, cache_mod.stamp_of(pkg, "1.0")}) == 4


def test_a_just_written_file_is_not_kept(tree, cache_dir, opens, monkeypatch):
    monkeypatch.setattr(cache_mod, "RACY_NS", 2_000_000_000)
    fresh = tree / "GPT_weights_v2" / "myvoice-e2.ckpt"
    os.utime(fresh)                                   # changed just now: mtime and ctime
    for _ in range(2):
        opens.clear()
        scan([fresh])
        assert opens == [fresh]
    monkeypatch.setattr(cache_mod, "RACY_NS", 0)
    scan([fresh])
    opens.clear()
    scan([fresh])
    assert opens == []


def test_what_may_pass_is_not_kept_and_folders_are_capped(tree, cache_dir, opens, monkeypatch):
    f = tree / "GPT_weights_v2" / "myvoice-e2.ckpt"
    st = os.stat(f)
    from gsvinspect.triage.entry import ScanEntry

    for err in ("permission denied", "no such file", "internal error while reading: X", "unsafe, refused: y"):
        c = cache_mod.ScanCache(cache_dir, "stamp")
        c.put(str(f), st, st, ScanEntry(path=f, error=err, stage="unreadable"), None)
        assert (c.get(str(f), st) is not None) == err.startswith("unsafe")
    c = cache_mod.ScanCache(cache_dir, "stamp")
    c.put(str(f), st, os.stat(tree / "GPT_weights_v2" / "myvoice-e4.ckpt"), ScanEntry(path=f), None)
    assert c.get(str(f), st) is None                 # its identity moved while it was read
    c.put(str(f), st, st, ScanEntry(path=f), None)
    assert c.get(str(f), st) is not None

    # a folder's file keeps its MAX_PER_FOLDER most recently seen; the cache its MAX_FOLDERS folders
    monkeypatch.setattr(cache_mod, "MAX_PER_FOLDER", 2)
    monkeypatch.setattr(cache_mod, "MAX_FOLDERS", 2)
    exports = sorted((tree / "GPT_weights_v2").iterdir())
    scan(exports)
    doc = json.loads(next(cache_dir.glob("*.json")).read_bytes())
    assert len(doc["files"]) == 2
    monkeypatch.setattr(cache_mod, "MAX_PER_FOLDER", 1000)
    scan([tree / "SoVITS_weights_v2"])
    scan([tree / "pretrained_models" / "gsv-v2final-pretrained"])
    assert len(list(cache_dir.glob("*.json"))) == 2
    opens.clear()
    scan([tree / "SoVITS_weights_v2"])
    assert opens == []
    scan(exports)
    assert len(opens) == len(exports)                # its folder's file was the least recently used


def test_every_field_of_a_row_is_kept_or_recomputed():
    """A field added to ScanEntry must be named here too (else every entry would be a miss)."""
    from gsvinspect.triage.entry import ScanEntry

    kept = set(cache_mod._TYPES) | set(cache_mod.RELATION_FIELDS) | {"path"}
    assert kept == set(ScanEntry.__dataclass_fields__)


def test_storage_range_covers_each_tensor_without_reading(run_tree):
    """The read-ahead advice's ranges: each holds its tensor's bytes (the zip local header before)."""
    for p in (run_tree.training["sovits-G"][0], run_tree.exports["gpt"][0], run_tree.pretrained["gpt"]):
        with open_checkpoint(p) as ck:
            for k in ck.weights:
                sp, rng = ck.span(k), ck.storage_range(k)
                if sp is None:
                    continue
                assert rng[0] <= sp[0] and sp[0] + sp[1] <= rng[0] + rng[1] <= ck.size


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="read-ahead advice is Linux's posix_fadvise")
def test_files_to_read_are_announced_first_and_hits_are_not(tree, cache_dir, opens, monkeypatch):
    """README: on a cold disk the files that must be read are announced to the kernel, their first
    and last MiB, then each file's sampled tensors; a rescan that reads nothing announces nothing."""
    from gsvinspect.triage import readahead
    from gsvinspect.triage.relations import sample

    advised: dict[Path, set] = {}
    real = os.posix_fadvise

    def recording(fd, off, n, advice):
        assert advice == os.POSIX_FADV_WILLNEED
        advised.setdefault(Path(os.readlink(f"/proc/self/fd/{fd}")), set()).add((off, n))
        return real(fd, off, n, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    files = [Path(e.path) for e in scan([tree]).entries]
    assert set(advised) == {p.resolve() for p in files}
    big = 0
    for p in files:
        size, got = p.stat().st_size, advised[p.resolve()]
        assert (0, min(size, readahead.HEAD)) in got
        if size > readahead.HEAD:
            big += 1
            assert (max(readahead.HEAD, size - readahead.TAIL), 0) in got
        with open_checkpoint(p) as ck:
            picks = [ck.storage_range(k) for _, k in sample(ck)]
        assert picks and set(picks) <= got, p
    assert big
    advised.clear()
    assert scan([tree]).cached == len(files) and advised == {}


def test_where_the_cache_lives_and_nothing_is_written_next_to_the_checkpoints(tree, cache_dir, monkeypatch,
                                                                               tmp_path):
    """README: ``$GSVINSPECT_CACHE_DIR``, else ``$XDG_CACHE_HOME/gsvinspect``, else
    ``~/.cache/gsvinspect``; the scanned tree is left as it was."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_mod.cache_dir() == cache_dir
    monkeypatch.delenv("GSVINSPECT_CACHE_DIR")
    assert cache_mod.cache_dir() == tmp_path / "xdg" / "gsvinspect"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")           # not absolute: ignored, as the spec says
    assert cache_mod.cache_dir() == tmp_path / "home" / ".cache" / "gsvinspect"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_mod.cache_dir() == tmp_path / "home" / ".cache" / "gsvinspect"

    def listing():
        return sorted((str(p.relative_to(tree)), p.stat().st_mtime_ns) for p in tree.rglob("*"))

    before = listing()
    scan([tree])
    assert list((tmp_path / "home" / ".cache" / "gsvinspect").glob("*.json"))
    assert listing() == before


def test_a_hit_needs_the_same_path_device_inode_size_mtime_and_ctime(tree, cache_dir):
    """README: a file is read again when any of these differs from what was kept."""
    from types import SimpleNamespace

    from gsvinspect.triage.entry import ScanEntry

    f = tree / "GPT_weights_v2" / "myvoice-e2.ckpt"
    st = os.stat(f)
    fields = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
    same = SimpleNamespace(**{k: getattr(st, k) for k in fields})
    c = cache_mod.ScanCache(cache_dir, "stamp")
    c.put(str(f), st, st, ScanEntry(path=f), None)
    assert c.get(str(f), same) is not None
    assert c.get(str(f.with_name("other.ckpt")), same) is None
    for k in fields:
        assert c.get(str(f), SimpleNamespace(**{**vars(same), k: getattr(st, k) + 1})) is None, k
