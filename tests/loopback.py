"""The tests' responders listen on loopback, which engine.responders.addresses refuses
by default: their options allow it, as an operator's responder.allow would."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.responders.addresses import parse_allow
from engine.refresh.fetch import FetchOptions
from engine.responders.transport import TransportOptions

LOOPBACK = parse_allow(["loopback"])
#: what a test passes for "the default options", loopback allowed
TRANSPORT = TransportOptions(allow=LOOPBACK)
FETCH = FetchOptions(transport=TRANSPORT)
#: a configuration file's line allowing the tests' responders
CONFIG_ALLOW = '\n[responder]\nallow = ["loopback"]\n'


def local(options: TransportOptions = TRANSPORT) -> TransportOptions:
    """``options`` with loopback allowed."""
    return options if options.allow else replace(options, allow=LOOPBACK)


def config_file(directory: Path) -> Path:
    """A configuration file allowing loopback responders, for a staplectl run
    outside the test suite's fixtures (the benchmarks)."""
    path = directory / "staplectl-loopback.toml"
    path.write_text(CONFIG_ALLOW)
    return path
