"""One OCSP exchange over a non-blocking socket, many at once on one thread.

``transport.post`` blocks a thread for each exchange; to keep 64 in flight
it needs 64 threads, and their hand-offs of the GIL cost more CPU than the
exchanges themselves. An ``Exchange`` is the same request (transport.plan
writes it) and the same parsing of the answer (transport.read_answer over
the bytes received so far), driven by a selector: connect, send, read until
the answer is complete or the connection ends. engine.refresh.fanout runs many.

Plain HTTP only: OCSP is served over http (RFC 5019 and the CA/Browser
Forum ask for it), and the rare https responder goes through
``transport.post`` in a thread instead.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
from collections.abc import Sequence
from typing import Any

from engine.errors import FetchError, ResponseTooLargeError, StapleError, UnexpectedError
from engine.responders.transport import BufferReader, NeedMore, Plan, fetch_error, read_answer

#: read this much at a time; an OCSP answer is usually under 2 KiB
_RECV = 65536
#: what a response head (status line and fields) may add to the body's cap
_HEAD_ALLOWANCE = 65536

Address = tuple[Any, ...]
#: (family, sockaddr) pairs, in the order getaddrinfo gave them
Addresses = Sequence[tuple[int, Address]]


class Exchange:
    """Connect, send, read; ``step`` on every event the selector reports.

    The exchange keeps its socket registered with ``selector`` (with itself
    as the key's data) for what it waits for next: writable while
    connecting and sending, readable after. ``step`` returns True when the
    exchange is over: then ``body()`` returns the OCSP response or raises
    the FetchError, exactly what ``transport.post`` would have (or an
    UnexpectedError for a bug met on the way).
    """

    def __init__(
        self, plan: Plan, addresses: Addresses, deadline: float, selector: selectors.BaseSelector
    ) -> None:
        if plan.tls:
            raise ValueError(f"{plan.url}: an Exchange speaks plain HTTP; https goes through transport.post")
        self.plan = plan
        #: time.monotonic() past which the exchange has failed
        self.deadline = deadline
        self.events = selectors.EVENT_WRITE
        self.sock: socket.socket | None = None
        self._selector = selector
        self._addresses = list(addresses)
        self._sent = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._body: bytes | None = None
        self._error: StapleError | None = None
        self._connect_next(None)

    # -- the states ----------------------------------------------------------

    def _connect_next(self, last: OSError | None) -> None:
        """Try the next address (as socket.create_connection does), or fail with the last error."""
        self.close()
        if not self._addresses:
            self._fail(last or OSError(errno.EHOSTUNREACH, "no address to connect to"))
            return
        family, address = self._addresses.pop(0)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        self.sock = sock
        self.events = selectors.EVENT_WRITE
        try:
            sock.connect(address)
        except BlockingIOError:
            pass  # connecting: writable when done
        except OSError as exc:
            self._connect_next(exc)
            return
        self._selector.register(sock, self.events, self)
        # Try to send now: over loopback or a near network the connection is
        # often up already, and waiting for the selector to say so costs a
        # round of the loop (every other exchange's work) before the request
        # even leaves. Still connecting, the send would block: it waits then.
        self.step(selectors.EVENT_WRITE)

    def step(self, events: int) -> bool:
        """Move on after ``events``; True when the exchange is over."""
        if self.done:
            return True
        try:
            if self.events == selectors.EVENT_WRITE:
                self._send()
            elif events & selectors.EVENT_READ:
                self._receive()
        except BlockingIOError:
            pass  # not yet after all: the selector says when
        except OSError as exc:
            if self._sent == 0 and self._addresses:
                self._connect_next(exc)  # refused on this address: the next
            else:
                self._fail(exc)
        return self.done

    def _send(self) -> None:
        assert self.sock is not None
        if self._sent == 0:
            problem = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if problem:
                raise OSError(problem, os.strerror(problem))  # ConnectionRefusedError and the like
        self._sent += self.sock.send(self.plan.payload[self._sent :])
        if self._sent >= len(self.plan.payload):
            self.events = selectors.EVENT_READ
            self._selector.modify(self.sock, self.events, self)

    def _receive(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(_RECV)
        if data:
            self._chunks.append(data)
            self._size += len(data)
        eof = not data or self._size > self.plan.max_size + _HEAD_ALLOWANCE
        raw = b"".join(self._chunks)
        if len(self._chunks) > 1:
            self._chunks = [raw]
        try:
            self._body = read_answer(self.plan.label, BufferReader(raw, eof), self.plan.max_size)
        except NeedMore:
            return  # the answer goes on: wait for more
        except Exception as exc:
            if eof and self._size > self.plan.max_size + _HEAD_ALLOWANCE and not isinstance(exc, FetchError):
                exc = ResponseTooLargeError(
                    f"responder {self.plan.url}: response exceeds the cap of {self.plan.max_size} bytes"
                )
            self._fail(exc)
            return
        self.close()

    def _fail(self, exc: BaseException) -> None:
        self.close()
        # anything fetch_error does not know is a bug here: it must cost
        # this exchange, not the loop running every other one
        self._error = fetch_error(exc, self.plan) or UnexpectedError(
            f"responder {self.plan.url}: unexpected {type(exc).__name__}: {exc}"
        )

    # -- the outcome ---------------------------------------------------------

    @property
    def answered(self) -> bool:
        """The responder sent something back (whatever it was)."""
        return self._size > 0

    @property
    def done(self) -> bool:
        return self._body is not None or self._error is not None

    def expire(self) -> None:
        """The deadline has passed: fail as transport.post would."""
        if not self.done:
            self._fail(TimeoutError("deadline reached"))

    def body(self) -> bytes:
        if self._error is not None:
            raise self._error
        if self._body is None:
            raise RuntimeError("the exchange is not over")
        return self._body

    def close(self) -> None:
        if self.sock is not None:
            try:
                self._selector.unregister(self.sock)
            except KeyError:
                pass  # never registered: its connect failed at once
            self.sock.close()
            self.sock = None
