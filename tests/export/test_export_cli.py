"""`gsvinspect export`: plan table / JSON, exit codes, rules files, refusals."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from gsvinspect import synth
from gsvinspect.cli.main import main
from helpers_export import SCALE


@pytest.fixture(scope="module")
def gpt_pair(tmp_path_factory):
    return synth.write_pair(tmp_path_factory.mktemp("cli"), "gpt", "v2", scale=SCALE, optimizer="light")


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_dry_run_json_describes_plan_and_writes_nothing(gpt_pair, tmp_path, capsys):
    pre, ft = gpt_pair
    out = tmp_path / "o.ckpt"
    rc = main(["export", str(pre), str(ft), "-o", str(out), "--dry-run", "--json", "--alpha", "0.7"])
    data = _json(capsys)
    assert rc == 0 and not out.exists()
    assert data["dry_run"] is True and data["ok"] is True
    assert data["counts"]["written"] == 295 and data["counts"]["from_ft"] == 295
    assert data["counts"]["filled_from_pre"] == 0 and data["dropped"] == []
    assert data["dtype"]["changes"] == {"float32->float16": 295}
    assert data["scaler"] == {"where": ["MixedPrecision"], "from": "fine-tuned"}
    assert data["layout"] == "gpt-pretrained" and data["header"] == "PK"
    assert [e["name"] for e in data["entries"]] == ["weight", "config", "MixedPrecision"]
    assert data["alphas_used"] == {"0.7": 295}
    assert data["estimated_size"] > 0


def test_dry_run_table(gpt_pair, capsys):
    pre, ft = gpt_pair
    assert main(["export", str(pre), str(ft), "--dry-run"]) == 0
    text = capsys.readouterr().out
    for label in ("keys written", "filled from pretrained", "dropped", "dtype", "scaler state", "output layout",
                  "size"):
        assert label in text
    assert "kept under 'MixedPrecision'" in text


def test_export_json_report(gpt_pair, tmp_path, capsys):
    pre, ft = gpt_pair
    out = tmp_path / "新的.ckpt"
    assert main(["export", str(pre), str(ft), "-o", str(out), "--json", "--tensors"]) == 0
    data = _json(capsys)
    assert len(data["tensors"]) == 295 and {t["from"] for t in data["tensors"]} == {"ft"}
    assert data["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert data["size"] == out.stat().st_size
    assert data["verdict"]["ok"] is True and data["verdict"]["intended"] == "v2"
    assert data["verified_tensors"] == 295
    assert data["manifest_check"]["missing"] == [] and data["manifest_check"]["unexpected"] == []
    # the table form too, on a second run with --force
    assert main(["export", str(pre), str(ft), "-o", str(out), "--force"]) == 0
    text = capsys.readouterr().out
    assert "sha256" in text and "GPT-SoVITS reads it as" in text and "OK as v2" in text


def test_exit_codes(gpt_pair, tmp_path, capsys):
    pre, ft = gpt_pair
    assert main(["export", str(pre), str(ft)]) == 2  # no -o
    out = tmp_path / "x.ckpt"
    out.write_bytes(b"keep")
    assert main(["export", str(pre), str(ft), "-o", str(out)]) == 3
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep"
    assert main(["export", str(pre), str(ft), "-o", str(tmp_path / "y.ckpt"), "--alpha", "2"]) == 2
    assert main(["export", str(pre), str(ft), "-o", str(tmp_path / "z.ckpt"), "--layout", "sovits-weights"]) == 3
    assert not (tmp_path / "z.ckpt").exists()
    assert main(["export", str(pre), str(ft), "--layout", "sovits-weights", "--dry-run"]) == 1
    assert main(["export", str(tmp_path / "missing.ckpt"), str(ft), "--dry-run"]) == 3


def test_trust_loads_with_torch_and_writes_the_same_bytes(gpt_pair, tmp_path, capsys):
    """--trust opens the inputs with plain torch.load, so mixing and casting run in torch instead
    of numpy: the file written must be the same, byte for byte."""
    pre, ft = gpt_pair
    digests = []
    for extra in ([], ["--trust"]):
        out = tmp_path / f"o{len(extra)}.ckpt"
        assert main(["export", str(pre), str(ft), "-o", str(out), "--alpha", "0.7", "--json", *extra]) == 0
        data = _json(capsys)
        assert data["alphas_used"] == {"0.7": 295} and data["verdict"]["ok"] is True
        digests.append(data["sha256"])
    assert digests[0] == digests[1]


def test_rules_file_with_alphas(gpt_pair, tmp_path, capsys):
    pre, ft = gpt_pair
    rules = tmp_path / "r.toml"
    rules.write_text('[alpha]\n"model.ar_text_embedding" = 0.25\ndefault = 1.0\n', encoding="utf-8")
    out = tmp_path / "r.ckpt"
    assert main(["export", str(pre), str(ft), "-o", str(out), "--rules", str(rules), "--json"]) == 0
    data = _json(capsys)
    assert data["alphas_used"] == {"0.25": 1}
    assert data["alpha_by_module"]["model.ar_text_embedding"] == 0.25
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nrename = '('\nto = 'x'\n")
    assert main(["export", str(pre), str(ft), "-o", str(out), "--rules", str(bad), "--force"]) == 2


def test_config_keep_writes_hparams_back(tmp_path, capsys, monkeypatch):
    pre, ft = synth.write_pair(tmp_path / "p", "sovits-G-export", "v1", scale=SCALE)
    out_plain, out_keep = tmp_path / "plain.pth", tmp_path / "keep.pth"
    assert main(["export", str(pre), str(ft), "-o", str(out_plain)]) == 0
    assert main(["export", str(pre), str(ft), "-o", str(out_keep), "--config", "keep"]) == 0
    capsys.readouterr()
    plain = torch.load(out_plain, weights_only=True)  # plain dict config: no foreign globals
    assert isinstance(plain["config"], dict) and plain["config"]["model"]["version"] == "v1"
    with pytest.raises(Exception):
        torch.load(out_keep, weights_only=True)  # utils.HParams, exactly like upstream's exports
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "utils.py").write_text("class HParams:\n    pass\n")
    monkeypatch.syspath_prepend(str(stub))
    import sys

    monkeypatch.delitem(sys.modules, "utils", raising=False)
    try:
        kept = torch.load(out_keep, weights_only=False)
    finally:
        sys.modules.pop("utils", None)
    assert type(kept["config"]).__module__ == "utils" and kept["config"].model.version == "v1"


def test_rules_weights_entry_picks_the_state_dict_exported(tmp_path):
    """A training file holding two state dicts: the rules' weights_entry decides which one is
    exported (as it decides which one diff shows); the library refuses a plan made otherwise."""
    import subprocess
    import sys

    from gsvinspect.load.checkpoint import open_checkpoint
    from gsvinspect.export.plan import plan_export
    from gsvinspect.align.rules import load_rules

    pre_p, ft_p = synth.write_pair(tmp_path / "d", "sovits-D", "v1", scale=SCALE)
    real = torch.load(ft_p, map_location="cpu", weights_only=True)["model"]
    decoy = {k: torch.zeros_like(v) for k, v in real.items()}
    two = tmp_path / "D_two.pth"
    torch.save({"model": decoy, "ema_model": real, "iteration": 9}, two)
    rules = tmp_path / "entry.toml"
    rules.write_text('weights_entry = "ema_model"\n')

    def export(*extra):
        out = tmp_path / f"out{len(extra)}.pth"
        proc = subprocess.run([sys.executable, "-m", "gsvinspect", "export", str(pre_p), str(two), "-o", str(out),
                               "--json", *extra], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return torch.load(out, map_location="cpu", weights_only=True)["weight"]

    with_rules = export("--rules", str(rules))
    assert all(torch.equal(with_rules[k], real[k].to(with_rules[k].dtype)) for k in real)
    assert any(v.abs().sum() > 0 for v in with_rules.values())
    without = export()
    assert all(v.abs().sum() == 0 for v in without.values())    # the file's own choice: "model"

    with open_checkpoint(pre_p) as pre, open_checkpoint(two) as ft:
        plan = plan_export(pre, ft, rules=load_rules(rules))
    assert any("weights_entry is 'ema_model'" in p and "D_two.pth" in p for p in plan.problems)
