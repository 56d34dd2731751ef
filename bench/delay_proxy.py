"""A delay in front of a responder, as a network would put there: an asyncio
proxy on loopback that passes each connection on ``delay`` seconds after
its first bytes (bench/warm.py --latency).

Run in a process of its own, so that its CPU is counted apart from the
client's and the responder's.
"""

from __future__ import annotations

import multiprocessing


def delay_proxy(listen_port: int, upstream_port: int, delay: float, ready: multiprocessing.Event) -> None:
    """Forward each connection to the responder ``delay`` seconds after its
    first bytes, as a responder across a network would answer.

    asyncio with protocols, not streams: the proxy stands for a network,
    which costs the machine nothing, so it should cost as little CPU as it
    can (streams cost about twice as much per exchange).
    """
    import asyncio

    loop = asyncio.new_event_loop()

    class Upstream(asyncio.Protocol):
        def __init__(self, client: Client) -> None:
            self.client = client

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.client.transport.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.client.transport.close()  # after what is buffered is sent

    class Client(asyncio.Protocol):
        upstream: asyncio.Transport | None = None
        waiting = False
        closed = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.pending: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            if self.upstream is not None:
                self.upstream.write(data)
                return
            self.pending.append(data)
            if not self.waiting:
                self.waiting = True
                loop.call_later(delay, self.open)

        def open(self) -> None:
            # never hand openssl an empty connection (see tests/openssl_responder.py)
            if not self.closed:
                loop.create_task(loop.create_connection(lambda: Upstream(self), "127.0.0.1", upstream_port)).add_done_callback(self.opened)

        def opened(self, task: asyncio.Task) -> None:
            if task.exception() is not None:
                self.transport.close()
                return
            self.upstream, _ = task.result()
            for data in self.pending:
                self.upstream.write(data)
            self.pending = []
            if self.closed:
                self.upstream.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self.closed = True
            if self.upstream is not None:
                self.upstream.close()

    async def main() -> None:
        server = await loop.create_server(Client, "127.0.0.1", listen_port, backlog=4096)
        ready.set()
        await server.serve_forever()

    loop.run_until_complete(main())
