"""What one certificate's refresh came to, as every front end shows it
(warm's table, the dashboard's notes): one type for all of them."""

from __future__ import annotations

from dataclasses import dataclass

from engine.clock import SYSTEM_CLOCK
from engine.errors import MustStapleWithoutOCSPError, StapleError
from engine.ocsp.certs import Leaf
from engine.ocsp.staple import Staple
from engine.refresh.reader import StapleReader
from engine.refresh.stapler import Refresh


@dataclass(frozen=True)
class Outcome:
    leaf: Leaf
    #: the staple the certificate has now: the one fetched or found fresh,
    #: or, after a failure, the one still cached if it is usable (what
    #: servers go on stapling)
    staple: Staple | None
    #: updated | fresh | leased | failed | no_ocsp (nothing to ask: see no_responder)
    result: str
    error: StapleError | None = None

    @property
    def ok(self) -> bool:
        return self.result != "failed"

    @property
    def reason(self) -> str | None:
        return self.error.reason if self.error is not None else None

    @property
    def message(self) -> str:
        """One line: "updated: good", "failed [timeout]: ..."."""
        if self.error is not None:
            return f"failed [{self.error.reason}]: {self.error}"
        if self.result == NO_OCSP:
            return "no OCSP: the certificate names no responder, nothing to fetch"
        return f"{self.result}: {self.staple.status}" if self.staple is not None else self.result


def outcome_of(reader: StapleReader, leaf: Leaf, result: Refresh | StapleError) -> Outcome:
    """The Outcome of what engine.refresh.fanout (or Stapler.refresh) returned for ``leaf``."""
    if isinstance(result, StapleError):
        return failed(reader, leaf, result)
    return Outcome(leaf, result.staple, result.action)


def failed(reader: StapleReader | None, leaf: Leaf, error: StapleError) -> Outcome:
    """A failure, with the staple still cached if it is usable (None: the cache was not opened)."""
    current = None
    if reader is not None:
        try:
            current = reader.cached(leaf)
        except StapleError:
            current = None
        if not reader.usable(current, SYSTEM_CLOCK.now()):
            current = None
    return Outcome(leaf, current, "failed", error)


#: the result of a certificate that names no OCSP responder
NO_OCSP = "no_ocsp"


def no_responder(leaf: Leaf) -> Outcome:
    """A certificate that names no OCSP responder: "no OCSP", not a failure,
    unless it is must-staple, which no server can serve without a staple."""
    if leaf.must_staple:
        return Outcome(leaf, None, "failed", MustStapleWithoutOCSPError(must_staple_without_ocsp(leaf)))
    return Outcome(leaf, None, NO_OCSP)


def must_staple_without_ocsp(leaf: Leaf) -> str:
    return (
        f"{leaf.name}: must-staple, yet names no OCSP responder: no server can staple it, so clients "
        "refuse it (configure a url for it, or reissue it without must-staple)"
    )
