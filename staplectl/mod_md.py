"""mod_md's OCSP store (``MDStapling on``), as httpd 2.4.71 reads it.

``<MDStoreDir>/ocsp/<md name or "other">/ocsp-<sha1 hex of the leaf DER>.json``
with ``response`` (base64url DER, no padding), ``status`` (good or revoked)
and ``valid`` ``{from, until}`` (RFC 822 dates). mod_md reads the file at
start and staples it without asking the responder; it renews when a third
of the validity is left. Certificates that mod_md does not manage live
under "other", which is where staplectl writes.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

from engine.api import Staple

GROUP = "other"


def entry_path(store_dir: Path, cert_id: str) -> Path:
    return store_dir / "ocsp" / GROUP / f"ocsp-{cert_id}.json"


def entry_json(staple: Staple) -> bytes:
    """The file's bytes: the same staple always gives the same bytes."""

    def rfc822(ts: float) -> str:
        return format_datetime(datetime.fromtimestamp(ts, timezone.utc), usegmt=True)

    until = staple.next_update if staple.next_update is not None else staple.this_update
    data = {
        "response": base64.urlsafe_b64encode(staple.der).decode().rstrip("="),
        # mod_md knows good and revoked only; unknown is not worth stapling
        "status": "revoked" if staple.status == "revoked" else "good",
        "valid": {"from": rfc822(staple.this_update), "until": rfc822(until)},
    }
    return json.dumps(data, indent=2).encode() + b"\n"
