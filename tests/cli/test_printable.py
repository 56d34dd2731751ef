"""Text from outside never drives the terminal: escapes, newlines and bidi
overrides from a responder, a file name or a cache value are shown escaped."""

from __future__ import annotations


from staplectl.printable import printable
from tests.loopback import CONFIG_ALLOW
from tests.responder import Behaviour

ESC_CLEAR = "\x1b[2J"


def test_printable_escapes_controls_and_bidi_and_keeps_the_rest():
    assert printable("ok: été → 東京") == "ok: été → 東京"
    assert printable(f"a{ESC_CLEAR}b") == "a\\x1b[2Jb"
    assert printable("one\nline\r\tand\x00\x7f\x9b") == "one\\nline\\r\\tand\\x00\\x7f\\x9b"
    assert printable("evil\u202egnp.exe") == "evil\\u202egnp.exe"


def test_a_responders_location_header_reaches_stderr_escaped(cli, pki, responder):
    responder.script(pki.good, Behaviour(redirect_to=f"http://elsewhere/{ESC_CLEAR}\x1b[31mred"))
    ran = cli("fetch", pki.good.chain_path)
    assert ran.exit_code == 3
    assert "\x1b" not in ran.stderr and "\\x1b[2J" in ran.stderr


def test_check_stays_one_line_whatever_a_file_name_holds(cli, pki, tmp_path):
    odd = tmp_path / f"evil\n{ESC_CLEAR}name.pem"
    odd.write_bytes(pki.good.chain_path.read_bytes())
    ran = cli("check", odd)
    assert ran.stdout.count("\n") == 1 and "\x1b" not in ran.stdout
    assert "evil\\n\\x1b[2Jname.pem" in ran.stdout


def test_tables_escape_what_they_show(cli, pki, responder, tmp_path):
    odd = tmp_path / "tab\x1b]0;owned\x07.pem"
    odd.write_bytes(pki.good.chain_path.read_bytes())
    ran = cli("warm", odd)
    assert ran.exit_code == 0
    assert "\x1b" not in ran.stdout + ran.stderr and "\\x1b]0;owned\\x07" in ran.stdout


def test_json_output_escapes_on_its_own(cli, pki, tmp_path):
    odd = tmp_path / f"j{ESC_CLEAR}.pem"
    odd.write_bytes(pki.good.chain_path.read_bytes())
    ran = cli("warm", odd, "--json")
    assert "\x1b" not in ran.stdout and "\\u001b[2J" in ran.stdout
    assert ESC_CLEAR in ran.stdout.encode().decode("unicode_escape")  # the same name, decoded


def test_the_services_log_lines_escape_what_a_responder_said(cli, pki, responder, tmp_path):
    responder.script(pki.good, Behaviour(redirect_to=f"http://elsewhere/{ESC_CLEAR}"))
    config = tmp_path / "c.toml"
    config.write_text(f'certificates = ["{pki.good.chain_path}"]\n' + CONFIG_ALLOW)
    ran = cli("prefetch", "--once", "--config", config)
    assert ran.exit_code == 3
    assert "\x1b" not in ran.stderr and "\\x1b[2J" in ran.stderr
