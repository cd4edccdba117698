"""`gsvinspect diff / check / rules` end to end, on files written the way GPT-SoVITS writes them."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys

import pytest

from gsvinspect.cli.main import main
from gsvinspect.meta import Layout

torch = pytest.importorskip("torch")
synth = pytest.importorskip("gsvinspect.synth")

ANSI = re.compile(r"\x1b\[")

# (pair kind, version) -> what `diff --suggest` must say
PAIRS = {
    ("gpt", "v1"): dict(ok=True, paired=295),
    ("gpt", "v2"): dict(ok=True, paired=295),
    ("gpt-export", "v2"): dict(ok=True, paired=295),
    ("sovits-G", "v1"): dict(ok=True, paired=776),
    ("sovits-G", "v2"): dict(ok=True, paired=776),
    ("sovits-G", "v2Pro"): dict(ok=True, paired=781),
    ("sovits-G", "v2ProPlus"): dict(ok=True, paired=781),
    ("sovits-G", "v3"): dict(ok=True, paired=685),
    ("sovits-G", "v4"): dict(ok=True, paired=685),
    ("sovits-G-export", "v2"): dict(ok=False, paired=673, missing=103, finding="enc-q-missing"),
    ("sovits-G-ddp", "v2"): dict(ok=True, paired=776, rules=1, finding="wrapper-prefix"),
    ("sovits-G-lora", "v3"): dict(ok=False, paired=685, unexpected=176, rules=2, finding="lora-adapters"),
    ("sovits-G-lora", "v4"): dict(ok=False, paired=685, unexpected=176, rules=2, finding="lora-adapters"),
    ("sovits-D", "v1"): dict(ok=True, paired=111),
    ("sovits-D", "v2Pro"): dict(ok=True, paired=147),
}


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return {(k, v): tuple(str(p) for p in synth.write_pair(root / f"{k}-{v}", k, v, scale=32)) for k, v in PAIRS}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_sub(*argv, cwd=None) -> subprocess.CompletedProcess:
    """The real CLI as a script runs it: piped, no forced colours, not under textual-serve."""
    env = dict(os.environ, COLUMNS="200")
    env.pop("FORCE_COLOR", None)
    env.pop("TEXTUAL_DRIVER", None)
    return subprocess.run([sys.executable, "-m", "gsvinspect", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.mark.parametrize("pair", list(PAIRS), ids=lambda p: f"{p[0]}-{p[1]}")
def test_diff_suggest_every_real_pairing(pairs, capsys, pair):
    pre, ft = pairs[pair]
    want = PAIRS[pair]
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--suggest", "--json", "--no-stats")
    d = json.loads(out)
    assert d["schema"] == "gsvinspect.diff/1"
    assert code == (0 if want["ok"] else 1)
    assert d["ok"] is want["ok"]
    c = d["counts"]
    assert c["matched"] + c["dtype-differs"] == want["paired"]
    assert c["missing"] == want.get("missing", 0) and c["unexpected"] == want.get("unexpected", 0)
    assert c["shape-differs"] == 0 and c["conflict"] == 0
    assert len(d["rules"]["list"]) == want.get("rules", 0) and d["rules"]["suggested"]
    assert all(not r["dead"] for r in d["rules"]["list"])
    if "finding" in want:
        assert want["finding"] in [f["code"] for f in d["findings"]]
    assert d["stats"] is None


def test_ddp_without_rules_fails_and_user_rules_file_fixes_it(pairs, capsys, tmp_path):
    pre, ft = pairs[("sovits-G-ddp", "v2")]
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--json", "--no-stats")
    assert code == 1 and json.loads(out)["counts"]["unexpected"] == 776
    rules = tmp_path / "ddp.toml"
    rules.write_text("# written by hand\n[[rule]]\nstrip_prefix = 'module.'   # DDP\n")
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--rules", rules, "--json", "--no-stats")
    d = json.loads(out)
    assert code == 0 and d["ok"] and d["rules"]["list"][0]["hits"] == 776 and d["rules"]["list"][0]["line"] == 2
    row = next(r for r in d["rows"] if r["target"] == "dec.conv_pre.weight")
    assert row["ft_key"] == "module.dec.conv_pre.weight" and row["rule"] == 1


def test_rules_suggest_writes_a_file_that_diff_accepts(pairs, tmp_path):
    pre, ft = pairs[("sovits-G-lora", "v4")]
    res = run_sub("rules", "suggest", pre, ft)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "[[rule]]" in text and text.lstrip().startswith("#") and "685 of 685" in text
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    res = run_sub("rules", "check", rules, pre, ft)
    assert res.returncode == 0 and "543 keys" in res.stdout and "176 keys" in res.stdout
    res = run_sub("diff", pre, ft, "--rules", rules, "--json", "--no-stats")
    d = json.loads(res.stdout)
    assert res.returncode == 1 and d["counts"]["missing"] == 0 and d["counts"]["unexpected"] == 176
    unexpected = [r["target"] for r in d["rows"] if r["status"] == "unexpected"]
    assert all(".lora_A." in k or ".lora_B." in k for k in unexpected)


def test_enc_q_story_in_text_output_piped_without_ansi(pairs):
    pre, ft = pairs[("sovits-G-export", "v2")]
    res = run_sub("diff", pre, ft, "--only-problems", "--top", "5")
    assert res.returncode == 1
    out = res.stdout
    assert not ANSI.search(out)
    assert "enc_q.pre.weight" in out and "and 98 more missing rows" in out
    assert "random" in out and "strict=False" in out and "G_*.pth" in out
    assert "matched (" not in out                 # --only-problems
    assert "Most-changed tensors" in out          # the stats section is there
    assert not re.search("[│┃━─┏┓┗┛]", out)       # piped: plain columns, no box drawing


def test_only_problems_in_json_and_markdown(pairs, capsys):
    pre, ft = pairs[("sovits-G-export", "v2")]
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--json", "--no-stats")
    d = json.loads(out)
    assert code == 1 and len(d["rows"]) == 776 and not d["rows_truncated"]
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--json", "--no-stats", "--only-problems")
    d = json.loads(out)
    assert code == 1 and d["rows_truncated"] and d["counts"]["matched"] == 673
    assert len(d["rows"]) == 103 and {r["status"] for r in d["rows"]} == {"missing"}
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--markdown", "--no-stats", "--only-problems")
    assert code == 1 and "## missing (103)" in out and "## matched" not in out


def test_json_includes_stats_unless_no_stats(pairs, capsys):
    pre, ft = pairs[("gpt", "v2")]
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--json")
    d = json.loads(out)
    assert code == 0 and d["stats"] is not None
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--markdown", "--top", "3", "--no-stats", "--all")
    assert code == 0 and out.startswith("# gsvinspect diff") and "| matched |" in out
    assert "fully aligned" in out and "… and 292 more" in out


def test_conflict_and_dead_rule_from_a_users_file(pairs, capsys, tmp_path):
    pre, ft = pairs[("sovits-G", "v2")]
    rules = tmp_path / "bad_idea.toml"
    rules.write_text(
        "# map both flows' first layer onto one name (a mistake)\n"
        "[[rule]]\n"
        "rename = '^flow\\.flows\\.2\\.'\n"
        "to = 'flow.flows.0.'\n"
        "\n"
        "[[rule]]\n"
        "strip_prefix = 'net_g.'   # not in this file\n")
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--rules", rules, "--json", "--no-stats")
    d = json.loads(out)
    assert code == 1 and not d["ok"]
    assert d["counts"]["conflict"] > 0
    conflict = d["conflicts"][0]
    assert len(conflict["sources"]) == 2 and conflict["target"].startswith("flow.flows.0.")
    assert [r["dead"] for r in d["rules"]["list"]] == [False, True]
    assert [r["line"] for r in d["rules"]["list"]] == [2, 6]
    codes = [f["code"] for f in d["findings"]]
    assert "rename-conflict" in codes and "dead-rule" in codes
    code, out, _ = run_cli(capsys, "diff", pre, ft, "--rules", rules, "--no-stats", "--only-problems")
    assert "matched nothing" in out and "conflict" in out


@pytest.mark.parametrize("text, line", [
    ("[[rule]]\nrename = '(oops'\nto = 'x'\n", 2),
    ("[[rule]]\nstrip_prefix = 'a.'\nflavour = 'x'\n", 3),
    ("[[rule]]\nstrip_prefix = ['a.']\n", 2),
    ("[[rule]\nstrip_prefix = 'a.'\n", 1),
])
def test_bad_rules_file_exits_2_with_line(pairs, tmp_path, text, line):
    pre, ft = pairs[("gpt", "v1")]
    rules = tmp_path / "r.toml"
    rules.write_text(text)
    res = run_sub("diff", pre, ft, "--rules", rules)
    assert res.returncode == 2
    assert f"r.toml:{line}:" in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1
    res = run_sub("rules", "check", rules)
    assert res.returncode == 2 and f"r.toml:{line}:" in res.stderr


def test_usage_and_unreadable_exit_codes(pairs, tmp_path, capsys):
    pre, ft = pairs[("gpt", "v1")]
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint at all")
    res = run_sub("diff", pre, junk)
    assert res.returncode == 3 and "junk.pth" in res.stderr
    code, _, err = run_cli(capsys, "check", junk)
    assert code == 3 and "junk.pth" in err
    code, _, err = run_cli(capsys, "diff", pre, ft, "--suggest", "--rules", tmp_path / "x.toml")
    assert code == 2
    code, _, err = run_cli(capsys, "diff", pre, ft, "--top", "0")
    assert code == 2


def test_weights_entry_picks_the_container_entry(tmp_path, capsys):
    sd = synth.state_dict("sovits-D", "v1", scale=32)
    other = collections.OrderedDict((f"ema.{k}", v) for k, v in sd.items())
    f = tmp_path / "two_dicts.pth"
    torch.save({"model": other, "ema_model": sd, "iteration": 3}, f)
    pre = tmp_path / "D.pth"
    torch.save({"weight": sd, "config": {}}, pre)
    code, out, _ = run_cli(capsys, "diff", pre, f, "--json", "--no-stats")
    assert code == 1
    rules = tmp_path / "entry.toml"
    rules.write_text('weights_entry = "ema_model"\n')
    code, out, _ = run_cli(capsys, "diff", pre, f, "--rules", rules, "--json", "--no-stats")
    d = json.loads(out)
    assert code == 0 and d["finetuned"]["weights_path"] == ["ema_model"] and d["rules"]["weights_entry"] == "ema_model"


# ---------------------------------------------------------------------------------------------
# check: full-size key sets written cheaply (every tensor is an expanded 1-element storage)

def full(model, version, dtype, rank=32):
    from gsvinspect.load.manifest import model_entries

    one = torch.zeros(1, dtype=dtype)
    return collections.OrderedDict((e.key, one.expand(*e.shape) if e.shape else torch.zeros((), dtype=dtype))
                                   for e in model_entries(model, version, rank=rank))


@pytest.fixture(scope="module")
def full_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    w = synth.write_checkpoint
    return {
        "export-v2": w(root / "SoVITS_weights_v2/x_e8_s100.pth", Layout.SOVITS_WEIGHTS, "v2",
                      weights=full("sovits-G", "v2", torch.float16)),
        "G-v2": w(root / "logs/x/logs_s2_v2/G_100.pth", Layout.SOVITS_G_TRAIN, "v2",
                  weights=full("sovits-G", "v2", torch.float32), optimizer=False),
        "lora-v3-r16": w(root / "logs/x/logs_s2_v3_lora_16/G_100.pth", Layout.SOVITS_G_LORA_TRAIN, "v3",
                         weights=full("sovits-G-lora", "v3", torch.float32, 16), lora_rank=16, optimizer=False),
        "gpt-v1": w(root / "GPT_weights/x-e15.ckpt", Layout.GPT_WEIGHTS, "v1",
                    weights=full("gpt", "v1", torch.float16)),
    }


def test_check_auto_and_as(full_files, capsys):
    code, out, _ = run_cli(capsys, "check", full_files["export-v2"], "--json")
    d = json.loads(out)
    assert code == 1 and d["name"] == "sovits-G-v2" and d["auto"] and len(d["missing"]) == 103
    assert d["findings"][0]["code"] == "enc-q-missing"
    code, out, _ = run_cli(capsys, "check", full_files["export-v2"], "--as", "sovits-G-v2-export", "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = run_cli(capsys, "check", full_files["G-v2"])
    assert code == 0 and "OK: all 776 expected keys" in out
    code, out, _ = run_cli(capsys, "check", full_files["G-v2"], "--as", "SOVITS-G-v2pro", "--json")
    d = json.loads(out)
    assert code == 1 and d["name"] == "sovits-G-v2Pro" and len(d["missing"]) == 5 and len(d["shape_mismatched"]) > 0
    code, out, _ = run_cli(capsys, "check", full_files["lora-v3-r16"])
    assert code == 0 and "sovits-G-v3-lora" in out
    code, out, _ = run_cli(capsys, "check", full_files["gpt-v1"], "--as", "gpt-v2", "--markdown")
    assert code == 1 and "ar_text_embedding" in out and "# gsvinspect check" in out
    code, _, err = run_cli(capsys, "check", full_files["gpt-v1"], "--as", "gpt-v7")
    assert code == 2 and "valid names" in err
    code, out, _ = run_cli(capsys, "check", "--list")
    assert code == 0 and "sovits-G-v4-lora-export" in out


def test_check_subprocess_piped(full_files):
    res = run_sub("check", full_files["export-v2"], "--top", "2")
    assert res.returncode == 1 and not ANSI.search(res.stdout)
    assert "enc_q" in res.stdout and "strict=False" in res.stdout


def test_check_top_defaults_to_25_and_0_lists_all(full_files):
    """`check --help`: --top N lists at most N keys per section (default 25; 0 lists all)."""
    def listed(out):
        return [ln.strip() for ln in out.splitlines() if re.fullmatch(r"enc_q\.[\w.]+", ln.strip())]

    res = run_sub("check", full_files["export-v2"])
    assert res.returncode == 1 and len(listed(res.stdout)) == 25 and "… and 78 more" in res.stdout
    res = run_sub("check", full_files["export-v2"], "--top", "0")
    assert res.returncode == 1 and len(set(listed(res.stdout))) == 103 and "… and" not in res.stdout


def test_rules_check_with_files_exits_1_on_a_dead_rule(pairs, capsys, tmp_path):
    pre, ft = pairs[("sovits-G-ddp", "v2")]
    rules = tmp_path / "r.toml"
    rules.write_text("[[rule]]\nstrip_prefix = 'module.'\n[[rule]]\nstrip_prefix = '_orig_mod.'\n")
    code, out, _ = run_cli(capsys, "rules", "check", rules)
    assert code == 0 and "OK, 2 rules" in out           # without files nothing can be dead
    code, out, _ = run_cli(capsys, "rules", "check", rules, pre, ft)
    assert code == 1 and "776 keys" in out and "matched nothing" in out


def test_rules_command_without_action_is_usage(capsys):
    code, _, _ = run_cli(capsys, "rules")
    assert code == 2
