"""DER as a tree, for mutating a valid structure and writing it back.

A byte flip mostly breaks a length and stops the parser at the first
element; a mutation of the tree (another OID, a dropped field, a time
nobody writes) is written back with lengths that fit, so the parser gets
past the framing and into the code that reads the fields. OCTET STRINGs
and BIT STRINGs that hold DER themselves (responseBytes, extension
values, a certificate's key) are opened up too, so that mutations reach
inside the BasicOCSPResponse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

OID = 0x06
OCTET_STRING = 0x04
BIT_STRING = 0x03


@dataclass
class Node:
    tag: int
    #: the content of a primitive element (None for a constructed or wrapping one)
    content: bytes | None = None
    children: list["Node"] = field(default_factory=list)
    #: an OCTET or BIT STRING whose content is itself DER (children[0..])
    wraps: bool = False
    #: what to write in place of the true length (a wrong one), if set
    length: int | None = None
    #: write the length in a non-minimal long form (BER, which DER forbids)
    long_form: bool = False


def _header(data: bytes, offset: int) -> tuple[int, int, int]:
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first < 0x80:
        return tag, start, start + first
    count = first & 0x7F
    size = int.from_bytes(data[start : start + count], "big")
    return tag, start + count, start + count + size


def _parse_all(data: bytes) -> list[Node] | None:
    """Every element in ``data``, or None when it is not a clean run of DER."""
    nodes, offset = [], 0
    try:
        while offset < len(data):
            tag, start, end = _header(data, offset)
            if end > len(data) or tag & 0x1F == 0x1F or data[offset + 1] == 0x80:
                return None
            nodes.append(_node(tag, data[start:end]))
            offset = end
    except IndexError:
        return None
    return nodes


def _node(tag: int, content: bytes) -> Node:
    if tag & 0x20:
        children = _parse_all(content)
        if children is not None:
            return Node(tag, children=children)
        return Node(tag, content=content)
    if tag == OCTET_STRING and content:
        inner = _parse_all(content)
        if inner:
            return Node(tag, children=inner, wraps=True)
    if tag == BIT_STRING and content[:1] == b"\x00" and len(content) > 1:
        inner = _parse_all(content[1:])
        if inner:
            return Node(tag, children=inner, wraps=True)
    return Node(tag, content=content)


def parse(data: bytes) -> Node:
    """The tree of one valid DER element."""
    nodes = _parse_all(data)
    if not nodes or len(nodes) != 1:
        raise ValueError("not one DER element")
    return nodes[0]


def _length(size: int, long_form: bool) -> bytes:
    if size < 0x80 and not long_form:
        return bytes([size])
    body = size.to_bytes(max(1, (size.bit_length() + 7) // 8) + (1 if long_form else 0), "big")
    return bytes([0x80 | len(body)]) + body


def encode(node: Node) -> bytes:
    if node.content is not None:
        content = node.content
    else:
        content = b"".join(encode(child) for child in node.children)
        if node.wraps and node.tag == BIT_STRING:
            content = b"\x00" + content
    size = len(content) if node.length is None else max(0, node.length)
    return bytes([node.tag & 0xFF]) + _length(size, node.long_form) + content


def walk(node: Node, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], Node]]:
    """Every node with its path (child indexes from the root), root first."""
    found = [(path, node)]
    for index, child in enumerate(node.children):
        found += walk(child, path + (index,))
    return found


def copy(node: Node) -> Node:
    return Node(
        node.tag, node.content, [copy(c) for c in node.children], node.wraps, node.length, node.long_form
    )


def at(root: Node, path: tuple[int, ...]) -> Node:
    node = root
    for index in path:
        node = node.children[index]
    return node


def oid(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER."""
    first, second, *rest = (int(a) for a in dotted.split("."))
    out = bytearray()
    for arc in [first * 40 + second, *rest]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def replace_oid(data: bytes, old: str, new: str) -> bytes:
    """``data`` with every OID ``old`` written as ``new``, lengths fixed up."""
    root = parse(data)
    old_content, new_content = oid(old), oid(new)
    hits = [node for _, node in walk(root) if node.tag == OID and node.content == old_content]
    if not hits:
        raise ValueError(f"no OID {old} in the DER")
    for node in hits:
        node.content = new_content
    return encode(root)


def sign_again(root: Node, signed_at: tuple[int, ...], sign) -> None:
    """Sign the SEQUENCE { data, algorithm, signature } at ``signed_at`` again
    with ``sign`` (data -> signature), in place: after an edit of its data,
    the signature verifies again."""
    signed = at(root, signed_at)
    signed.children[2] = Node(BIT_STRING, content=b"\x00" + sign(encode(signed.children[0])))


def find(root: Node, tag: int, content: bytes | None = None) -> tuple[int, ...]:
    """The path of the first node of ``tag`` (and ``content``, if given)."""
    return next(p for p, n in walk(root) if n.tag == tag and (content is None or n.content == content))
