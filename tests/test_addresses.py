"""The responder address policy: request forgery into the host's own network
is refused before any connection, by every path that fetches."""

from __future__ import annotations

import pytest

from engine.responders.addresses import parse_allow, refusal
from engine.ocsp.certs import load_leaf
from engine.errors import ResponderAddressError
from engine.refresh.fetch import FetchOptions, fetch
from engine.responders.transport import TransportOptions, post
from tests.test_fanout import run
from tests.test_stapler import make_stapler


@pytest.mark.parametrize(
    "address, why",
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.20.30.40", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("0.0.0.0", "a unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("93.184.216.34", None),
        ("2606:2800:220:1::", None),
    ],
)
def test_what_is_refused_by_default(address, why):
    assert refusal(address) == why


def test_what_the_operator_allows_is_allowed():
    allow = parse_allow(["loopback", "10.20.0.0/16", "192.168.7.7"])
    assert refusal("127.0.0.1", allow) is None and refusal("::1", allow) is None
    assert refusal("10.20.30.40", allow) is None and refusal("10.21.0.1", allow) == "a private address"
    assert refusal("192.168.7.7", allow) is None and refusal("192.168.7.8", allow) == "a private address"
    assert refusal("169.254.169.254", parse_allow(["link-local"])) is None  # if the operator really says so


def test_an_allow_entry_that_is_no_network_is_named():
    with pytest.raises(ValueError, match="'intranet' is neither a network"):
        parse_allow(["intranet"])


def test_post_refuses_without_connecting(responder):
    asked = responder.request_count
    with pytest.raises(ResponderAddressError, match="127.0.0.1 is a loopback address"):
        post(responder.url, b"x", TransportOptions())
    with pytest.raises(ResponderAddressError, match="is a loopback address"):
        post(f"http://localhost:{responder.port}/", b"x", TransportOptions())  # a name resolving there too
    assert responder.request_count == asked


def test_the_metadata_address_is_refused_with_nothing_of_it_in_the_error(pki):
    leaf = load_leaf(pki.good.chain_path, url_override="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(ResponderAddressError) as info:
        fetch(leaf, FetchOptions())
    assert str(info.value) == (
        "responder http://169.254.169.254/latest/meta-data/: refused: 169.254.169.254 is a cloud metadata "
        "address (allow it in responder.allow if it really is your responder)"
    )
    assert info.value.reason == "refused_address" and not info.value.temporary


def test_warm_refuses_too(tmp_path, pki, responder):
    stapler = make_stapler(tmp_path)
    stapler.fetch_options = FetchOptions()  # the default policy: loopback refused
    leaf = load_leaf(pki.leaf("ssrf-warm").chain_path)
    asked = responder.request_count
    [result] = run(stapler, [leaf])
    assert isinstance(result, ResponderAddressError)
    assert responder.request_count == asked


def test_docs_security_lists_every_bound_as_the_code_has_it():
    from pathlib import Path

    from engine.bounds import BOUNDS

    text = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    for name, bound in BOUNDS.items():
        assert f"| `{name}` | {bound} |" in text, name
