"""Inputs for the fuzz targets: valid structures, mutated.

Random bytes alone rarely get past a parser's first length check, so each
strategy starts from something valid (a signed OCSP response, a
certificate, httpd's cache value, an HTTP answer) and changes a little of
it: in the DER tree (another OID, md2 among them; a field dropped,
doubled or retagged; a time or integer nobody writes; a wrong or
non-minimal length), then in the bytes (flips, inserts, deletes, a cut).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from tests.fuzz import der_tree
from tests.fuzz.der_tree import Node

#: algorithm OIDs a hostile or broken responder may write where another belongs
ODD_OIDS = [
    "1.2.840.113549.1.1.2",  # md2WithRSAEncryption: the reported case
    "1.2.840.113549.1.1.4",  # md5WithRSAEncryption
    "1.2.840.113549.1.1.5",  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.10",  # RSASSA-PSS, without its parameters
    "1.2.840.113549.1.1.11",  # sha256WithRSAEncryption, on an EC key
    "1.2.840.10045.4.1",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.2",  # ecdsa-with-SHA256
    "1.2.840.10045.4.3.4",  # ecdsa-with-SHA512
    "1.3.101.112",  # Ed25519
    "2.16.840.1.101.3.4.3.2",  # dsa-with-sha256
    "1.2.840.113549.2.2",  # md2
    "1.2.840.113549.2.5",  # md5
    "1.3.14.3.2.26",  # sha1
    "2.16.840.1.101.3.4.2.1",  # sha256
    "2.16.840.1.101.3.4.2.4",  # sha224: cryptography knows it, our CertIDs do not
    "2.16.840.1.101.3.4.2.8",  # sha3-256
    "1.3.6.1.5.5.7.48.1.1",  # id-pkix-ocsp-basic
    "1.3.6.1.5.5.7.48.1.2",  # the OCSP nonce
    "1.3.6.1.5.5.7.48.1.5",  # ocsp-nocheck
    "2.5.29.21",  # CRL reason
    "2.5.29.37",  # extended key usage
    "1.3.6.1.5.5.7.1.1",  # authority information access
    "1.3.6.1.5.5.7.1.24",  # TLS feature (must-staple)
    "1.3.6.1.4.1.55555.9",  # a private arc nobody knows
    "2.999.1",
]
#: OID contents no encoder should write
ODD_OID_CONTENTS = [b"", b"\x80", b"\x2a\x86", b"\x2a" + b"\xff" * 24 + b"\x01", b"\x00"]

#: contents worth trying per primitive tag
ODD_CONTENTS = {
    0x01: [b"", b"\x02", b"\x00\x00"],  # BOOLEAN
    0x02: [b"", b"\x00", b"\x00\x01", b"\xff", b"\x80" + b"\x00" * 24, b"\x7f" * 40],  # INTEGER
    0x03: [b"", b"\x08", b"\x07\xff"],  # BIT STRING
    0x05: [b"\x00"],  # NULL with content
    0x0A: [b"", b"\x07", b"\xff", b"\x00\x01"],  # ENUMERATED: responseStatus, CRL reason
    0x17: [b"991231235959Z", b"000101000000Z", b"500101000000Z", b"491231235959Z", b"9912312359Z", b"991331235959Z"],
    0x18: [b"99991231235959Z", b"00010101000000Z", b"19700101000000Z", b"20240230000000Z",
           b"20240101000000.5Z", b"20240101000000.000000001Z", b"20240101000000+0100", b"2024010100Z",
           b"2024010100000Z", b"20241301000000Z", b"20240101246060Z"],
}  # fmt: skip
#: tags a node may be retagged to
TAGS = [0x30, 0x31, 0x04, 0x02, 0x05, 0x06, 0x0A, 0x17, 0x18, 0x80, 0x81, 0xA0, 0xA1, 0xA2, 0xA3, 0x0C, 0x13]
_BYTES = [0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF, 0x30, 0x06, 0xA0]


@st.composite
def byte_mutated(draw, data: bytes) -> bytes:
    """``data`` with one byte-level change."""
    if not data:
        return draw(st.binary(max_size=16))
    op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "append"]))
    i = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
    if op == "set":
        value = draw(st.sampled_from(_BYTES) | st.integers(0, 255))
        return data[:i] + bytes([value]) + data[i + 1 :]
    if op == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
    if op == "delete":
        return data[:i] + data[i + draw(st.integers(1, 8)) :]
    if op == "cut":
        return data[:i]
    return data + draw(st.binary(min_size=1, max_size=16))


def _small_tlv(draw) -> Node:
    tag = draw(st.sampled_from(TAGS))
    if tag == 0x06:
        return Node(tag, content=der_tree.oid(draw(st.sampled_from(ODD_OIDS))))
    return Node(tag, content=draw(st.binary(max_size=12)))


@st.composite
def tree_mutated(draw, data: bytes) -> bytes:
    """``data`` (one valid DER element) with one or two changes in its tree."""
    root = der_tree.parse(data)
    _mutate(draw, root)
    return der_tree.encode(root)


def _mutate(draw, root: Node) -> None:
    """One or two changes in the tree under ``root``, in place."""
    for _ in range(draw(st.integers(1, 2))):
        nodes = der_tree.walk(root)
        oids = [(p, n) for p, n in nodes if n.tag == der_tree.OID]
        # a third of the changes at an OID: the algorithm identifiers behind
        # the reported escapes are a few nodes among a hundred
        path, node = draw(st.sampled_from(oids if oids and draw(st.integers(0, 2)) == 0 else nodes))
        parent = der_tree.at(root, path[:-1]) if path else None
        # weighted towards changes that still parse as DER, so that the
        # code past the parser gets the examples; a wrong tag or length
        # mostly stops at the parser, which needs fewer
        ops = ["tag", "length", "long_form"]
        if node.tag == der_tree.OID:
            ops += ["oid"] * 9
        if node.content is not None:
            ops += ["content"] * 3 + ["cut"]
        else:
            ops += ["insert"]
        if parent is not None:
            ops += ["drop"] * 3 + ["dup"] * 3 + ["swap"] * 2
        op = draw(st.sampled_from(ops))
        if op == "oid":
            node.content = draw(st.sampled_from(ODD_OIDS).map(der_tree.oid) | st.sampled_from(ODD_OID_CONTENTS))
        elif op == "content":
            node.content = draw(st.sampled_from(ODD_CONTENTS.get(node.tag, [b""])) | st.binary(max_size=24))
        elif op == "cut" and node.content:
            node.content = node.content[: draw(st.integers(0, len(node.content) - 1))]
        elif op == "tag":
            node.tag = draw(st.sampled_from(TAGS) | st.integers(0, 255))
        elif op == "length":
            node.length = len(der_tree.encode(node)) + draw(st.sampled_from([-3, -1, 1, 2, 200]))
        elif op == "long_form":
            node.long_form = True
        elif op == "insert":
            node.children.insert(draw(st.integers(0, len(node.children))), _small_tlv(draw))
        elif parent is not None and op in ("drop", "dup", "swap"):
            index = path[-1]
            if op == "drop":
                del parent.children[index]
            elif op == "dup":
                parent.children.insert(index, der_tree.copy(node))
            elif index + 1 < len(parent.children):
                parent.children[index], parent.children[index + 1] = parent.children[index + 1], node


#: where the signed SEQUENCE { data, algorithm, signature } is in an
#: OCSPResponse ([0] { SEQUENCE { type, OCTET STRING { BasicOCSPResponse } } })
BASIC_RESPONSE = (1, 0, 1, 0)
#: and in a certificate: the certificate itself
CERTIFICATE = ()


@st.composite
def resigned(draw, data: bytes, sign: Callable[[bytes], bytes], signed_at: tuple[int, ...] = BASIC_RESPONSE) -> bytes:
    """``data`` with what its signature covers mutated, then signed again by
    ``sign``: the signature verifies, so the checks after it (an OCSP
    response's CertID, times and nonce; a certificate's names and
    extensions) get the example."""
    root = der_tree.parse(data)
    _mutate(draw, der_tree.at(root, signed_at).children[0])
    der_tree.sign_again(root, signed_at, sign)
    return der_tree.encode(root)


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """One of the valid ``seeds`` (DER), mutated in its tree, its bytes, or both."""
    data = draw(st.sampled_from(seeds))
    how = draw(st.sampled_from(["tree"] * 5 + ["tree+bytes", "bytes", "random", "none"]))
    if how == "random":
        return draw(st.binary(max_size=512))
    if how.startswith("tree"):
        data = draw(tree_mutated(data))
    if how.endswith("bytes"):
        for _ in range(draw(st.integers(1, 3))):
            data = draw(byte_mutated(data))
    return data


def responses(plain: list[bytes], signed: list[tuple[bytes, Callable[[bytes], bytes]]]) -> st.SearchStrategy[bytes]:
    """OCSP responses: ``plain`` seeds mutated anywhere, or ``signed`` ones
    (with what signs them) mutated and signed again."""
    return mutated(plain) | st.sampled_from(signed).flatmap(lambda pair: resigned(*pair))


def cache_values(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """httpd's cache value (flag byte + DER) as a shared cache may hold it."""
    flag = st.sampled_from([b"\x01", b"\x00", b"\x02", b"\xff", b""])
    return st.one_of(
        st.tuples(flag, mutated(seeds)).map(b"".join),
        st.binary(max_size=64),
    )


_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
_JSON = st.recursive(
    _JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
#: metadata keys worth a wrong value
META_FIELDS = ["fetched_at", "cert_path", "subject", "serial", "responder", "status", "must_staple", "other"]


@st.composite
def metadata_values(draw) -> bytes | str:
    """What may sit under a metadata key: ours, someone else's JSON, or no JSON at all."""
    import json

    kind = draw(st.sampled_from(["object", "json", "deep", "number", "bytes", "text"]))
    if kind == "object":
        fields = draw(st.dictionaries(st.sampled_from(META_FIELDS) | st.text(max_size=8), _JSON, max_size=8))
        raw = json.dumps(fields).encode()
    elif kind == "json":
        raw = json.dumps(draw(_JSON)).encode()
    elif kind == "deep":  # nesting that a recursive parser pays for with its stack
        depth = draw(st.integers(1, 8000))
        raw = draw(st.sampled_from([b"[" * depth, b'{"a":' * depth, b"[" * depth + b"]" * depth]))
    elif kind == "number":  # past Python's int-from-text limit, or not finite
        raw = draw(st.sampled_from([b"9" * 5000, b'{"serial": ' + b"1" * 4400 + b"}", b"NaN", b"-Infinity", b"1e999"]))
    elif kind == "bytes":
        raw = draw(st.binary(max_size=64))
    else:
        return draw(st.text(max_size=64))
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "utf-32", "raw"]))
    return raw if encoding == "raw" else raw.decode("latin-1").encode(encoding)
