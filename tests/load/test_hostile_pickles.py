"""Malicious pickles never run: every command refuses them, names the global, leaves no marker.

Each corpus file (tests/hostile_corpus.py) holds real tensors and a payload that would create a
marker file (or do worse) if any loader executed it; both a plain `PK` zip and a GPT-SoVITS
`05`-headered one are built. The commands run in child processes (one process per batch),
and afterwards no marker may exist.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import hostile_corpus as hc

COMMANDS = ("info", "ls", "diff-ft", "diff-pre", "export")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile")
    benign = work / "benign.pth"
    benign.write_bytes(hc.template_bytes())
    cases = []
    for p in hc.PAYLOADS:
        for headered in (False, True):
            path, marker = hc.write_hostile(p, work, headered=headered)
            cases.append((p, headered, path, marker))
    return work, benign, cases


def _argv(cmd: str, path, benign, work) -> list[str]:
    out = str(work / f"OUT_{path.stem}_{cmd}.pth")
    return {
        "info": ["info", str(path)],
        "ls": ["ls", str(path)],
        "diff-ft": ["diff", str(benign), str(path), "--no-stats"],
        "diff-pre": ["diff", str(path), str(benign), "--no-stats"],
        "export": ["export", str(benign), str(path), "-o", out],
    }[cmd]


def _markers(work):
    return sorted(p.name for p in work.iterdir() if p.name.startswith("MARKER"))


def test_corpus_is_big_enough_and_covers_the_attack_kinds():
    names = {p.name for p in hc.PAYLOADS}
    assert len(hc.PAYLOADS) >= 12
    for must in ("os_system", "subprocess_popen", "builtins_eval", "builtins_exec", "getattr_import_chain",
                 "runpy_run_path", "importlib_antigravity", "webbrowser_open", "partial_nested_torch_load",
                 "storage_load_from_bytes", "build_setstate", "inst_opcode", "obj_opcode", "stack_global_memo"):
        assert must in names


def test_every_command_refuses_every_payload(corpus):
    work, benign, cases = corpus
    jobs, meta = [], []
    for p, headered, path, _marker in cases:
        for cmd in COMMANDS:
            jobs.append(_argv(cmd, path, benign, work))
            meta.append((p, headered, path, cmd))
    results = hc.run_cli_batch(jobs, cwd=work, env=hc.hostile_env(work))
    failures = []
    for (p, headered, path, cmd), (rc, err, _out) in zip(meta, results):
        lines = err.strip().splitlines()
        ok = (rc == 3 and len(lines) == 1 and str(path) in lines[0] and p.expect in lines[0]
              and "Traceback" not in err)
        if not ok:
            failures.append(f"{p.name} {'05' if headered else 'PK'} {cmd}: rc={rc} {err.strip()[:300]}")
    assert not failures, "\n".join(failures)
    assert _markers(work) == []
    assert not any(work.glob("OUT_*")), "export wrote an output from a refused input"
    assert not (work / "gsv-hostile-url").exists()


@pytest.mark.parametrize("name", ["os_system", "build_setstate", "partial_nested_torch_load"])
@pytest.mark.parametrize("headered", [False, True], ids=["PK", "05"])
def test_real_cli_process_refuses_with_one_line(corpus, name, headered):
    work, _benign, cases = corpus
    p, _, path, _marker = next(c for c in cases if c[0].name == name and c[1] == headered)
    proc = subprocess.run([sys.executable, "-m", "gsvinspect", "info", str(path)], capture_output=True, text=True,
                          cwd=work, env=hc.hostile_env(work), timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gsvinspect: error: ") and str(path) in lines[0]
    assert p.expect in lines[0] and "nothing was executed" in lines[0]
    assert _markers(work) == []
    dbg = subprocess.run([sys.executable, "-m", "gsvinspect", "info", "--debug", str(path)], capture_output=True,
                         text=True, cwd=work, env=hc.hostile_env(work), timeout=60)
    assert dbg.returncode != 0 and "Traceback" in dbg.stderr and "RefusedGlobalError" in dbg.stderr
    assert _markers(work) == []


def test_payloads_would_really_run_under_plain_pickle(tmp_path):
    """The corpus is not toothless: the simplest payload does create its marker when unpickled.

    Only this os.system payload (a `touch` in tmp_path) is executed, by the stdlib unpickler,
    never by gsvinspect.
    """
    import pickle

    marker = tmp_path / "MARKER_control"
    pickle.loads(hc.pkl(hc.call(hc.g("os", "system"), hc.s(f"touch {marker}"))))
    assert marker.exists()


def test_headered_payload_refused_in_process_too(corpus):
    from gsvinspect.load.checkpoint import open_checkpoint
    from gsvinspect.errors import RefusedGlobalError

    work, _benign, cases = corpus
    for p, headered, path, _marker in cases:
        try:
            open_checkpoint(path)
        except RefusedGlobalError as exc:
            assert p.expect in str(exc)
            assert exc.global_name and exc.global_name in str(exc)
        except Exception as exc:  # corrupt before any global (STACK_GLOBAL with a str subclass)
            from gsvinspect.errors import CheckpointError

            assert isinstance(exc, CheckpointError) and p.expect in str(exc), (p.name, exc)
        else:
            pytest.fail(f"{p.name} opened")
    assert _markers(work) == []


def test_allow_listed_classes_are_inert_placeholders_and_listed(tmp_path):
    path = tmp_path / "placeholders.pth"
    path.write_bytes(hc.rezip(hc.placeholder_pickle()))
    proc = subprocess.run([sys.executable, "-m", "gsvinspect", "info", "--globals", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for module, name in hc.HARMLESS_CLASSES:
        assert f"{module}.{name}" in proc.stdout
    # --globals lists every global, the allowed ones too (not only the placeholders info always shows)
    for allowed in ("torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "collections.OrderedDict"):
        assert allowed in proc.stdout, allowed
    from gsvinspect.load.checkpoint import open_checkpoint
    from gsvinspect.load.safe_unpickle import Opaque

    already = {m for m in ("utils", "lightning_fabric") if m in sys.modules}   # another test may import lightning
    with open_checkpoint(path) as ck:
        assert set(ck.opaque) >= {f"{m}.{n}" for m, n in hc.HARMLESS_CLASSES}
        cfg = ck.root["config"]
        assert isinstance(cfg, Opaque) and cfg.fullname == "utils.HParams"
        assert cfg.as_plain() == {"train": {"lr": 1e-4}, "sr": 32000}
        assert ck.root["output_dir"].as_plain() == "/data/logs/ckpt"
        assert ck.root["args"].as_plain() == {"epochs": 8}
        assert ck.root["hparams"].as_plain() == {"lr": 2e-4}
        assert ck.array(hc.TEMPLATE_KEYS[0]).tolist() == [[float(4 * r + c) for c in range(4)] for r in range(4)]
    for mod in ("utils", "lightning_fabric"):
        assert mod in already or mod not in sys.modules, f"opening imported {mod}"


def test_unknown_class_makes_the_file_unsafe_but_globals_still_lists_everything(tmp_path):
    """A class off the allow-list (even one that looks harmless) is refused; --globals shows it all."""
    path = tmp_path / "thing.pth"
    path.write_bytes(hc.rezip(hc.placeholder_pickle(hc.s("thing") + hc.call(hc.g("mymodule", "Thing"), hc.i(1)))))
    info = subprocess.run([sys.executable, "-m", "gsvinspect", "info", str(path)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert info.returncode == 3 and info.stdout == ""
    assert info.stderr.count("\n") == 1 and "mymodule.Thing" in info.stderr and "unsafe" in info.stderr
    listed = subprocess.run([sys.executable, "-m", "gsvinspect", "info", "--globals", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert listed.returncode == 3 and "mymodule.Thing" in listed.stderr
    for name in ("mymodule.Thing", "utils.HParams", "torch._utils._rebuild_tensor_v2", "collections.OrderedDict"):
        assert name in listed.stdout, (name, listed.stdout)
    assert "mymodule" not in sys.modules


@pytest.mark.parametrize("header", [b"PK", b"05"])
def test_trust_loads_a_benign_file_with_plain_torch_load(tmp_path, header):
    path = tmp_path / "trusted.pth"
    path.write_bytes(hc.rezip(hc.trust_benign_pickle(), header=header))
    proc = subprocess.run([sys.executable, "-m", "gsvinspect", "info", "--trust", "--json", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import json

    d = json.loads(proc.stdout)
    assert d["tensors"] == 2 and d["container"] == "trusted-pickle"
    assert "PosixPath" in d["extras"]["output_dir"] or "/data/logs" in d["extras"]["output_dir"]
    safe = subprocess.run([sys.executable, "-m", "gsvinspect", "info", "--json", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert safe.returncode == 0 and json.loads(safe.stdout)["opaque_classes"] == ["pathlib.PosixPath"]


def _tui_available() -> bool:
    try:
        import gsvinspect_tui.app  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _tui_available(), reason="gsvinspect_tui is not installed")
@pytest.mark.parametrize("name", ["os_system", "partial_nested_torch_load", "allowed_module_attr_chain"])
async def test_tui_refuses_payload_and_names_the_global(corpus, name):
    from gsvinspect_tui.app import GsvInspectApp

    work, benign, cases = corpus
    for p, headered, path, _marker in (c for c in cases if c[0].name == name):
        app = GsvInspectApp(benign, path, stats=False)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(3):
                await app.workers.wait_for_complete()
                await pilot.pause()
            assert app.load_error is not None, (name, headered)
            assert p.expect in app.load_error and str(path) in app.load_error
    assert _markers(work) == []
