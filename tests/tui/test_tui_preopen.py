"""`gsvinspect open` checks the files before the app starts, and the app takes those opened files:
a file is opened once (with --trust, its code runs once), and a file changed in between is reopened."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gsvinspect.load import checkpoint as ckmod  # noqa: E402


def test_the_app_takes_the_prechecked_file_and_a_changed_file_is_reopened(tmp_path, monkeypatch):
    path = tmp_path / "a.pth"
    torch.save({"weight": {"w": torch.zeros(3)}}, path)
    opened = []
    real = ckmod.open_checkpoint
    monkeypatch.setattr(ckmod, "open_checkpoint", lambda p, **kw: opened.append(str(p)) or real(p, **kw))
    ckmod.preopen(path)
    first = ckmod.open_with_entry(path)
    assert len(opened) == 1 and list(first.weights) == ["w"]       # no second open
    ckmod.preopen(path)
    torch.save({"weight": {"w": torch.zeros(3), "v": torch.ones(1)}}, path)   # changed before the app opened it
    second = ckmod.open_with_entry(path)
    assert len(opened) == 3 and list(second.weights) == ["w", "v"]
    ckmod.preopen(path)
    ckmod.open_with_entry(path)                                    # takes it...
    ckmod.open_with_entry(path)                                    # ...once: the next open reads the file
    assert len(opened) == 5
