"""Issue 12 point 1: an allow-list, not a deny-list; each allowed global only with its own opcodes.

The gadget generator tries every callable of a list of standard-library (and numpy/torch) modules
as a global in a pickle, called (REDUCE), instantiated (NEWOBJ) and as a BUILD state setter, in a
child process with an audit hook and a marker file as canaries. Every one off the allow-list must
be refused as unsafe, naming it; nothing may run. A sample of them, hidden beside real weights,
goes through every command.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import hostile_corpus as hc

GADGET_MODULES = (
    "os", "posix", "subprocess", "builtins", "_operator", "operator", "functools", "typing", "dataclasses",
    "doctest", "imaplib", "_osx_support", "_pyio", "io", "atexit", "time", "shutil", "pickle", "_pickle", "pty",
    "runpy", "importlib", "code", "codeop", "pdb", "bdb", "webbrowser", "socket", "sys", "codecs", "_codecs",
    "ctypes", "multiprocessing", "threading", "_thread", "signal", "tempfile", "glob", "pathlib", "argparse",
    "collections", "copyreg", "types", "inspect", "ast", "marshal", "zipimport", "pkgutil", "asyncio", "logging",
    "linecache", "tokenize", "timeit", "trace", "cProfile", "profile", "platform", "sysconfig", "shelve", "dbm",
    "sqlite3", "tarfile", "zipfile", "smtplib", "ftplib", "http.client", "urllib.request", "xmlrpc.client",
    "select", "selectors", "mmap", "resource", "fcntl", "gc", "weakref", "copy", "contextlib", "string",
    "numpy", "numpy.lib.npyio", "torch", "torch.serialization", "torch.storage", "torch._utils",
)

# what the child does: every callable x {REDUCE, NEWOBJ, BUILD setter}, audit hook + marker as canaries
_CHILD = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
import hostile_corpus as hc
from gsvinspect.errors import CheckpointError, RefusedGlobalError
from gsvinspect.load.allowlist import ALLOWED
from gsvinspect.load.safe_unpickle import safe_loads

marker = sys.argv[2]
events = []
CANARY = ("os.system", "subprocess.Popen", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "exec", "compile",
          "webbrowser.open", "socket.connect", "ctypes.dlopen", "os.remove", "os.rename", "shutil.", "pty.spawn",
          "os.kill", "signal.", "sys._getframe", "object.__setattr__", "open")
armed = [False]
def hook(event, args):
    if armed[0] and event.startswith(CANARY):
        events.append(event)
sys.addaudithook(hook)

def forms(mod, name):
    g = hc.g(mod, name)
    arg = hc.s("touch " + marker)
    return {
        "REDUCE": hc.call(g, arg),
        "NEWOBJ": g + hc.t(arg) + b"\x81",
        "BUILD-setter": (hc.call(hc.g("collections", "OrderedDict")) + hc.t(hc.NONE, hc.d((hc.s("__setstate__"), g)))
                         + hc.BUILD + arg + hc.BUILD),
    }

out = {"tried": 0, "refused_unsafe": 0, "refused_other": 0, "loaded": [], "misnamed": [], "canary": [],
       "modules": 0, "callables": 0, "allowed_tried": 0}
for modname in json.loads(sys.argv[3]):
    try:
        mod = importlib.import_module(modname)
    except Exception:
        continue
    out["modules"] += 1
    for name in sorted(dir(mod)):
        try:
            obj = getattr(mod, name)
        except Exception:
            continue
        if not callable(obj) or "\n" in name:
            continue
        out["callables"] += 1
        allowed = (modname, name) in ALLOWED
        out["allowed_tried"] += allowed
        for form, expr in forms(modname, name).items():
            data = hc.pkl(hc.d((hc.s("config"), expr)))
            out["tried"] += 1
            armed[0] = True
            try:
                safe_loads(data, "gadget.pth", None)
            except RefusedGlobalError as exc:
                out["refused_unsafe"] += 1
                if not allowed and exc.global_name != modname + "." + name:
                    out["misnamed"].append([modname, name, form, exc.global_name])
            except CheckpointError:
                out["refused_other"] += 1
                if not allowed:
                    out["misnamed"].append([modname, name, form, "not refused as unsafe"])
            else:
                if not allowed:
                    out["loaded"].append([modname, name, form])
            finally:
                armed[0] = False
            if events:
                out["canary"].append([modname, name, form, events[:3]])
                del events[:]
# control: the same canary does fire when a plain unpickler runs one of these
import pickle
armed[0] = True
pickle.loads(hc.pkl(hc.call(hc.g("os", "system"), hc.s("true"))))
armed[0] = False
out["control_events"] = events[:]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def gadget_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("gadgets")
    marker = work / "MARKER_gadget"
    tests_dir = str(hc.Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", _CHILD, tests_dir, str(marker), json.dumps(GADGET_MODULES)],
                          capture_output=True, text=True, cwd=work, env=hc.hostile_env(work), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["marker_exists"] = marker.exists() or any(work.glob("MARKER*"))
    return result


def test_every_stdlib_callable_off_the_list_is_refused_and_nothing_runs(gadget_run):
    r = gadget_run
    print(f"gadgets: {r['modules']} modules, {r['callables']} callables, {r['tried']} pickles tried, "
          f"{r['refused_unsafe']} refused as unsafe, {r['refused_other']} refused otherwise")
    assert r["modules"] >= 70 and r["callables"] >= 3000 and r["tried"] == 3 * r["callables"]
    assert r["loaded"] == [], r["loaded"][:20]
    assert r["misnamed"] == [], r["misnamed"][:20]
    assert r["canary"] == [], r["canary"][:20]
    assert not r["marker_exists"]
    assert "os.system" in r["control_events"]  # the canary is not deaf
    # the few allow-listed callables among them (set, OrderedDict, PosixPath, torch.Size...) were tried too
    assert r["allowed_tried"] >= 15


def test_issue_examples_are_refused_by_every_command(tmp_path):
    """The callables the issue saw pass as harmless, beside real weights: info, ls, diff (both sides),
    check, export and export --layout same each say unsafe in one line naming it, exit 3."""
    examples = [("_osx_support", "_read_output"), ("imaplib", "IMAP4_stream"), ("doctest", "debug_script"),
                ("typing", "_eval_type"), ("dataclasses", "_create_fn"), ("_operator", "call"),
                ("functools", "reduce"), ("_pyio", "open"), ("atexit", "register"), ("time", "sleep"),
                ("mymodule", "Thing")]
    benign = tmp_path / "benign.pth"
    benign.write_bytes(hc.template_bytes())
    jobs, meta = [], []
    for mod, name in examples:
        marker = tmp_path / f"MARKER_{name}"
        path = tmp_path / f"{mod}_{name}.pth"
        payload = hc.call(hc.g(mod, name), hc.s(f"touch {marker}"))
        path.write_bytes(hc.rezip(hc.pkl(hc.d((hc.s("weight"), hc.benign_weights()),
                                              (hc.s("config"), hc.d((hc.s("hook"), payload)))))))
        out = str(tmp_path / f"OUT_{name}.pth")
        for argv in (["info", str(path)], ["ls", str(path)], ["diff", str(benign), str(path), "--no-stats"],
                     ["diff", str(path), str(benign), "--no-stats"], ["check", str(path)],
                     ["export", str(benign), str(path), "-o", out],
                     ["export", str(benign), str(path), "-o", out, "--layout", "same"]):
            jobs.append(argv)
            meta.append(f"{mod}.{name}")
    results = hc.run_cli_batch(jobs, cwd=tmp_path, env=hc.hostile_env(tmp_path))
    bad = []
    for argv, name, (rc, err, _out) in zip(jobs, meta, results):
        lines = err.strip().splitlines()
        if not (rc == 3 and len(lines) == 1 and name in lines[0] and "unsafe" in lines[0]):
            bad.append(f"{argv[0]} {name}: rc={rc} {err.strip()[:200]}")
    assert not bad, "\n".join(bad)
    assert not list(tmp_path.glob("MARKER*")) and not list(tmp_path.glob("OUT_*"))


def _weights_and(entry: bytes) -> bytes:
    return hc.rezip(hc.pkl(hc.d((hc.s("weight"), hc.benign_weights()), (hc.s("config"), entry))))


HPARAMS_NEWOBJ = hc.g("utils", "HParams") + hc.EMPTY_TUPLE + b"\x81" + hc.d((hc.s("sr"), hc.i(32000))) + hc.BUILD

MISUSE = {
    # allowed global, wrong opcode or arguments -> refused as unsafe, naming the global
    "hparams_reduce": (hc.call(hc.g("utils", "HParams"), hc.s("x")), "utils.HParams"),
    "hparams_reduce_no_args": (hc.call(hc.g("utils", "HParams")), "utils.HParams"),
    "hparams_newobj_args": (hc.g("utils", "HParams") + hc.t(hc.s("x")) + b"\x81", "utils.HParams"),
    "hparams_slot_state": (hc.g("utils", "HParams") + hc.EMPTY_TUPLE + b"\x81"
                           + hc.t(hc.NONE, hc.d((hc.s("__class__"), hc.s("x")))) + hc.BUILD, "utils.HParams"),
    "path_build": (hc.call(hc.g("pathlib", "PosixPath"), hc.s("/x")) + hc.d((hc.s("a"), hc.i(1))) + hc.BUILD,
                   "pathlib.PosixPath"),
    "path_of_non_string": (hc.call(hc.g("pathlib", "PosixPath"), hc.i(1)), "pathlib.PosixPath"),
    "storage_type_called": (hc.call(hc.g("torch", "FloatStorage"), hc.i(10 ** 9)), "torch.FloatStorage"),
    "parameter_called": (hc.call(hc.g("torch.nn.parameter", "Parameter")), "torch.nn.parameter.Parameter"),
    "bare_function_value": (hc.g("torch._utils", "_rebuild_tensor_v2"), "_rebuild_tensor_v2"),
    "bare_class_value": (hc.g("utils", "HParams"), "HParams"),
    "codecs_other_codec": (hc.call(hc.g("_codecs", "encode"), hc.s("x"), hc.s("rot13")), "_codecs.encode"),
    "bytearray_punycode": (hc.call(hc.g("builtins", "bytearray"), hc.s("a" * 30000), hc.s("punycode")),
                           "builtins.bytearray"),
    "bytearray_size": (hc.call(hc.g("builtins", "bytearray"), hc.i(10 ** 12)), "builtins.bytearray"),
    "set_of_range": (hc.call(hc.g("builtins", "set"), hc.call(hc.g("builtins", "range"), hc.i(10 ** 12))),
                     "builtins.range"),
    "numpy_object_dtype": (hc.call(hc.g("numpy", "dtype"), hc.s("O8")), "numpy.dtype"),
}


@pytest.mark.parametrize("name", sorted(MISUSE))
def test_allowed_globals_are_refused_when_used_another_way(tmp_path, name):
    from gsvinspect.errors import RefusedGlobalError
    from gsvinspect.load.checkpoint import open_checkpoint

    expr, expect = MISUSE[name]
    path = tmp_path / f"{name}.pth"
    path.write_bytes(_weights_and(expr))
    with pytest.raises(RefusedGlobalError) as info:
        open_checkpoint(path)
    assert expect in str(info.value) and "unsafe" in str(info.value), str(info.value)


def test_allowed_classes_load_the_way_lightning_and_gpt_sovits_pickle_them(tmp_path):
    """The same classes, pickled by the real pickler (NEWOBJ + BUILD, REDUCE of path parts), load."""
    import argparse
    import io
    import pathlib
    import pickle

    from gsvinspect.load.safe_unpickle import Opaque, safe_loads

    ns = argparse.Namespace(lr=1e-4, out=pathlib.PurePosixPath("/logs/x"))
    data = pickle.dumps({"args": ns, "p": pathlib.PurePosixPath("/a/b"), "s": {1, 2}, "b": bytearray(b"xy")},
                        protocol=2)
    root, up = safe_loads(data, "mem", None)
    assert isinstance(root["args"], Opaque) and root["args"].as_plain() == {"lr": 1e-4, "out": "/logs/x"}
    assert root["p"].as_plain() == "/a/b" and root["s"] == {1, 2} and root["b"] == bytearray(b"xy")
    ops = [op.name for op, _a, _p in __import__("pickletools").genops(io.BytesIO(data))]
    assert "NEWOBJ" in ops and "REDUCE" in ops
    assert set(up.opaque_seen) == {"argparse.Namespace", "pathlib.PurePosixPath"}
