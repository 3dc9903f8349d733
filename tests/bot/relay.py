"""A TCP relay in front of the test PostgreSQL server, for the chaos test: bots connect
through it, and `cut()` takes the database away from them (every connection dropped, new
ones refused, as a restarted server or a broken network does) until `restore()`.

It runs its own event loop in a daemon thread of the test process, so that the test can
cut and restore from plain code: each call returns once the relay has done it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from sqlalchemy.engine import make_url


class Relay:
    """Listens on 127.0.0.1 (a free port) and pipes each connection to `target`."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self.connections = 0  # accepted since the start, for the test's own checks
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    # -- the test's side -----------------------------------------------------------------

    def start(self) -> Relay:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones, until `restore()`."""
        self._call(self._cut())

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        self._call(self._listen())

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def url(self, database_url: str) -> str:
        """`database_url` with this relay's host and port."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)

    def _call(self, coroutine: Any) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        future.result(10)

    # -- the relay's loop ----------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the port refuses connections from now on
        for writer in list(self._pipes):
            writer.transport.abort()  # a reset, not a polite close: the network is gone
        self._pipes.clear()
        if server is not None:
            await server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        if self._server is None:  # cut while it was connecting
            client_writer.transport.abort()
            server_writer.transport.abort()
            return
        pipes = {client_writer, server_writer}
        self._pipes |= pipes
        try:
            await asyncio.gather(_pipe(client_reader, server_writer),
                                 _pipe(server_reader, client_writer))
        finally:
            self._pipes -= pipes
            for writer in pipes:
                writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side closes or fails; then close `writer`."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def relay_to(database_url: str) -> Iterator[Relay]:
    """A relay to the server of `database_url`, closed afterwards."""
    url = make_url(database_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432).start()
    try:
        yield relay
    finally:
        relay.close()
