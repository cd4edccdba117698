"""Issue 12 point 6: text from a file reaches the terminal with its control characters escaped.

Key names, config strings, record and global names carrying terminal escape sequences (retitle,
clear screen, bidirectional override) go through every command, piped and as JSON, and through the
rich console a terminal gets. Piped and rich output show ``\\x1b``; JSON escapes as JSON does and
round-trips the exact key.
"""

from __future__ import annotations

import json

import pytest

import hostile_corpus as hc

EVIL_KEYS = ("enc_p.\x1b]0;pwned\x07.w", "\x1b[2Jenc_p.clear", "enc_p.\u202eevil.w", "enc_p.\x9b31m.w")
BAD = ("\x1b", "\x07", "\u202e", "\x9b")


def _escape_file(tmp_path):
    keys = hc.d(*[(hc.s(k), hc.tensor("0", 16, (4,), (1,), offset=n)) for n, k in enumerate(EVIL_KEYS)])
    cfg = hc.d((hc.s("sr"), hc.i(32000)), (hc.s("note\x1b[5m"), hc.s("\x1b[31mred\x1b]8;;http://x\x07")))
    path = tmp_path / "escapes.pth"
    path.write_bytes(hc.rezip(hc.pkl(hc.d((hc.s("weight"), keys), (hc.s("config"), cfg),
                                          (hc.s("info"), hc.s("\x1b[2J\x1b[Hgone"))))))
    return path


def _clean(text: str) -> bool:
    return not any(c in text for c in BAD)


def test_every_command_escapes_file_text(tmp_path):
    path = _escape_file(tmp_path)
    benign = tmp_path / "benign.pth"
    benign.write_bytes(hc.template_bytes())
    jobs = [["info", str(path)], ["info", "--globals", str(path)], ["ls", str(path)], ["ls", "--all", str(path)],
            ["diff", str(benign), str(path), "--no-stats"], ["diff", str(path), str(path)], ["check", str(path)],
            ["info", "--json", str(path)], ["ls", "--json", str(path)],
            ["diff", str(benign), str(path), "--no-stats", "--json"]]
    results = hc.run_cli_batch(jobs, cwd=tmp_path)
    for argv, (rc, err, out) in zip(jobs, results):
        assert rc in (0, 1, 3), (argv, rc, err)
        assert _clean(out) and _clean(err), (argv, out[-500:], err)
    # the plain outputs show the escapes, so the user sees something odd is there
    ls_out = results[2][2]
    assert "\\x1b]0;pwned\\x07" in ls_out and "\\u202e" in ls_out and "\\x9b" in ls_out
    assert "note\\x1b[5m" in results[0][2] and "\\x1b[2J\\x1b[Hgone" in results[0][2]
    # JSON escapes as JSON does and round-trips the exact keys
    keys = [k["key"] for k in json.loads(results[8][2])["keys"]]
    assert keys == list(EVIL_KEYS)


def test_error_lines_escape_global_and_record_names(tmp_path):
    evil = tmp_path / "evil\x1b[2J.pth"
    evil.write_bytes(hc.rezip(hc.pkl(hc.d((hc.s("weight"), hc.benign_weights()),
                                          (hc.s("x"), hc.call(hc.g("os\x1b]0;t\x07", "system"), hc.s("true")))))))
    (rc, err, out), = hc.run_cli_batch([["info", str(evil)]], cwd=tmp_path)
    assert rc == 3 and _clean(err) and "\\x1b[2J" in err and "os\\x1b]0;t\\x07.system" in err


def test_rich_console_escapes_text_but_keeps_its_own_colours(tmp_path, monkeypatch):
    import io

    from rich.table import Table
    from rich.text import Text

    from gsvinspect.report import output

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(output, "is_terminal", lambda: True)  # the console a terminal gets
    con = output.console()
    buf = io.StringIO()
    con.file = buf
    table = Table("key")
    for k in EVIL_KEYS:
        table.add_row(Text(k, style="bold red"))
    con.print(table)
    text = buf.getvalue()
    assert "\x1b[" in text                      # rich's own styling survived
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text


@pytest.mark.parametrize("raw, shown", [("a\x1bb", "a\\x1bb"), ("tab\there", "tab\\x09here"), ("ok", "ok"),
                                        ("\u2066x\u2069", "\\u2066x\\u2069"), ("é中", "é中")])
def test_safe_text(raw, shown):
    from gsvinspect.report.output import safe_text

    assert safe_text(raw) == shown
