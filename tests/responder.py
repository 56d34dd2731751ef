"""A scripted, in-process OCSP responder on 127.0.0.1 for engine and CLI tests.

Every way a responder can go wrong is one `Behaviour` field, scripted for one
leaf serial or as the default. Signatures are real (cryptography), so the
engine's validation is exercised for real, and `openssl ocsp` accepts the
good responses too.

    responder = ScriptedResponder()                # binds a port now: .url is known
    pki = PKI(tmp_path, responder.url)             # leaves' AIA point at it
    responder.pki = pki
    with responder:                                # start() ... stop()
        responder.script(pki.good.serial, Behaviour(cert_status="revoked"))
        responder.default = Behaviour(signer="delegate")
        ...  # fetch from responder.url
        assert responder.requests_for(pki.good) == 1

`ScriptedResponder(pki)` works too when the leaves' AIA need not point here.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import os
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.sha1_signing import resign_response

if TYPE_CHECKING:
    # Only for annotations: at run time nothing from tests.pki is needed.
    from tests.pki import PKI, Issued

_STATUS = {
    "good": ocsp.OCSPCertStatus.GOOD,
    "revoked": ocsp.OCSPCertStatus.REVOKED,
    "unknown": ocsp.OCSPCertStatus.UNKNOWN,
}
_RESPONSE_STATUS = {
    "malformed_request": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    "internal_error": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "try_later": ocsp.OCSPResponseStatus.TRY_LATER,
    "sig_required": ocsp.OCSPResponseStatus.SIG_REQUIRED,
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
}
_SIGNERS = ("issuer", "delegate", "delegate_no_eku", "delegate_expired", "delegate_other_ca", "delegate_weak", "rogue")
_NONCE = ("echo", "omit", "wrong")
_RESPONDER_ID = {"hash": ocsp.OCSPResponderEncoding.HASH, "name": ocsp.OCSPResponderEncoding.NAME}
# A private-arc OID for the padding extension: non-critical, so a verifier ignores it.
_PAD_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
_MAX_REQUEST = 64 * 1024  # no real OCSP request comes near this


@dataclass
class Behaviour:
    """How to answer one request. The defaults give a good, correct response.

    cert_status         "good" | "revoked" (an hour ago, keyCompromise) | "unknown"
    response_status     None (successful) or "malformed_request" | "internal_error" |
                        "try_later" | "sig_required" | "unauthorized" (unsigned error)
    signer              "issuer" (the intermediate) | "delegate" | "delegate_no_eku" |
                        "delegate_expired" | "delegate_other_ca" | "delegate_weak" (RSA-1024) |
                        "rogue"; every signer
                        but the issuer puts its certificate in the response
    responder_id        "hash" (byKey) | "name" (byName), naming the signer
    wrong_certid        answer for serial + 1 instead of the serial asked about
    answer_hash         answer with a CertID of this hash ("sha1", "sha256"...) whatever
                        the request's (None: the request's own)
    this_update_offset  seconds from now for thisUpdate
    next_update_offset  seconds from now for nextUpdate, or None for no nextUpdate
    nonce               "echo" (the request's, if any) | "omit" | "wrong" (random)
    corrupt_signature   flip the last byte of the signature
    sign_sha1           sign with sha1WithRSA (an RSA signer: "delegate_weak")
    pad_to              make the HTTP body exactly this many bytes (a signed padding
                        extension when possible, else trailing junk); never shrinks
    http_status, content_type   of the HTTP answer
    redirect_to         answer 302 with this Location instead
    delay               seconds to wait before answering (stop() cuts it short)
    hang                read the request, then never answer until stop()
    body                send these bytes instead of an OCSP response
    """

    cert_status: str = "good"
    response_status: str | None = None
    signer: str = "issuer"
    responder_id: str = "hash"
    wrong_certid: bool = False
    answer_hash: str | None = None
    this_update_offset: float = -60
    next_update_offset: float | None = 3600 * 24
    nonce: str = "echo"
    corrupt_signature: bool = False
    sign_sha1: bool = False
    pad_to: int | None = None
    http_status: int = 200
    content_type: str = "application/ocsp-response"
    redirect_to: str | None = None
    delay: float = 0
    hang: bool = False
    body: bytes | None = None

    def __post_init__(self) -> None:
        # A typo must fail loudly, not quietly produce a good response.
        for value, allowed, what in (
            (self.cert_status, _STATUS, "cert_status"),
            (self.signer, _SIGNERS, "signer"),
            (self.nonce, _NONCE, "nonce"),
            (self.responder_id, _RESPONDER_ID, "responder_id"),
        ):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
        if self.response_status is not None and self.response_status not in _RESPONSE_STATUS:
            raise ValueError(f"response_status must be None or one of {', '.join(_RESPONSE_STATUS)}")


class ScriptedResponder:
    """An OCSP responder on http://127.0.0.1:PORT/ whose answers tests script.

    POST (DER body) and GET (RFC 5019: URL-encoded base64 DER in the path).
    `request_count`, `requests_for(serial)`, `last_request` (parsed OCSPRequest,
    None if the last one did not parse), `last_method` and `max_in_flight` (the
    most requests being answered at once) record traffic.
    """

    def __init__(self, pki: PKI | None = None, *, port: int = 0) -> None:
        self.pki = pki
        self.default = Behaviour()
        self.last_request: ocsp.OCSPRequest | None = None
        self.last_method: str | None = None
        self._scripts: dict[int, Behaviour] = {}
        self._counts: dict[int, int] = {}
        self._total = 0
        # requests being answered, of those since the last reset (a request
        # told to hang in an earlier test stays out until stop())
        self._in_flight = 0
        self._max_in_flight = 0
        self._generation = 0
        self._lock = threading.Lock()
        # Set by stop(): hanging and delayed handlers wait on it, so stop() never
        # waits for a request that a test told to hang.
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Bind now, so the URL is known before the PKI (whose leaves carry it) exists.
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.responder = self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> ScriptedResponder:
        if self.pki is None:
            raise RuntimeError("set responder.pki before start()")
        if self._stopping.is_set():
            raise RuntimeError("a stopped ScriptedResponder cannot be restarted; make a new one")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"ocsp-responder-{self.port}", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; returns promptly even while requests hang."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()  # only valid while serve_forever runs
            self._thread.join(timeout=2)
        self._server.server_close()

    def __enter__(self) -> ScriptedResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, serial: int | Issued, behaviour: Behaviour | None) -> None:
        """Answer requests for this serial so; None goes back to `default`."""
        with self._lock:
            if behaviour is None:
                self._scripts.pop(_serial(serial), None)
            else:
                self._scripts[_serial(serial)] = behaviour

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._total

    def requests_for(self, serial: int | Issued) -> int:
        with self._lock:
            return self._counts.get(_serial(serial), 0)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    def reset_counts(self) -> None:
        with self._lock:
            self._total = self._max_in_flight = self._in_flight = 0
            self._generation += 1
            self._counts.clear()

    def reset(self) -> None:
        """Back to a fresh responder: default Behaviour, no scripts, zero counts."""
        with self._lock:
            self.default = Behaviour()
            self._scripts.clear()
            self._total = self._max_in_flight = self._in_flight = 0
            self._generation += 1
            self._counts.clear()
            self.last_request = self.last_method = None

    # -- called from handler threads ---------------------------------------

    def _done(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._in_flight -= 1

    def _record(self, method: str, der: bytes | None) -> tuple[ocsp.OCSPRequest | None, Behaviour, int]:
        request = None
        if der is not None:
            try:
                request = ocsp.load_der_ocsp_request(der)
                request.serial_number  # noqa: B018 - multi-request bodies fail here, not later
            except Exception:  # cryptography raises ValueError or NotImplementedError
                request = None
        with self._lock:
            self._total += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self.last_method = method
            self.last_request = request
            if request is None:
                return None, self.default, self._generation
            serial = request.serial_number
            self._counts[serial] = self._counts.get(serial, 0) + 1
            return request, self._scripts.get(serial, self.default), self._generation

    def _answer(self, request: ocsp.OCSPRequest | None, behaviour: Behaviour) -> bytes:
        if behaviour.body is not None:
            return _pad_junk(behaviour.body, behaviour.pad_to)
        if behaviour.response_status is not None:
            status = _RESPONSE_STATUS[behaviour.response_status]
        elif request is None:
            status = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        elif not self._ours(request):
            # Like a real responder asked about a CA it does not serve.
            status = ocsp.OCSPResponseStatus.UNAUTHORIZED
        else:
            return _padded(lambda pad: self._signed(request, behaviour, pad), behaviour.pad_to)
        der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
        return _pad_junk(der, behaviour.pad_to)

    def _ours(self, request: ocsp.OCSPRequest) -> bool:
        # The expected hashes for the request's algorithm, computed the way a
        # client would: build a request for any leaf of ours and read them back.
        assert self.pki is not None
        try:
            reference = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(self.pki.good.cert, self.pki.intermediate.cert, request.hash_algorithm)
                .build()
            )
        except Exception:  # a CertID hash cryptography cannot compute
            return False
        return (request.issuer_key_hash, request.issuer_name_hash) == (
            reference.issuer_key_hash, reference.issuer_name_hash
        )

    def _signed(self, request: ocsp.OCSPRequest, b: Behaviour, pad: int | None) -> bytes:
        assert self.pki is not None
        signer = self.pki.intermediate if b.signer == "issuer" else getattr(self.pki, b.signer)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        revoked = b.cert_status == "revoked"
        name_hash, key_hash, algorithm = request.issuer_name_hash, request.issuer_key_hash, request.hash_algorithm
        if b.answer_hash is not None:  # a CertID of another hash than the client's
            algorithm = getattr(hashes, b.answer_hash.upper())()
            other = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(self.pki.good.cert, self.pki.intermediate.cert, algorithm)
                .build()
            )
            name_hash, key_hash = other.issuer_name_hash, other.issuer_key_hash
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=request.serial_number + (1 if b.wrong_certid else 0),
            algorithm=algorithm,  # echo the CertID hash the client used, unless told otherwise
            cert_status=_STATUS[b.cert_status],
            this_update=now + dt.timedelta(seconds=b.this_update_offset),
            next_update=(
                None if b.next_update_offset is None else now + dt.timedelta(seconds=b.next_update_offset)
            ),
            revocation_time=now - dt.timedelta(hours=1) if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        )
        builder = builder.responder_id(_RESPONDER_ID[b.responder_id], signer.cert)
        if b.signer != "issuer":
            # A delegate must ship its certificate: the client has no other way to find it.
            builder = builder.certificates([signer.cert])
        nonce = _nonce_of(request)
        if b.nonce == "echo" and nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        elif b.nonce == "wrong":
            wrong = os.urandom(len(nonce) if nonce else 16)
            builder = builder.add_extension(x509.OCSPNonce(wrong), critical=False)
        if pad is not None:
            # Content is an OCTET STRING of zeros, so the extension stays well-formed DER.
            builder = builder.add_extension(
                x509.UnrecognizedExtension(_PAD_OID, _octet_string(b"\0" * pad)), critical=False
            )
        response = builder.sign(signer.key, hashes.SHA256())
        der = response.public_bytes(serialization.Encoding.DER)
        if b.sign_sha1:
            der = resign_response(der, response.tbs_response_bytes, response.signature, signer.key)
        if b.corrupt_signature:
            # The signature BIT STRING is not at the end when certificates follow
            # it, so find it. Changing its last byte keeps the DER parseable and
            # the ECDSA/RSA value wrong.
            at = der.rindex(response.signature) + len(response.signature) - 1
            der = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1:]
        return der


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for handler threads
    # socketserver's default backlog of 5 drops the SYNs of a burst of
    # connections (warm starts 64 at once), and each dropped one costs its
    # client a second before it tries again
    request_queue_size = 256
    responder: ScriptedResponder


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that connects and never sends must not pin a thread forever

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        der = self.rfile.read(length) if 0 <= length <= _MAX_REQUEST else None
        self._respond("POST", der)

    def do_GET(self) -> None:
        # RFC 5019 section 5: GET {url}/{url-encoding of base-64 encoding of the DER request}
        encoded = urllib.parse.unquote(self.path.split("?", 1)[0].lstrip("/"))
        try:
            der = base64.b64decode(encoded, validate=True)
        except ValueError:
            der = None
        self._respond("GET", der)

    def _respond(self, method: str, der: bytes | None) -> None:
        responder = self.server.responder
        request, behaviour, generation = responder._record(method, der)
        try:
            self._answer(responder, request, behaviour)
        finally:
            responder._done(generation)

    def _answer(self, responder: ScriptedResponder, request: ocsp.OCSPRequest | None, behaviour: Behaviour) -> None:
        stopping = responder._stopping
        if behaviour.hang:
            stopping.wait()
        elif behaviour.delay > 0:
            stopping.wait(behaviour.delay)
        if stopping.is_set():
            self.close_connection = True
            return  # drop the connection unanswered, as a dying responder would
        if behaviour.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", behaviour.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            body = responder._answer(request, behaviour)
        except Exception as exc:  # a bug here should show up as a 500, not a hang
            body, behaviour = repr(exc).encode(), Behaviour(http_status=500, content_type="text/plain")
        self.send_response(behaviour.http_status)
        self.send_header("Content-Type", behaviour.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean; tests assert on counts instead


def _serial(serial: int | Issued) -> int:
    return serial if isinstance(serial, int) else serial.cert.serial_number


def _nonce_of(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _octet_string(content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([0x04, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(size)]) + size + content


def _pad_junk(body: bytes, pad_to: int | None) -> bytes:
    if pad_to is None or len(body) >= pad_to:
        return body
    return body + b"\0" * (pad_to - len(body))


def _padded(build: Callable[[int | None], bytes], pad_to: int | None) -> bytes:
    """A signed response of exactly pad_to bytes, grown through the padding extension.

    ECDSA signatures vary by a byte or two from one signing to the next, and
    DER lengths grow at 128/256/65536, so converge by rebuilding; if that
    does not land exactly, fall back to trailing junk.
    """
    plain = build(None)
    if pad_to is None or len(plain) >= pad_to:
        return plain
    pad = max(0, pad_to - len(plain) - 8)
    best = plain
    for _ in range(50):
        der = build(pad)
        if len(der) == pad_to:
            return der
        if len(best) < len(der) < pad_to:
            best = der
        pad = max(0, pad + pad_to - len(der))
    return _pad_junk(best, pad_to)
