"""`gsvinspect scan` as a user runs it: real processes, piped output, formats, exit codes, bad and
hostile files as one row each, links kept inside the tree."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hostile_corpus as hc

ANSI = re.compile(r"\x1b\[")
TIMEOUT = 120


def run_scan(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gsvinspect", "scan", *map(str, args)], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=cwd)


@pytest.fixture(scope="module")
def small_tree(run_tree, tmp_path_factory):
    """The pretrained D and the first two D checkpoints (healthy: no NaN, too few points for a jump)."""
    d = tmp_path_factory.mktemp("small")
    for p in (run_tree.pretrained["sovits-D"], *run_tree.training["sovits-D"][:2]):
        dst = d / p.relative_to(run_tree.root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    return d


def test_piped_table_is_plain_and_grouped(run_tree):
    r = run_scan(run_tree.root)
    assert r.returncode == 0, r.stderr
    assert not ANSI.search(r.stdout)
    titles = [ln.strip() for ln in r.stdout.splitlines() if " · " in ln]
    assert titles == ["pretrained · pretrained", "myvoice · s1 GPT", "myvoice · s2 G", "myvoice · s2 D",
                      "myvoice · exports"]
    row = next(ln for ln in r.stdout.splitlines() if "SoVITS_weights_v2/myvoice_e8_s200.pth" in ln)
    assert "risky (no enc_q)" in row and "copy of G_200.pth; base s2G2333k.pth" in row


def test_json_has_every_file_and_the_drift(run_tree):
    r = run_scan(run_tree.root, "--drift", "--json")
    assert r.returncode == 1, r.stderr             # NaN at epoch 8 and the jump: unhealthy
    doc = json.loads(r.stdout)
    assert doc["schema"] == "gsvinspect.scan/1"
    assert len(doc["files"]) == len(run_tree.files())
    g = next(g for g in doc["drift"] if g["stage"] == "s2 G")
    assert [p["epoch"] for p in g["points"]] == list(run_tree.epochs)
    assert [p["jump"] for p in g["points"]] == [e == run_tree.jump_at for e in run_tree.epochs]
    assert g["points"][-1]["nan"] > 0 and g["points"][-1]["languages"]["zh"]["from_base"] == 0


def test_csv_drift_is_long_form_for_plotting(run_tree):
    r = run_scan(run_tree.root, "--drift", "--csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    en = [float(x["from_base"]) for x in rows if x["stage"] == "s1 GPT" and x["scope"] == "language"
          and x["name"] == "en"]
    assert len(en) == len(run_tree.epochs) and en == sorted(en)
    totals = {x["path"] for x in rows if x["scope"] == "total"}
    assert len(totals) == sum(len(v) for v in run_tree.training.values()) + \
        sum(len(v) for v in run_tree.exports.values())


def test_csv_without_drift_lists_files(run_tree):
    r = run_scan(run_tree.root, "--csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == len(run_tree.files()) and {"path", "base_rule", "copy_of"} <= set(rows[0])


def test_markdown_has_sparklines(run_tree):
    r = run_scan(run_tree.root, "--drift", "--markdown")
    assert r.stdout.startswith("# gsvinspect scan")
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("| language en |"))
    assert re.search(r"`[▁▂▃▄▅▆▇█]{4}`", line)


def test_a_healthy_run_exits_0(small_tree):
    r = run_scan(small_tree, "--drift")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout and "NaN" not in r.stdout


def test_bad_and_hostile_files_are_one_row_each(small_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(small_tree, tree)
    (tree / "garbage.pth").write_bytes(bytes(range(7, 256)) * 40)
    (tree / "truncated.pth").write_bytes((next(tree.rglob("D_*.pth"))).read_bytes()[:5000])
    hostile, marker = hc.write_hostile(hc.PAYLOADS[0], tree, headered=False)
    r = run_scan(tree, "--json")
    assert r.returncode == 1, r.stderr
    assert not marker.exists()                     # nothing from the file ran
    files = {Path(f["path"]).name: f for f in json.loads(r.stdout)["files"]}
    assert files["garbage.pth"]["error"] and files["truncated.pth"]["error"]
    assert files[hostile.name]["refused"] is True and "refused" in files[hostile.name]["error"]
    assert sum(1 for f in files.values() if f["error"] is None) == 3       # the good files still listed
    plain = run_scan(tree)
    line = next(ln for ln in plain.stdout.splitlines() if ln.startswith("garbage.pth"))
    assert "error" in line and "Traceback" not in plain.stderr


def test_nothing_readable_is_exit_3(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"not a checkpoint at all")
    r = run_scan(tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr


def test_no_checkpoints_and_missing_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    r = run_scan(tmp_path)
    assert r.returncode == 3 and "no checkpoint files found" in r.stderr
    r = run_scan(tmp_path / "nope")
    assert r.returncode == 3 and "nope: no such file or folder" in r.stderr


def test_usage_errors_are_exit_2(run_tree):
    assert run_scan().returncode == 2
    assert run_scan(run_tree.root, "--json", "--csv").returncode == 2


def test_links_stay_inside_the_tree(small_tree, tmp_path):
    from gsvinspect.triage.walk import walk

    tree, outside = tmp_path / "tree", tmp_path / "outside"
    shutil.copytree(small_tree, tree)
    outside.mkdir()
    shutil.copy(next(small_tree.rglob("D_*.pth")), outside / "elsewhere.pth")
    os.symlink(outside / "elsewhere.pth", tree / "link_out.pth")
    os.symlink(outside, tree / "folder_link")
    inner = next(tree.rglob("D_*.pth"))
    os.symlink(inner, tree / "link_in.pth")                        # same file twice: listed once
    (tree / "logs" / "noext").write_bytes(inner.read_bytes())       # a checkpoint without a suffix
    feat = tree / "logs" / "myvoice" / "4-cnhubert"
    feat.mkdir(parents=True)
    shutil.copy(inner, feat / "utt1.wav.pt")
    w = walk([tree])
    names = sorted(p.name for p in w.files)
    assert "elsewhere.pth" not in names and "utt1.wav.pt" not in names and "noext" in names
    assert len(w.files) == 4                                        # 3 copies + noext, link_in deduplicated
    skipped = {p.name: why for p, why in w.skipped}
    assert "outside" in skipped["link_out.pth"] and skipped["folder_link"] == "folder link not followed"


def _gsv(*args):
    return subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_a_folder_opens_the_run_view(run_tree):
    """`gsvinspect DIR` passes the pre-check and reaches the app (refused only for want of a terminal);
    a folder as one of two files is an unreadable file."""
    r = _gsv(run_tree.root)
    assert r.returncode == 2 and "interactive terminal" in r.stderr, r.stderr
    r = _gsv("open", run_tree.root, run_tree.pretrained["gpt"])
    assert r.returncode == 3 and str(run_tree.root) in r.stderr


def test_demo_run_without_a_terminal_prints_the_scan(run_tree, tmp_path):
    """demo --run reuses a complete tree (here the test run, linked in) and finds what was planted."""
    (tmp_path / "run").symlink_to(run_tree.root, target_is_directory=True)
    r = _gsv("demo", "--run", "--no-tui", "--dir", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "jump x" in r.stdout and "NaN" in r.stdout and "copy of" in r.stdout


def test_piped_rows_are_one_line_each_aligned_and_escaped(small_tree, tmp_path):
    """Piped, every file is one line however long its relation or name (grep-able), columns line up
    in terminal cells (a CJK name is two cells a character), and a name holding an escape sequence
    is shown escaped, never sent to the terminal."""
    from rich.cells import cell_len

    tree = tmp_path / "tree"
    shutil.copytree(small_tree, tree)
    d = next(tree.rglob("D_*.pth"))
    shutil.copy(d, d.with_name("D_声音_9.pth"))
    shutil.copy(d, d.with_name("D_\x1b[2Jx_9.pth"))
    r = run_scan(tree)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\\x1b" in r.stdout
    lines = r.stdout.splitlines()
    assert all(ln == ln.rstrip() for ln in lines)
    rows = [ln for ln in lines if ".pth" in ln and not ln.startswith("skipped")]
    assert len(rows) == sum(1 for _ in tree.rglob("*.pth"))          # one line per file
    head = next(i for i, ln in enumerate(lines) if ln.startswith("file") and "size" in ln and "声音" in
                "".join(lines[i:lines.index("", i)]))      # the group holding the CJK name
    group = lines[head:lines.index("", head)]
    assert len(group) >= 3
    ends = {cell_len(ln[:ln.index(" MiB") if " MiB" in ln else ln.index(" KiB")]) for ln in group[1:]}
    assert len(ends) == 1, group                       # the size column is right-aligned, in cells
    size_end = cell_len(lines[head][:lines[head].index("size") + 4])
    assert ends == {size_end - 4}, (ends, size_end)


def test_an_80_column_terminal_gets_short_rows_and_shared_bases_once(run_tree):
    """At 80 columns (a terminal) every row is one line: file names only, and the relation under the
    table, a base shared by a group said once ("first … last (N): base X"), each copy per row."""
    from rich.console import Console

    from gsvinspect.report import scan as rep
    from gsvinspect.triage.scan import scan

    result = scan([run_tree.root])
    con = Console(width=80, force_terminal=True, no_color=True, record=True, file=io.StringIO())
    rep.print_scan(con, result, rep.common_root([e.path for e in result.entries]))
    text = con.export_text()
    lines = text.splitlines()
    short = [e for e in result.entries if len(e.path.name) <= 30]
    assert len(short) > 20
    for e in short:                 # one line per file in its table: the name and the size on it
        row = [ln for ln in lines if ln.startswith(e.path.name + " ") and "iB" in ln]
        assert len(row) == 1 and len(row[0]) <= 80, (e.path.name, row)
    g_rows = [e for e in result.entries if e.stage == "s2 G"]
    shared = [ln for ln in lines if ln.strip().startswith(f"{g_rows[0].path.name} … {g_rows[-1].path.name}")]
    assert len(shared) == 1 and "base s2G2333k.pth [keys]" in shared[0]
    assert sum("base s2G2333k.pth" in ln for ln in lines) == 2      # the G group and the SoVITS exports
    assert any(ln.strip() == "myvoice_e8_s200.pth: copy of G_200.pth" for ln in lines)
