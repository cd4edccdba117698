"""Suite-wide setup: the scan cache lives in a folder of this session, never in the real home.

Set in the environment (not just monkeypatched) so the CLI children the tests start inherit it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE_DIR = tempfile.mkdtemp(prefix="gsvinspect-test-cache-")
os.environ["GSVINSPECT_CACHE_DIR"] = _CACHE_DIR
os.environ.pop("GSVINSPECT_NO_CACHE", None)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
