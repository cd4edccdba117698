"""The metadata scan's fast paths give the answers the slow ones gave.

* copy fingerprints cast fp32 to fp16 with ``struct`` (no numpy): the digest must be the one of
  torch's own ``.half()`` bytes, and values that are not finite or overflow fp16 go through numpy
  with the same result;
* a metadata-only ``scan`` never imports numpy or torch (the import alone is a sixth of the
  process's budget), and still ties copies.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import torch

from gsvinspect.load.checkpoint import open_checkpoint
from gsvinspect.triage.relations import fingerprint


def _half_digest(t: torch.Tensor) -> bytes:
    return hashlib.blake2b(t.half().contiguous().numpy().tobytes(), digest_size=16).digest()


def test_fingerprint_is_the_digest_of_torch_half(tmp_path):
    g = torch.Generator().manual_seed(3)
    sd = {
        "a.bias": torch.randn(700, generator=g) * 3,                 # ordinary values
        "b.bias": torch.randn(64, generator=g) * 1e-6,               # fp16 subnormals
        "c.bias": torch.tensor([1.0, 7e4, -1e5, 3.0]),                # overflow to +-Inf in fp16
        "d.bias": torch.tensor([1.0, float("nan"), float("inf"), 2.0]),
        "e.bias": torch.randn(8, 8, generator=g).t(),                # strided: not one span
        "f.bias": torch.randn(50, generator=g).half(),               # fp16 file: bytes as they are
    }
    p = tmp_path / "m.pth"
    torch.save({"weight": sd}, p)
    with open_checkpoint(p) as ck:
        fp = fingerprint(ck)
    assert set(fp) == set(sd)
    for k, t in sd.items():
        assert fp[k] == _half_digest(t), k


def test_metadata_scan_imports_neither_numpy_nor_torch(run_tree):
    code = (
        "import sys, json\n"
        "from gsvinspect.triage.scan import scan\n"
        f"r = scan([{str(run_tree.root)!r}])\n"
        "print(json.dumps([sum(1 for e in r.entries if e.copy_of), 'numpy' in sys.modules, 'torch' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    copies, numpy_loaded, torch_loaded = json.loads(out.stdout)
    assert copies == len(run_tree.exports["gpt"]) + len(run_tree.exports["sovits-G"])
    assert not numpy_loaded and not torch_loaded


def test_piped_scan_imports_no_rich_and_prints_what_the_terminal_path_would(run_tree, tmp_path):
    """Piped, the table is plain text written without rich (its import is ~30 ms of a 0.1 s
    rescan); the rows are those of the console path's wide table, word for word."""
    import io

    from rich.console import Console

    from gsvinspect.report import scan as rep
    from gsvinspect.triage.scan import scan

    code = (
        "import sys, io, json\n"
        "from gsvinspect.cli.main import main\n"
        "buf = io.StringIO(); real = sys.stdout; sys.stdout = buf\n"
        f"rc = main(['scan', {str(run_tree.root)!r}])\n"
        "sys.stdout = real\n"
        "print(json.dumps([rc, buf.getvalue(), sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'numpy', 'torch'))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "GSVINSPECT_NO_CACHE": "1"})
    rc, text, loaded = json.loads(out.stdout)
    assert rc == 0 and loaded == [], (rc, loaded, out.stderr[-500:])
    result = scan([run_tree.root])
    con = Console(width=300, force_terminal=True, no_color=True, record=True, file=io.StringIO())
    rep.print_scan(con, result, rep.common_root([e.path for e in result.entries]))
    wide = [ln.rstrip() for ln in con.export_text().splitlines() if ln.strip()]
    plain = [ln for ln in text.splitlines() if ln.strip()]
    assert plain == wide

    # piped, every column whatever the width: a narrow pipe drops no relation (PlainOut has no
    # width; one given to it must not be read)
    from gsvinspect.report.output import PlainOut

    narrow = PlainOut(io.StringIO())
    narrow.width = 80
    rep.print_scan(narrow, result, rep.common_root([e.path for e in result.entries]))
    assert [ln for ln in narrow.file.getvalue().splitlines() if ln.strip()] == wide


def test_a_file_truncated_after_it_was_opened_is_one_error_for_the_copy_check(tmp_path):
    """The copy check reads sampled tensors straight from the mapping; a file a trainer truncated
    in place since it was opened must give one CheckpointError, never SIGBUS (run in a child, so a
    regression fails this test instead of killing the test run)."""
    p = tmp_path / "G_233333333333.pth"
    torch.save({"model": {f"l{i}.bias": torch.randn(3000) for i in range(12)}, "iteration": 3}, p)
    code = (
        "import os, time, sys\n"
        "from gsvinspect.load.checkpoint import open_checkpoint\n"
        "from gsvinspect.triage.relations import fingerprint\n"
        "from gsvinspect.errors import CheckpointError\n"
        f"p = {str(p)!r}\n"
        "ck = open_checkpoint(p)\n"
        "for k in ck.weights: ck.span(k)\n"       # record offsets known before (as after any read)
        "os.truncate(p, 2000)\n"
        "time.sleep(0.02)\n"
        "try:\n"
        "    fingerprint(ck)\n"
        "    print('no error')\n"
        "except CheckpointError as e:\n"
        "    print('error:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.returncode, out.stderr[-300:])
    assert out.stdout.startswith("error:") and "shrank" in out.stdout and p.name in out.stdout
