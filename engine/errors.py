"""The engine's error classes.

Every failure an operator can meet has its own class and a message that says
exactly what was checked and what was found. The class tells the front end
which exit code to use:

- InputError: the operator gave us something wrong (a file, a URL, a URI).
- FetchError: the responder could not be reached or answered badly.
- ValidationError: the responder answered, but the response must not be used.
- CacheError: the cache provider failed.

`revoked` and `unknown` are not errors: they are valid answers (see staple.py).
"""

from __future__ import annotations


class StapleError(Exception):
    """Base of every error the engine raises on purpose."""

    #: short machine-readable reason, used in metrics, JSON and worker state
    reason = "error"


# -- bad input ----------------------------------------------------------------


class InputError(StapleError):
    reason = "bad_input"


class CertificateFileError(InputError):
    """A certificate file is missing, unreadable, or holds no certificate."""

    reason = "bad_certificate_file"


class IssuerNotFoundError(InputError):
    reason = "issuer_not_found"


class NoResponderURLError(InputError):
    reason = "no_responder_url"


class MustStapleWithoutOCSPError(StapleError):
    """A must-staple certificate with no OCSP responder: no server can serve it.
    Not bad input (exit 2) but a state to fix: it fails like a fetch (exit 3)."""

    reason = "must_staple_without_ocsp"


class ResponderURLError(InputError):
    """A responder URL that we refuse to use (not http or https, malformed)."""

    reason = "bad_responder_url"


class CacheURIError(InputError):
    reason = "bad_cache_uri"


# -- the responder ------------------------------------------------------------


class FetchError(StapleError):
    reason = "fetch_failed"
    #: a temporary failure is worth retrying soon; a permanent one is not
    temporary = True


class ResponderUnreachableError(FetchError):
    reason = "unreachable"


class ResponderAddressError(FetchError):
    """The responder resolves only to addresses the policy refuses (engine.responders.addresses)."""

    reason = "refused_address"
    temporary = False


class ResponderTimeoutError(FetchError):
    reason = "timeout"


class ResponderHTTPError(FetchError):
    reason = "http_status"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        # 4xx says the responder will not answer this request: retrying at
        # the fast pace would only hammer it.
        self.temporary = status >= 500


class RedirectRefusedError(FetchError):
    reason = "redirect"
    temporary = False


class ResponseTooLargeError(FetchError):
    reason = "too_large"
    temporary = False


class ContentTypeError(FetchError):
    reason = "content_type"
    temporary = False


# -- the response -------------------------------------------------------------


class ValidationError(StapleError):
    reason = "invalid"
    temporary = False


class MalformedResponseError(ValidationError):
    reason = "malformed"
    temporary = True


class ResponseStatusError(ValidationError):
    """responseStatus is not successful (tryLater, internalError, ...)."""

    reason = "response_status"

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status
        self.temporary = status in ("try_later", "internal_error")


class CertIDMismatchError(ValidationError):
    reason = "certid_mismatch"


class SignatureError(ValidationError):
    reason = "bad_signature"


class UnauthorizedResponderError(ValidationError):
    """The signer is neither the issuer nor a delegate the issuer authorised."""

    reason = "unauthorized_responder"


class ResponderCertificateError(ValidationError):
    """A delegated responder certificate outside its validity or without the EKU."""

    reason = "responder_certificate"


class NotYetValidError(ValidationError):
    reason = "not_yet_valid"
    temporary = True


class ExpiredResponseError(ValidationError):
    reason = "expired"
    temporary = True


class TooOldError(ValidationError):
    """No nextUpdate, and thisUpdate is older than the allowed maximum age."""

    reason = "too_old"
    temporary = True


class BadValidityError(ValidationError):
    """nextUpdate before thisUpdate: a response no time makes current."""

    reason = "bad_validity"


class RollbackError(ValidationError):
    """Older than the response stored for the certificate: a replay (OCSP is
    mostly plain HTTP without a nonce) or a stale copy from a CDN. Refused,
    so that a revoked staple is never replaced by an older good one."""

    reason = "rollback"
    temporary = True


class NonceMismatchError(ValidationError):
    reason = "nonce_mismatch"


class WeakAlgorithmError(ValidationError):
    """SHA-1, or a short RSA key, with responder.refuse_weak set (engine.ocsp.weak)."""

    reason = "weak_algorithm"


class BeyondCertificateError(ValidationError):
    """nextUpdate is after the certificate's own notAfter (optional check)."""

    reason = "beyond_certificate"


# -- the cache ----------------------------------------------------------------


class CacheError(StapleError):
    reason = "cache"
    temporary = True


class CacheUnavailableError(CacheError):
    """The store cannot be reached or used: every call may fail alike."""

    reason = "cache_unavailable"


class StoreUnwritableError(CacheUnavailableError):
    """The store can be read but not written: a full disk, a file system
    remounted read-only after I/O errors, a read-only file."""

    reason = "cache_unwritable"


class StoreDamagedError(CacheUnavailableError):
    """The store's file is corrupt: some entries, or all, cannot be read."""

    reason = "cache_damaged"


#: the reasons of a store that failed as a whole, not of one entry
STORE_DOWN_REASONS = frozenset(
    {CacheUnavailableError.reason, StoreUnwritableError.reason, StoreDamagedError.reason}
)


class EntryFormatError(CacheError):
    """A cache value that is not flag byte + OCSPResponse DER."""

    reason = "entry_format"


class EntryTooLargeError(CacheError):
    reason = "entry_too_large"
    temporary = False


class UnexpectedError(StapleError):
    """A bug met while refreshing one certificate, reported as that
    certificate's failure: it must cost one row, not the whole run."""

    reason = "internal_error"
    temporary = True
