"""memcached or redis for one soak run, restartable EMPTY on the SAME port.

The service's cache URI never changes, so a restart must come back where
it was: tests.servers starts the server on a fixed port for that. Neither
server persists anything here (memcached never does; redis runs with
``--save "" --appendonly no``), so a restarted server is empty, as after
a crash or a reboot.
"""

from __future__ import annotations

import time

from tests.servers import ServerProcess, free_port, start_memcached, start_redis


class CacheServer:
    def __init__(self, kind: str) -> None:
        if kind not in ("memcache", "redis"):
            raise ValueError(f"no server for the {kind!r} provider")
        self.kind = kind
        self._start = start_memcached if kind == "memcache" else start_redis
        self.server: ServerProcess | None = self._start()
        self.port = self.server.port
        self.restarts = 0

    @property
    def uri(self) -> str:
        scheme = "memcache" if self.kind == "memcache" else "redis"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self.server is not None

    def stop(self) -> float:
        """Stop it (SIGTERM, as systemd would); returns when it is gone."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        return time.time()

    def start(self) -> float:
        """Start it again, empty, on the same port; returns when it answers."""
        if self.server is None:
            self.server = self._start(self.port)
            self.restarts += 1
        return time.time()

    def close(self) -> None:
        self.stop()


__all__ = ["CacheServer", "free_port"]
