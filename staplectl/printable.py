"""Text from outside, made safe to print on a terminal or in a log.

A responder's reason phrase or Location header, a value planted in a
shared cache, a certificate's subject, a file name: any of them can hold
ESC sequences (clear the screen, recolour, move the cursor, set the window
title) or bidi overrides that make a line read as something it is not, and
a newline would split one log or monitoring line into two. Every such
character is shown escaped instead, as Python would write it (``\\x1b``,
``\\n``, ``\\u202e``); JSON output escapes them on its own.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidi marks, embeddings, overrides and isolates
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` with every control and bidi character escaped: one safe line."""
    return _UNPRINTABLE.sub(_escaped, text)


def printable_lines(text: str) -> str:
    """``printable`` for each line of a text we laid out in lines ourselves."""
    return "\n".join(printable(line) for line in text.split("\n"))
