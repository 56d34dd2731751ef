"""The corpus of real OCSP responses (tests/corpus), one Case per manifest entry.

Each case names a response, the issuer to trust (when one is public), the
leaf (when public, else the serial it is about), the time to judge it at,
and two verdicts: OpenSSL's, and the engine's. tests/corpus/README.md says
where every file comes from; docs/validation.md how to add a case.

A verdict is "good", "revoked" or "unknown" (accepted, with that status),
"unverifiable" (decodes, but no issuer here to check it against), or the
``reason`` of the engine error that refuses it. OpenSSL's is "accept" or
"refuse": see ``openssl_verdict``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

import pytest

from engine.errors import StapleError
from engine.ocsp.certs import Leaf, load_leaf, read_certificates
from engine.ocsp.request import CertID, build_request, key_hash
from engine.ocsp.staple import parse_response
from engine.ocsp.validate import validate

CORPUS = Path(__file__).resolve().parent / "corpus"
ACCEPTED = ("good", "revoked", "unknown")


@dataclass(frozen=True)
class Case:
    name: str
    response: Path
    verdict: str
    openssl: str
    issuer: Path | None = None
    leaf: Path | None = None
    serial: int | None = None
    #: the CertID hash the request asks with
    hash: str = "sha1"
    at: float | None = None
    note: str = ""

    @property
    def source(self) -> str:
        """The project the response comes from: its directory in the corpus."""
        return self.response.parent.name

    @cached_property
    def der(self) -> bytes:
        return self.response.read_bytes()

    @property
    def accepted(self) -> bool:
        return self.verdict in ACCEPTED

    def __str__(self) -> str:  # the test id
        return self.name


def cases() -> list[Case]:
    with open(CORPUS / "manifest.toml", "rb") as file:
        entries = tomllib.load(file)["case"]
    return [_case(entry) for entry in entries]


def _case(entry: dict) -> Case:
    at = entry.get("at")
    return Case(
        name=entry["name"],
        response=CORPUS / entry["response"],
        verdict=entry["verdict"],
        openssl=entry["openssl"],
        issuer=CORPUS / entry["issuer"] if "issuer" in entry else None,
        leaf=CORPUS / entry["leaf"] if "leaf" in entry else None,
        serial=int(entry["serial"], 16) if "serial" in entry else None,
        hash=entry.get("hash", "sha1"),
        at=at.timestamp() if isinstance(at, datetime) else None,
        note=entry.get("note", ""),
    )


def subject(case: Case) -> tuple[Leaf, CertID]:
    """What the case asks about: the leaf with its issuer, and the CertID
    a request for it carries.

    With a public leaf, the issuer is found as staplectl finds it (load_leaf:
    the candidate whose key signed the leaf), so a wrong issuer fails here
    with IssuerNotFoundError. Without one, the CertID is written from the
    issuer and the serial, as a request for that serial would be, and the
    issuer stands in for the leaf.
    """
    assert case.issuer is not None, f"{case}: no issuer"
    if case.leaf is not None:
        leaf = load_leaf(case.leaf, issuer_path=case.issuer)
        return leaf, build_request(leaf, hash_name=case.hash).cert_id
    issuer = read_certificates(case.issuer)[0]
    cert_id = CertID(
        case.hash,
        hashlib.new(case.hash, issuer.subject.public_bytes()).digest(),
        key_hash(issuer, case.hash),
        case.serial or 0,
    )
    return Leaf(cert=issuer, issuer=issuer), cert_id


def engine_verdict(case: Case) -> str:
    """The engine's verdict on the case, by engine.ocsp.validate.validate."""
    try:
        if case.issuer is None:
            return _undecided(case)
        leaf, cert_id = subject(case)
        assert case.at is not None, f"{case}: no time to validate at"
        return validate(case.der, leaf, case.at, cert_id=cert_id).status
    except StapleError as error:
        return error.reason


def _undecided(case: Case) -> str:
    # Without an issuer only what needs none is decided: that it is an
    # OCSP response at all, and a successful one.
    response = parse_response(case.der)
    return "unverifiable" if response.response_status.value == 0 else "response_status"


# -- OpenSSL -------------------------------------------------------------------


def openssl_binary() -> str:
    """The openssl program; in CI (CI=true) its absence fails the test."""
    found = shutil.which("openssl")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("openssl is not installed; CI=true requires it", pytrace=False)
        pytest.skip("openssl is not installed")
    return found


def openssl_verdict(case: Case, openssl: str = "openssl") -> tuple[str, str]:
    """("accept" or "refuse", what openssl said).

    With a public issuer: accept when ``openssl ocsp -verify`` trusts the
    response with the issuer trusted directly (the recipe of OpenSSL's own
    test/recipes/80-test_ocsp.t, at the case's time) AND a second run finds a
    status for the case's certificate in it (``-issuer`` with ``-cert`` or
    ``-serial``). Two runs, not one: given ``-issuer``, the openssl program
    retries a failed verification trusting the -issuer certificates as
    signers outright (OCSP_TRUSTOTHER), and then accepts a response signed
    with the issuer's key even when that certificate's name is wrong (the
    WSNIC cases), which its own recipe refuses.

    Without an issuer: accept when openssl decodes a successful response
    (``-noverify``); nothing more can be checked.
    """
    base = [openssl, "ocsp", "-respin", str(case.response)]
    if case.issuer is None:
        done = _run(base + ["-noverify"])
        return ("accept" if done.returncode == 0 else "refuse"), done.stdout + done.stderr
    issuer = str(case.issuer)
    at = [] if case.at is None else ["-attime", str(int(case.at))]
    verify = _run(base + ["-partial_chain", *at, "-CAfile", issuer, "-verify_other", issuer, "-no-CApath", "-no-CAstore"])
    which = ["-cert", str(case.leaf)] if case.leaf else ["-serial", f"0x{case.serial or 0:X}"]
    status = _run(base + ["-noverify", "-issuer", issuer, f"-{case.hash}", *which])
    said = verify.stdout + verify.stderr + status.stdout + status.stderr
    return ("accept" if verify.returncode == 0 and status.returncode == 0 else "refuse"), said


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
