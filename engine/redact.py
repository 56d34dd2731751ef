"""Secrets out of what gets printed: messages end up in logs, tickets and chat."""

from __future__ import annotations

import re

_PASSWORD = re.compile(r"^(\w+://[^/@:]*):[^/@]*@")


def redact(uri: str) -> str:
    """The URI without its password (``redis://user:secret@host`` -> ``redis://user:***@host``)."""
    return _PASSWORD.sub(r"\1:***@", uri)
