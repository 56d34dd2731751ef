"""The corpus through the command line: `staplectl fetch` from a responder
that answers with the real response, at the case's time, then `inspect`.

A case with a public leaf is fetched (its verdict decides the exit code and
whether anything is stored); every case is inspected, with --text printing
what engine.ocsp.response_text renders (tests/test_corpus_text.py compares
that with OpenSSL)."""

from __future__ import annotations

import hashlib

import pytest

from engine.clock import SYSTEM_CLOCK
from engine.ocsp.certs import ocsp_urls, read_certificates
from engine.ocsp.response_text import render
from engine.store.providers import open_provider
from tests.corpus_cases import cases
from tests.responder import Behaviour

CASES = cases()
_EXIT = {"good": 0, "revoked": 1, "unknown": 1, "issuer_not_found": 2}


@pytest.fixture
def at(monkeypatch):
    """Set the engine's clock (the in-process CLI reads SYSTEM_CLOCK) to a case's time."""

    def set_clock(when: float | None) -> None:
        if when is not None:
            monkeypatch.setattr(SYSTEM_CLOCK, "now", lambda: when)

    return set_clock


@pytest.mark.parametrize("case", [c for c in CASES if c.leaf is not None], ids=str)
def test_fetch_then_inspect(case, cli, responder, at):
    at(case.at)
    responder.default = Behaviour(body=case.der)
    certificate = ["--issuer", str(case.issuer)]
    ran = cli("fetch", case.leaf, *certificate, "--url", responder.url, "--json")
    assert ran.exit_code == _EXIT.get(case.verdict, 3), ran.stdout + ran.stderr
    data = ran.json()
    if data["error"]:
        assert data["error"]["reason"] == case.verdict
    else:
        [data] = data["certificates"]
        assert data["status"] == case.verdict
    shown = cli("inspect", case.leaf, *certificate, "--json")
    if not case.accepted:
        # refused: nothing stored (issuer_not_found: the leaf cannot even be
        # named; a leaf that names no OCSP responder has no entry by design)
        if case.verdict == "issuer_not_found":
            assert shown.exit_code == 2, shown.stdout
        elif not ocsp_urls(read_certificates(case.leaf)[0]):
            assert shown.exit_code == 0 and len(shown.json()["without_ocsp"]) == 1, shown.stdout
        else:
            assert shown.exit_code == 3, shown.stdout
        return
    assert data["stored"] is True
    row = shown.row("entries")
    assert (row["valid"], row["status"]) == (True, case.verdict)
    # past its renewal point: fine to serve, time to renew; weak: signed with
    # SHA-1 or a short key, as most of these real CAs' responses are
    assert set(row["flags"]) <= {"due", "weak"}
    assert ("weak" in row["flags"]) == bool(row["weak"])
    text = cli("inspect", case.leaf, *certificate, "--text")
    assert text.exit_code == 0 and text.stdout == render(case.der)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_inspect_any_stored_response(case, cli, home, at):
    """What httpd or another tool stored, staplectl never having seen the
    certificate: shown for what it is, never a crash."""
    at(case.at)
    key = hashlib.sha1(case.name.encode()).hexdigest()
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        provider.set(key, case.der, 3600, flag=1)
    text = cli("inspect", key, "--text")
    row = cli("inspect", key, "--json")
    assert row.exit_code == 0, row.stdout + row.stderr
    flags = row.row("entries")["flags"]
    if case.verdict == "malformed":
        assert text.exit_code == 3 and "not a DER OCSPResponse" in text.stderr
        assert flags == ["invalid: malformed"]
    else:
        assert text.exit_code == 0 and text.stdout == render(case.der)
        assert flags[0] == ("try-later" if case.verdict == "response_status" else "unverified")
        assert set(flags[1:]) <= {"due", "expired"}  # times are judged without a certificate too
