"""HAProxy's runtime API: hand a renewed staple to a running HAProxy.

HAProxy reads ``<cert>.ocsp`` only when it starts or reloads. Its stats
socket (``stats socket PATH level admin``) accepts
``set ssl ocsp-response <base64 DER>``, which replaces the staple in memory
at once, with no reload. Facts checked with HAProxy 2.6 (docs/haproxy.md):

- The command only updates a certificate whose OCSP stapling was set up
  at load, i.e. one that had a ``<cert>.ocsp`` file then (an empty file is
  enough: HAProxy warns that it cannot parse it and staples nothing until
  a response is pushed). Any other answers "OCSP single response:
  Certificate ID does not match any certificate or issuer."
- HAProxy finds the certificate by the response's CertID, so the command
  names no file.
- HAProxy staples a response only until nextUpdate - 300 s, and accepts a
  push of one it will never staple. Renew well before that.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path

from engine.api import StapleError

#: HAProxy's answer when the staple was replaced
UPDATED = "OCSP Response updated"
DEFAULT_TIMEOUT = 5.0


class HAProxyAPIError(StapleError):
    """HAProxy could not be reached on its socket, or refused the command."""

    reason = "haproxy_api"


class HAProxyUnreachableError(HAProxyAPIError):
    """No answer at all: the next command would fare no better."""


def command(socket_path: str | Path, line: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Send one command and return HAProxy's whole answer.

    Outside interactive mode HAProxy closes the connection after one
    answer, so reading to EOF is reading the answer.
    """
    where = f"HAProxy stats socket {socket_path}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(line.encode("ascii") + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except TimeoutError:
        raise HAProxyUnreachableError(f"{where}: no complete answer within {timeout:g} s") from None
    except OSError as exc:
        raise HAProxyUnreachableError(f"{where}: {exc.strerror or exc}") from None
    return b"".join(chunks).decode("utf-8", "replace")


def set_ocsp_response(socket_path: str | Path, der: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Replace the staple of the certificate this response is for; HAProxy's answer.

    One line, as every HAProxy version since 1.5 takes it: a staple fits
    httpd's 10,240-byte limit, whose base64 stays under HAProxy's default
    16 KiB command buffer (tune.bufsize).
    """
    answer = command(socket_path, "set ssl ocsp-response " + base64.b64encode(der).decode("ascii"), timeout=timeout)
    if UPDATED not in answer:
        said = " ".join(answer.split()) or "nothing"
        raise HAProxyAPIError(f"HAProxy at {socket_path} refused the staple: {said}")
    return answer.strip()
