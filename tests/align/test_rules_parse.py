"""Rules files: what a person writes parses into the right rules; every mistake names its line."""

from __future__ import annotations

import pytest

from gsvinspect.errors import RulesError
from gsvinspect.align.rules import Rule, RuleSet, apply_rules, load_rules, parse_rules

USER_FILE = """\
# my rules for the DDP run
weights_entry = "model"   # the G_*.pth training layout

[[rule]]                  # DDP wrapper
strip_prefix = "module."

[[rule]]
rename = '^cfm\\.base_model\\.model\\.(?P<rest>.*)$'
to = 'cfm.\\g<rest>'
side = "both"

[[rule]]
add_prefix = "model."
side = "pre"

[[rule]]
drop = 'lora_[AB]\\.'

[[rule]]
keep_only = '^(cfm|enc_p)\\.'
note = "compare the parts LoRA touches"

[alpha]
default = 0.7
"enc_p.text_embedding" = 0.2
"enc_p." = 0.5
're:\\.attn\\.to_[qkv]\\.' = 0.9
"""


def test_user_file_parses_every_kind_with_lines():
    rs = parse_rules(USER_FILE, source="r.toml")
    assert [r.kind for r in rs.rules] == ["strip_prefix", "rename", "add_prefix", "drop", "keep_only"]
    assert [r.line for r in rs.rules] == [4, 7, 12, 16, 19]
    assert rs.weights_entry == "model"
    assert rs.rules[1].side == "both" and rs.rules[2].side == "pre" and rs.rules[0].side == "ft"
    assert rs.rules[1].replacement == "cfm.\\g<rest>"
    assert rs.rules[4].note == "compare the parts LoRA touches"
    assert rs.source == "r.toml"


def test_rule_semantics_on_keys():
    rs = parse_rules(USER_FILE)
    keys = ["module.cfm.base_model.model.estimator.x.weight", "module.enc_p.a.lora_A.default.weight",
            "module.dec.conv.weight", "enc_p.plain"]
    ap = apply_rules(rs, keys, "ft")
    assert ap.targets == ["cfm.estimator.x.weight", None, None, "enc_p.plain"]
    assert ap.hits == [3, 1, 0, 1, 1]       # add_prefix is pre-side only: no ft hits
    assert ap.touched[0] == (0, 1)
    assert ap.touched[1] == (0, 3)          # dropped by rule 4 (index 3)
    pre = apply_rules(rs, ["cfm.base_model.model.y", "model.z"], "pre")
    assert pre.targets == ["model.cfm.y", "model.z"]


def test_alpha_longest_prefix_then_regex_then_default():
    rs = parse_rules(USER_FILE)
    assert rs.alpha_for("enc_p.text_embedding.weight") == 0.2
    assert rs.alpha_for("enc_p.encoder_text.x") == 0.5
    assert rs.alpha_for("cfm.estimator.transformer_blocks.0.attn.to_q.weight") == 0.9
    assert rs.alpha_for("dec.conv_pre.weight") == 0.7
    assert parse_rules("").alpha_for("anything") is None
    assert not parse_rules("").has_alphas


def test_to_toml_round_trips_and_explains():
    rs = parse_rules(USER_FILE)
    text = rs.to_toml()
    assert text.count("\n# ") > 5          # commented for a person
    back = parse_rules(text)
    assert [(r.kind, r.pattern, r.replacement, r.side, r.note) for r in back.rules] == \
        [(r.kind, r.pattern, r.replacement, r.side, r.note) for r in rs.rules]
    assert back.weights_entry == "model"
    assert back.alphas == rs.alphas and back.alpha_default == 0.7
    # patterns with quotes and backslashes survive too
    odd = RuleSet([Rule("rename", "it's\\.(x)", "y\\1"), Rule("strip_prefix", 'a"b.')])
    again = parse_rules(odd.to_toml())
    assert [(r.pattern, r.replacement) for r in again.rules] == [("it's\\.(x)", "y\\1"), ('a"b.', "")]
    assert "No rule needed" in RuleSet().to_toml()


def test_comments_in_the_users_file_are_never_touched(tmp_path):
    p = tmp_path / "rules.toml"
    p.write_text(USER_FILE)
    rs = load_rules(p)
    assert len(rs.rules) == 5
    assert p.read_text() == USER_FILE


@pytest.mark.parametrize("text, line, words", [
    ('[[rule]]\nrename = "(unclosed"\nto = "x"\n', 2, "invalid regex"),
    ('\n[[rule]]\nstrip_prefix = "a."\nwhatever = 1\n', 4, "unknown field 'whatever'"),
    ('[[rule]]\nstrip_prefix = 3\n', 2, "must be a string"),
    ('[[rule]]\nstrip_prefix = "a."\n\n[[rule]]\nrename = "x"\nto = 5\n', 6, "'to' must be a string"),
    ('[[rule]]\nstrip_prefix = "a.\n', 2, "TOML syntax"),
    ('x = = 1\n', 1, "TOML syntax"),
    ('[[rule]]\nrename = "(a)"\nto = "\\\\2"\n', 3, "invalid replacement"),
    ('[[rule]]\nrename = "a"\nto = "\\\\g<nope>"\n', 3, "invalid replacement"),
    ('[[rule]]\nrename = "a"\n', 2, "needs 'to'"),
    ('[[rule]]\nstrip_prefix = "a"\nadd_prefix = "b"\n', 3, "several kinds"),
    ('[[rule]]\nnote = "nothing"\n', 1, "needs one of"),
    ('[[rule]]\ndrop = "x"\nside = "left"\n', 3, "side must be"),
    ('[[rule]]\ndrop = "x"\nto = "y"\n', 3, "only goes with rename"),
    ('[[rule]]\nkind = "rename"\n', 2, "write the kind as the key"),
    ('[[rule]]\nstripprefix = "a"\n', 2, "did you mean 'strip_prefix'"),
    ('[alpha]\ndefault = 1.5\n', 2, "outside [0, 1]"),
    ('[alpha]\n"enc_p." = "high"\n', 2, "must be a number"),
    ('[alpha]\n"enc_p." = true\n', 2, "must be a number"),
    ('[alpha]\n"re:(bad" = 0.5\n', 2, "invalid regex"),
    ('weights_entry = 3\n', 1, "weights_entry"),
    ('colour = "red"\n', 1, "unknown top-level field"),
    ('[[rule]]\nstrip_prefix = ""\n', 2, "non-empty"),
])
def test_bad_rules_name_the_line(text, line, words):
    with pytest.raises(RulesError) as ei:
        parse_rules(text, source="bad.toml")
    err = ei.value
    assert err.line == line, str(err)
    assert words in err.problem
    assert str(err).startswith(f"bad.toml:{line}: ")
    assert err.exit_code == 2


def test_toml_syntax_error_keeps_column():
    with pytest.raises(RulesError) as ei:
        parse_rules("[[rule]]\nstrip_prefix = 'a'\n\n[[rule]\n")
    assert ei.value.line == 4
    assert "column" in ei.value.problem


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(RulesError) as ei:
        load_rules(tmp_path / "absent.toml")
    assert "cannot read" in ei.value.problem
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'# ok\n# caf\xe9\n')
    with pytest.raises(RulesError) as ei:
        load_rules(p)
    assert ei.value.line == 2 and "UTF-8" in ei.value.problem


def test_rule_objects_validate_themselves():
    with pytest.raises(RulesError):
        Rule("rename", "(", "")
    with pytest.raises(RulesError):
        Rule("shuffle", "x")
    with pytest.raises(RulesError):
        Rule("drop", "x", side="middle")
    r = Rule("rename", r"^(\w+)\.weight$", r"\1.w")
    assert r.apply("conv.weight") == "conv.w"
    assert Rule("drop", "enc_q").apply("enc_q.x") is None
    assert Rule("keep_only", "^dec").apply("enc.x") is None
    assert Rule("add_prefix", "model.").apply("model.x") == "model.x"
    assert Rule("strip_prefix", "module.").apply("x.module.y") == "x.module.y"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = ["[[rule]]\n", "[alpha]\n", "[rule]\n", "rule = 1\n", "rename = '(a'\n", "rename = 'a(b)'\n", "to = '\\\\1'\n",
           "to = 3\n", "strip_prefix = 'm.'\n", "add_prefix = ''\n", "drop = '['\n", "keep_only = 'x'\n",
           "side = 'pre'\n", "side = 1\n", "default = 2\n", "'x.' = 0.5\n", "'re:(' = 0.1\n", "weights_entry = 'w'\n",
           "weights_entry = []\n", "note = 'n'\n", "= broken\n", "# comment\n", "x = {a = 1}\n", "[alpha.sub]\n",
           "\"\"\"\n", "bogus = true\n", "\n"]


_FIELDS = ["rename = '^a\\.(x)'\nto = 'b.\\1'\n", "strip_prefix = 'module.'\n", "add_prefix = 'model.'\n",
           "drop = 'enc_q'\n", "keep_only = '^dec'\n", "side = 'both'\n", "note = 'why'\n"]
_BLOCK = st.builds(lambda fs: "[[rule]]\n" + "".join(fs), st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_BLOCK, _BLOCK, st.sampled_from(_PIECES)), max_size=8))
def test_any_rules_text_parses_or_raises_rules_error(pieces):
    text = "".join(pieces)
    try:
        rs = parse_rules(text, source="f.toml")
    except RulesError as exc:
        assert exc.line is None or 1 <= exc.line <= max(1, text.count("\n") + 1)
        assert str(exc).startswith("f.toml")
    else:
        def spec(r):
            return (r.kind, r.pattern, r.replacement, r.side, r.note)
        back = parse_rules(rs.to_toml())
        assert [spec(r) for r in back.rules] == [spec(r) for r in rs.rules]
        assert (back.weights_entry, back.alphas, back.alpha_default) == (rs.weights_entry, rs.alphas, rs.alpha_default)


# Rule.apply is the one-key statement of each kind; apply_rules is the bulk, rule-major form with a
# required-literal pre-filter. They must agree on every key, side and rule order.
_SEGMENTS = ["module", "cfm", "base_model", "model", "enc_p", "base_layer", "lora_A", "default", "weight", "bias",
             "0", "attn", "to_q", "BASE"]
_SPECS = [("rename", r"\.base_layer\.", "."), ("rename", r"^cfm\.base_model\.model\.", "cfm."),
          ("rename", r"(?P<a>\w+)\.weight$", r"\g<a>.w"), ("rename", "model|layer", "M"), ("rename", "(?i)base", "b"),
          ("strip_prefix", "module.", ""), ("add_prefix", "model.", ""), ("drop", r"lora_[AB]\.", ""),
          ("drop", "a+ttn", ""), ("keep_only", r"^(cfm|enc_p)\.", ""), ("keep_only", r"default\b", "")]


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=6).map(".".join), max_size=12),
       specs=st.lists(st.tuples(st.sampled_from(_SPECS), st.sampled_from(["ft", "pre", "both"])), max_size=5),
       side=st.sampled_from(["ft", "pre"]))
def test_bulk_application_equals_rule_by_rule(keys, specs, side):
    rs = RuleSet([Rule(kind, pattern, repl, side=s) for (kind, pattern, repl), s in specs])
    ap = apply_rules(rs, keys, side)
    for i, key in enumerate(keys):
        cur, touched = key, []
        for ri, rule in enumerate(rs.rules):
            if cur is not None and rule.applies_to(side):
                new = rule.apply(cur)
                if new != cur:
                    touched.append(ri)
                cur = new
        assert (ap.targets[i], ap.touched[i]) == (cur, tuple(touched)), key
    assert ap.hits == [sum(ri in t for t in ap.touched) for ri in range(len(rs.rules))]
