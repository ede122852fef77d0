"""A loopback TCP relay that puts network faults in front of a server.

The OPC UA simulator listens through this relay so a test can make the
server slow, mute or cut off without touching the OPC UA stack: bytes are
relayed unchanged, only held back, delayed or dropped with the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

logger = logging.getLogger(__name__)

_READ_SIZE = 65536


class FaultRelay:
    """Relay TCP connections from a public port to an upstream port.

    Args:
        host: address to listen on, normally ``127.0.0.1``.
        port: port to listen on; 0 picks a free one, read back from
            :attr:`port` after :meth:`start`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        # Applied before relaying each block of up to 64 KiB from the server,
        # so a large response split over several blocks is delayed several times.
        self._requested_port = port
        self.upstream_port = 0
        self.delay_s = 0.0
        self._answering = asyncio.Event()
        self._answering.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port the relay listens on."""
        if self._server is None:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start listening; connections are relayed to :attr:`upstream_port`."""
        self._server = await asyncio.start_server(
            self._relay_connection, self.host, self._requested_port
        )

    async def stop(self) -> None:
        """Stop listening and close every relayed connection."""
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def stop_answering(self) -> None:
        """Hold back every byte from the server until :meth:`resume_answering`.

        Connections stay open, so the client sees a peer that accepts
        requests and never responds.
        """
        self._answering.clear()

    def resume_answering(self) -> None:
        """Deliver held-back responses and relay normally again."""
        self._answering.set()

    async def drop_connections(self) -> None:
        """Close every relayed connection, both sides, at once."""
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        self._writers.clear()
        self._tasks.clear()

    async def _relay_connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.host, self.upstream_port
            )
        except OSError as exc:
            logger.debug("relay.upstream_unreachable", extra={"cause": repr(exc)})
            client_writer.close()
            return

        self._writers.update((client_writer, upstream_writer))
        to_server = asyncio.create_task(
            self._pump(client_reader, upstream_writer, answers=False)
        )
        to_client = asyncio.create_task(
            self._pump(upstream_reader, client_writer, answers=True)
        )
        self._tasks.update((to_server, to_client))
        await asyncio.wait((to_server, to_client), return_when="FIRST_COMPLETED")

        for task in (to_server, to_client):
            task.cancel()
            self._tasks.discard(task)
        for writer in (client_writer, upstream_writer):
            writer.close()
            self._writers.discard(writer)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        answers: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(_READ_SIZE):
                if answers:
                    await self._answering.wait()
                    if self.delay_s > 0:
                        await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
