"""HTTP answers as a responder, a proxy or anything on the path may send them.

Built from parts that each go wrong on their own: the status line (a code
in superscript digits, which str.isdigit accepts and int refuses), header
fields (Content-Length of 5,000 digits, past Python's int-from-text limit;
folded lines; a hundred of them), the framing (chunked with odd sizes and
extensions, a length that lies), then a few byte-level changes on top.
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.fuzz.strategies import byte_mutated

OCSP_TYPE = b"application/ocsp-response"

_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/", b"http/1.1", b"HTTPS/1.1", b""]
_CODES = [b"200", b"204", b"301", b"302", b"404", b"500", b"100", b"101", b"199", b"099", b"2\xb200",
          b"\xb2\xb3\xb9", b"2\xb20", b"20", b"2000", b"-20", b"+20", b" 200", b"\xbd00"]  # fmt: skip
_LENGTHS = [b"0", b"-1", b"+5", b"1,1", b" 5 ", b"0x10", b"99999999999999999999", b"9" * 5000, b"\xb2",
            b"1\xb2", b"\xbd", b"1_0", b""]  # fmt: skip
_CHUNK_SIZES = [b"0", b"-1", b"+1", b"0x10", b"1_0", b"f" * 40, b"ffffffffffffffff", b"\xb2", b"1;a=b",
                b"1 ;x", b"", b" ", b"Z"]  # fmt: skip


@st.composite
def _chunked(draw, body: bytes) -> bytes:
    out, at = b"", 0
    while at < len(body):
        size = draw(st.integers(1, max(1, len(body) - at)))
        text = draw(st.just(format(size, "x").encode()) | st.sampled_from(_CHUNK_SIZES))
        out += text + b"\r\n" + body[at : at + size] + draw(st.sampled_from([b"\r\n", b"\n", b"", b"xx\r\n"]))
        at += size
    return out + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"", b"0"]))


@st.composite
def http_answers(draw, body: bytes) -> bytes:
    """An HTTP/1.x answer carrying ``body`` (or another), mostly well formed."""
    head = b""
    if draw(st.integers(0, 7)) == 0:  # an interim answer first
        head += b"HTTP/1.1 100 Continue\r\n\r\n"
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + _VERSIONS))
    code = draw(st.sampled_from([b"200"] * 6 + _CODES) | st.integers(0, 999).map(lambda n: str(n).encode()))
    reason = draw(st.sampled_from([b" OK", b"", b" \x1b[2Jgone", b" " + b"x" * 80, b" OK\r"]))
    head += version + b" " + code + reason + b"\r\n"
    fields = [(b"Content-Type", draw(st.sampled_from([OCSP_TYPE] * 6 + [b"text/html", b"", OCSP_TYPE + b"; x=y",
                                                                         b"APPLICATION/OCSP-RESPONSE"])))]  # fmt: skip
    chunked = draw(st.booleans())
    if chunked:
        fields.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked", b"gzip, chunked"]))))
        payload = draw(_chunked(body))
    else:
        payload = body
    if draw(st.booleans()):
        length = str(len(body)).encode()
        fields.append((b"Content-Length", draw(st.sampled_from([length] * 4 + _LENGTHS))))
    if draw(st.integers(0, 5)) == 0:
        fields.append((b"Location", b"http://elsewhere.test/\x1b]0;title\x07"))
    lines = [name + b": " + value for name, value in fields]
    shape = draw(st.sampled_from(["plain"] * 6 + ["folded", "bare-lf", "many", "no-colon", "long"]))
    if shape == "folded":
        lines.insert(draw(st.integers(0, len(lines))), b" folded continuation")
    elif shape == "many":
        lines += [b"X-Filler: %d" % n for n in range(101)]
    elif shape == "no-colon":
        lines.append(b"Not a field")
    elif shape == "long":
        lines.append(b"X-Long: " + b"a" * 70_000)
    end = b"\n" if shape == "bare-lf" else b"\r\n"
    data = head + b"".join(line + end for line in lines) + end + payload
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        data = draw(byte_mutated(data))
    return data
