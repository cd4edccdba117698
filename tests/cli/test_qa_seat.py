"""Problems found by using the product from the user's seat (README commands on the demo set and on
generated GPT-SoVITS files), each as a subprocess run that failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def gsv(*argv, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    res = subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, argv)], capture_output=True, text=True,
                         env=env, timeout=timeout)
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    return res


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa-demo")
    res = gsv("demo", "--no-tui", "--dir", root)
    assert res.returncode == 0, res.stderr
    return root, res.stdout


def test_demo_summary_counts_read_like_diffs_headline(demo_dir):
    """`demo --no-tui` said "keys: 295 dtype-differs" for a pair `diff` calls "matched: 295 (295 differ
    only in dtype)": a dtype-only pair is matched everywhere (issue 13 point 9)."""
    _, out = demo_dir
    keys = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(("keys:", "suggested rules"))]
    assert "keys: 295 matched (295 differ only in dtype)" in keys, keys
    assert any(k.endswith(": 776 matched (776 differ only in dtype)") for k in keys), keys
    assert not any("dtype-differs" in k for k in keys), keys
