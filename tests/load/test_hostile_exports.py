"""Issue 12 point 2: nothing unsafe is ever written.

Every hostile file goes through `export` and `export --layout same`; the refused ones must leave no
output, and every output that is written (allowed placeholders kept with `--config keep`, made
plain by default) is loaded with `torch.load(weights_only=False)` in a child process with canaries:
an audit hook for process/code events, marker files for payloads, and a stand-in `utils.HParams`
whose ``__init__`` leaves a marker, so an export that turned the dormant NEWOBJ into a REDUCE (a
call) would be caught.
"""

from __future__ import annotations

import json
import pickletools
import subprocess
import sys
import zipfile

import hostile_corpus as hc

STUB_UTILS = '''
import os
class HParams:
    def __init__(self, *args, **kwargs):      # a REDUCE (call) would run this; NEWOBJ never does
        open(os.environ["GSV_CANARY_INIT"], "w").close()
        self.__dict__.update(kwargs)
'''
STUB_LIGHTNING = '''
class AttributeDict(dict):
    pass
'''

_LOADER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
events = []
CANARY = ("os.system", "subprocess.Popen", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "exec", "compile",
          "webbrowser.open", "socket.connect", "ctypes.dlopen", "pty.spawn", "os.kill")
armed = [False]
def _imported(event, args):
    # importing a module (torch's lazy imports, the stand-in utils) executes its file: not a payload
    if event == "exec":
        return getattr(args[0], "co_filename", "").endswith(".py")
    if event == "compile":
        return str(args[1]).endswith(".py")
    return False
def hook(event, args):
    if armed[0] and event.startswith(CANARY) and not _imported(event, args):
        events.append(event)
sys.addaudithook(hook)
import io, torch
from collections import OrderedDict
warm = io.BytesIO()   # torch.load's one-time lazy work happens here, before the canary is armed
torch.save({"w": OrderedDict(a=torch.ones(1)), "c": {"x": 1}}, warm)
warm.seek(0)
torch.load(warm, weights_only=False)
out = {}
for path in json.loads(sys.stdin.read()):
    armed[0] = True
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        out[path] = {"ok": True, "types": sorted({type(v).__name__ for v in obj.values()}), "events": events[:]}
    except Exception as exc:
        out[path] = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)[:200], "events": events[:]}
    armed[0] = False
    del events[:]
# control: the canary hears a payload run by the same torch.load
armed[0] = True
exec("1 + 1")
armed[0] = False
out["control"] = events[:]
print(json.dumps(out))
"""


def _stubs(work):
    stub = work / "stubs"
    (stub / "lightning_fabric" / "utilities").mkdir(parents=True)
    (stub / "utils.py").write_text(STUB_UTILS)
    for pkg in ("lightning_fabric", "lightning_fabric/utilities"):
        (stub / pkg / "__init__.py").write_text("")
    (stub / "lightning_fabric" / "utilities" / "data.py").write_text(STUB_LIGHTNING)
    return stub


def test_exports_of_hostile_files_never_run_anything(tmp_path):
    work = tmp_path
    benign = work / "benign.pth"
    benign.write_bytes(hc.template_bytes())
    inputs = {}
    for p in hc.PAYLOADS:
        for headered in (False, True):
            path, _marker = hc.write_hostile(p, work, headered=headered)
            inputs[path.name] = (path, True)
    allowed = work / "allowed_classes.pth"
    allowed.write_bytes(hc.rezip(hc.placeholder_pickle()))
    inputs[allowed.name] = (allowed, False)
    armed = work / "newobj_with_unknown_class.pth"   # dormant NEWOBJ of a class off the list
    armed.write_bytes(hc.rezip(hc.placeholder_pickle(
        hc.s("evil") + hc.g("mymodule", "Evil") + hc.EMPTY_TUPLE + b"\x81" + hc.d((hc.s("cmd"), hc.s("x"))) + hc.BUILD)))
    inputs[armed.name] = (armed, True)
    jobs, outs = [], []
    for name, (path, _hostile) in inputs.items():
        for variant, extra in (("plain", []), ("keep", ["--config", "keep"]), ("same", ["--layout", "same"])):
            out = work / f"OUT_{variant}_{name}"
            jobs.append(["export", str(benign), str(path), "-o", str(out)] + extra)
            outs.append((name, variant, out))
    results = hc.run_cli_batch(jobs, cwd=work, env=hc.hostile_env(work))
    written = []
    for (name, variant, out), (rc, err, _o) in zip(outs, results):
        hostile = inputs[name][1]
        if hostile:
            assert rc == 3 and not out.exists(), (name, variant, rc, err[:300])
        else:
            assert rc == 0 and out.exists(), (name, variant, rc, err[:300])
            written.append(str(out))
    assert len(written) == 3
    env = hc.hostile_env(work)
    env["PYTHONPATH"] = str(_stubs(work)) + ":" + env["PYTHONPATH"]
    env["GSV_CANARY_INIT"] = str(work / "MARKER_hparams_init")
    proc = subprocess.run([sys.executable, "-c", _LOADER], input=json.dumps(written), capture_output=True,
                          text=True, cwd=work, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout)
    assert "exec" in loaded.pop("control")  # the canary is not deaf
    for path, r in loaded.items():
        assert r["ok"] and r["events"] == [], (path, r)
    assert sorted(p.name for p in work.glob("MARKER*")) == []
    # the kept config really is an HParams again (written back with NEWOBJ, not dropped)
    keep = next(p for p in written if "OUT_keep_" in p)
    assert "HParams" in loaded[keep]["types"]


def test_a_kept_class_stays_newobj_in_the_output(tmp_path):
    """NEWOBJ -> REDUCE arming: the GLOBAL utils.HParams is followed by an empty tuple and NEWOBJ."""
    benign = tmp_path / "benign.pth"
    benign.write_bytes(hc.template_bytes())
    src = tmp_path / "hp.pth"
    src.write_bytes(hc.rezip(hc.placeholder_pickle()))
    out = tmp_path / "out.pth"
    (rc, err, _o), = hc.run_cli_batch([["export", str(benign), str(src), "-o", str(out), "--config", "keep"]],
                                      cwd=tmp_path)
    assert rc == 0, err
    with zipfile.ZipFile(out) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _pos in pickletools.genops(data)]
    uses = [ops[i + 1:i + 4] for i, (name, arg) in enumerate(ops) if name == "GLOBAL" and arg == "utils HParams"]
    assert uses, ops
    memo = ("BINPUT", "LONG_BINPUT", "MEMOIZE", "PUT")
    for after in uses:
        names = [n for n, _a in after if n not in memo]
        assert names[:2] == ["EMPTY_TUPLE", "NEWOBJ"], after


def test_writer_refuses_globals_off_the_list(tmp_path):
    import os
    import pickle

    import pytest
    import torch

    from gsvinspect.export import torch_writer

    for obj in ({"w": torch.ones(2), "f": os.system}, {"w": torch.ones(2), "c": subprocess.Popen},
                {"w": torch.ones(2), "r": range(3)}):
        with pytest.raises(pickle.PicklingError, match="allow-list|refusing"):
            torch_writer.saved_size(obj)
