"""Issue 12 point 5: metadata work is linear in the keys, past documented limits a clear refusal.

No timings here (speed lives in bench/ and the README's figure); these check that many keys are
read completely by ls/info/diff --no-stats, that the documented limits refuse with one line, and
that a big bytes object shared by many entries is shown with a bounded repr.
"""

from __future__ import annotations

import json

import pytest

import hostile_corpus as hc

N_KEYS = 20_000


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    path = tmp_path_factory.mktemp("many") / "many.pth"
    path.write_bytes(hc.many_keys_file(N_KEYS))
    return path


def test_many_keys_are_listed_compared_and_described(many, tmp_path):
    jobs = [["ls", "--json", str(many)], ["info", "--json", str(many)],
            ["diff", str(many), str(many), "--no-stats", "--json"]]
    (js_rc, _e2, js_tail), (info_rc, _e3, info_out), (diff_rc, err, diff_tail) = \
        hc.run_cli_batch(jobs, cwd=tmp_path)   # (stdout tails: the last 2000 characters)
    assert js_rc == info_rc == diff_rc == 0, err   # a file against itself: no difference
    assert json.loads(info_out)["tensors"] == N_KEYS
    last = f"enc_p.layers.{N_KEYS - 1}.w"
    assert f'"key": "{last}"' in js_tail and js_tail.rstrip().endswith("]\n}")
    assert f'"target": "{last}",\n      "status": "matched"' in diff_tail and '"rows_truncated": false' in diff_tail
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gsvinspect", "ls", str(many)], capture_output=True, text=True,
                          timeout=300)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == N_KEYS + 2 and lines[-1] == f"{N_KEYS} of {N_KEYS} tensors"
    assert lines[1].split()[0] == "enc_p.layers.0.w" and lines[-2].split()[0] == f"enc_p.layers.{N_KEYS - 1}.w"


def test_state_dict_past_the_limit_is_refused_in_one_line(many, monkeypatch):
    from gsvinspect.errors import CheckpointError
    from gsvinspect.load import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_TENSORS", N_KEYS - 1)
    with pytest.raises(CheckpointError, match=f"state dict of {N_KEYS} entries; refusing \\(limit {N_KEYS - 1}\\)"):
        checkpoint.open_checkpoint(many)


def test_record_count_limit(tmp_path, monkeypatch):
    from gsvinspect.errors import CheckpointError
    from gsvinspect.load import zip_index
    from gsvinspect.load.checkpoint import open_checkpoint

    path = tmp_path / "records.pth"
    path.write_bytes(hc._eocd_records(60000))       # declares more records than the directory holds
    with pytest.raises(CheckpointError, match="corrupt central directory"):
        open_checkpoint(path)
    # the documented limit itself, on an honest archive with more records than the (lowered) limit
    benign = tmp_path / "benign.pth"
    benign.write_bytes(hc.template_bytes())
    mm, size, _ = zip_index.map_file(benign)
    n = len(zip_index._read_central_directory(benign, mm, size))
    mm.close()
    monkeypatch.setattr(zip_index, "_MAX_RECORDS", n - 1)
    with pytest.raises(CheckpointError, match=f"archive declares {n} records; refusing \\(limit {n - 1}\\)"):
        open_checkpoint(benign)


def test_pickle_size_limit(tmp_path, monkeypatch):
    from gsvinspect.errors import CheckpointError
    from gsvinspect.load import checkpoint

    path = tmp_path / "benign.pth"
    path.write_bytes(hc.template_bytes())
    monkeypatch.setattr(checkpoint, "MAX_PICKLE_BYTES", 10)
    with pytest.raises(CheckpointError, match=r"data\.pkl is \d+ bytes \(limit 10;"):
        checkpoint.open_checkpoint(path)


def test_shared_big_bytes_are_shown_bounded(tmp_path):
    """150 entries sharing one 8 MiB bytes object: info stays small in memory and output."""
    big = b"B" + (8 << 20).to_bytes(4, "little") + b"\x00" * (8 << 20)   # BINBYTES
    entries = [(hc.s(f"blob{k}"), hc.get(9)) for k in range(1, 150)]
    path = tmp_path / "shared.pth"
    path.write_bytes(hc.rezip(hc.pkl(hc.d((hc.s("weight"), hc.benign_weights()), (hc.s("blob0"), big + hc.put(9)),
                                          *entries))))
    for argv in (["info", str(path)], ["info", "--json", str(path)]):
        rc, out, err, peak = hc.run_cli_measured(argv, cwd=tmp_path)
        assert rc == 0, err
        assert len(out) < 100_000, len(out)
        assert peak < 200, peak  # MiB: one copy of the 8 MiB object, not 150 reprs of it
