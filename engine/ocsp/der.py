"""The little DER that OCSP's hot path needs, written and read by hand.

cryptography builds and parses everything we need, but through general
machinery: building a request the general way costs twice what writing
its fixed shape does, and reading who signed a response built two Name
objects in Python (docs/benchmarks.md). Warm does both once per
certificate, tens of thousands of times in a run. These helpers cover only
the fixed shapes of an OCSP request and of ResponseData's first fields;
tests check them byte for byte against cryptography. ``children`` and
``oid_text`` read what lies deeper: a certificate's public key, whatever
its type (engine.ocsp.request.key_hash), and a response as its responder
wrote it, where cryptography will not read it (engine.ocsp.written).
"""

from __future__ import annotations

SEQUENCE = 0x30
OCTET_STRING = 0x04
INTEGER = 0x02


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def integer(value: int) -> bytes:
    """An INTEGER: minimal two's complement, as a certificate's serial is written."""
    magnitude = value if value >= 0 else ~value
    return tlv(INTEGER, value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True))


def header(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``offset``.

    Raises ValueError when the bytes end early or use a form DER forbids
    (a multi-byte tag, an indefinite length).
    """
    if offset + 2 > len(data):
        raise ValueError("truncated DER element")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tag")
    start = offset + 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise ValueError("bad DER length")
        size = int.from_bytes(data[start : start + count], "big")
        start += count
    end = start + size
    if end > len(data):
        raise ValueError("truncated DER element")
    return tag, start, end


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements between ``start`` and ``end`` (a constructed element's
    content), each as (tag, offset of its header, start and end of its content)."""
    found = []
    offset = start
    while offset < end:
        tag, content, after = header(data, offset)
        if after > end:
            raise ValueError("DER element runs past its parent")
        found.append((tag, offset, content, after))
        offset = after
    return found


def oid_text(content: bytes) -> str:
    """An OBJECT IDENTIFIER's content octets as dotted text (1.3.6.1.5.5.7.48.1.1)."""
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or content[-1] & 0x80:
        raise ValueError("truncated OBJECT IDENTIFIER")
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))
