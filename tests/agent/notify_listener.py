"""A notify socket owned by the test, bound where systemd would bind it."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

MAX_UNIX_PATH = 107
"""Longest ``sun_path`` Linux accepts, without the terminating NUL."""


class NotifyListener:
    """Receives the datagrams a service sends to ``$NOTIFY_SOCKET``.

    ``environ_value`` is what systemd would put in ``NOTIFY_SOCKET``: the
    path, or ``@name`` for an abstract socket.
    """

    def __init__(self, *, path: Path | None = None, abstract: str | None = None):
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is not None:
            assert len(str(path)) <= MAX_UNIX_PATH, f"socket path too long: {path}"
            self._socket.bind(str(path))
            self.environ_value = str(path)
        else:
            assert abstract is not None
            self._socket.bind("\0" + abstract)
            self.environ_value = "@" + abstract
        self._socket.setblocking(False)
        self.received: list[str] = []

    def drain(self) -> list[str]:
        """Return the datagrams that arrived since the last call."""
        new: list[str] = []
        while True:
            try:
                new.append(self._socket.recv(4096).decode())
            except BlockingIOError:
                break
        self.received.extend(new)
        return new

    async def collect(self, count: int, *, timeout_s: float = 10.0) -> list[str]:
        """Wait until ``count`` more datagrams arrive and return them."""
        collected: list[str] = []
        deadline = time.monotonic() + timeout_s
        while len(collected) < count:
            collected.extend(self.drain())
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} notifications within {timeout_s} s, "
                    f"received {collected!r}"
                )
            await asyncio.sleep(0.01)
        return collected

    def close(self) -> None:
        self._socket.close()
