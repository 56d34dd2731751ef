"""Fuzzing the HTTP reader: whatever a responder sends, the body, or an
error that transport.post and engine.responders.exchange turn into a
FetchError (transport.fetch_error); never one they pass on as a bug.

Both read through transport.read_answer: post over the socket, the
exchange over the bytes received so far (BufferReader), as here.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.errors import FetchError
from engine.responders.transport import BufferReader, NeedMore, fetch_error, plan, read_answer
from tests.fuzz.http_answers import http_answers
from tests.fuzz.profiles import budget

URL = "http://127.0.0.1:9/ocsp"
PLAN = plan(URL, b"request")


def _answer_or_fetch_error(data: bytes, max_size: int, eof: bool = True) -> bytes | None:
    try:
        body = read_answer(URL, BufferReader(data, eof), max_size)
    except NeedMore:
        assert not eof, "NeedMore after the connection ended"
        return None
    except Exception as exc:
        error = fetch_error(exc, PLAN)  # what post and the exchange do with it
        assert isinstance(error, FetchError), f"{type(exc).__name__}: {exc}"
        assert str(error)
        return None
    assert len(body) <= max_size
    return body


@budget(2000)
@given(data=st.data(), max_size=st.sampled_from([512, 65536]))
def test_read_answer(seeds, data, max_size):
    body = data.draw(st.sampled_from(seeds.responses_der) | st.binary(max_size=64))
    _answer_or_fetch_error(data.draw(http_answers(body)), max_size)


@budget(1000)
@given(data=st.data())
def test_read_answer_as_it_arrives(seeds, data):
    """The exchange parses whatever has arrived: a prefix needs more, or is
    already an answer or an error."""
    answer = data.draw(http_answers(data.draw(st.sampled_from(seeds.responses_der))))
    cut = data.draw(st.integers(0, len(answer)))
    _answer_or_fetch_error(answer[:cut], 65536, eof=False)


@budget(500)
@given(data=st.binary(max_size=256))
def test_read_answer_of_random_bytes(data):
    _answer_or_fetch_error(data, 65536)
