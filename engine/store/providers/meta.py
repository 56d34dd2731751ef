"""staplectl's metadata beside a staple, read as untrusted input.

Anyone who can write to a shared memcached or redis can write our metadata
keys too. So a value is read against a schema: a JSON object of bounded
size; each known field of its own type and length; other fields only as
short scalars (text, numbers, true/false), at most MAX_FIELDS of them.
Anything else is dropped, and what was wrong is said (``problem``) so that
the entry shows its metadata as junk, for that entry alone. Nothing here
is ever used to name a file to open: a path in it is shown, never followed
(see docs/security.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

#: a real value is a few hundred bytes
MAX_META_BYTES = 16 * 1024
MAX_FIELDS = 32
#: the longest text of a field outside the schema
MAX_OTHER_TEXT = 256

#: field -> (type, longest text)
_SCHEMA: dict[str, tuple[type, int]] = {
    "fetched_at": (str, 40),
    "cert_path": (str, 4096),
    "subject": (str, 2048),
    "serial": (str, 128),
    "responder": (str, 2048),
    "status": (str, 16),
    "must_staple": (bool, 0),
}


def dump_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def load_meta(raw: bytes | str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The metadata's valid fields, and what was wrong with the rest (None: nothing)."""
    if raw is None:
        return None, None
    if len(raw) > MAX_META_BYTES:
        return None, f"metadata of {len(raw)} bytes, over the {MAX_META_BYTES}-byte limit"
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "metadata is not JSON"
    except RecursionError:  # "[[[[...": 16 KiB of it is 16,000 levels, past Python's stack
        return None, "metadata is JSON nested too deeply to read"
    if not isinstance(data, dict):
        return None, f"metadata is a JSON {type(data).__name__}, not an object"
    meta: dict[str, Any] = {}
    bad = []
    for key, value in list(data.items())[:MAX_FIELDS]:
        if _fits(key, value):
            meta[key] = value
        else:
            bad.append(key[:64])
    if len(data) > MAX_FIELDS:
        bad.append(f"{len(data) - MAX_FIELDS} fields over the {MAX_FIELDS}-field limit")
    problem = f"metadata fields of the wrong type or size: {', '.join(bad)}" if bad else None
    return meta, problem


def _fits(key: str, value: Any) -> bool:
    if value is None:
        return True
    if key in _SCHEMA:
        kind, longest = _SCHEMA[key]
        return type(value) is kind and (kind is not str or len(value) <= longest)
    if isinstance(value, str):
        return len(value) <= MAX_OTHER_TEXT
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (bool, int)) and abs(value) < 2**63
