"""An MQTT broker for the demo: Mosquitto when installed, else amqtt.

Mosquitto runs as a child process with a generated configuration in a
temporary directory, listening on one loopback port with anonymous access.
Without Mosquitto, an embedded amqtt broker runs in the caller's event loop.
Neither is meant for production: the demo needs a broker with no set-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from amqtt.broker import Broker

logger = logging.getLogger(__name__)

_START_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 5.0
_SBIN_PATH: Final = "/usr/sbin:/usr/local/sbin:/sbin"

BrokerKind = Literal["mosquitto", "amqtt"]
BrokerChoice = Literal["auto", "mosquitto", "amqtt"]


class BrokerStartError(RuntimeError):
    """The broker did not start; the message gives the cause and address."""


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


class RunningBroker:
    """A started broker; ``kind`` is ``mosquitto`` or ``amqtt``."""

    def __init__(
        self, host: str, port: int, kind: BrokerKind, handle: _Stoppable
    ) -> None:
        self.host = host
        self.port = port
        self.kind = kind
        self._handle = handle

    def __repr__(self) -> str:
        return (
            f"RunningBroker(kind={self.kind!r}, host={self.host!r}, port={self.port})"
        )

    async def stop(self) -> None:
        """Stop the broker and remove its temporary files."""
        await self._handle.stop()
        logger.info("broker.stopped kind=%s port=%d", self.kind, self.port)


def find_mosquitto() -> str | None:
    """Return the path of the ``mosquitto`` program, or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=_SBIN_PATH)


async def start_broker(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    prefer: BrokerChoice = "auto",
) -> RunningBroker:
    """Start a broker on ``host`` and return once it accepts connections.

    Args:
        host: The address to listen on.
        port: The port; 0 picks a free one.
        prefer: ``auto`` uses Mosquitto when installed, else amqtt.

    Raises:
        BrokerStartError: the port is in use, the chosen broker is not
            available, exited, or did not listen within 10 s.
    """
    if port == 0:
        port = _free_port(host)
    else:
        _check_port_free(host, port)
    executable = find_mosquitto()
    if prefer == "mosquitto" and executable is None:
        raise BrokerStartError(
            "mosquitto not found on PATH: install it with `apt-get install "
            "mosquitto`, or use the embedded broker"
        )

    if executable is not None and prefer != "amqtt":
        handle: _Stoppable = await _MosquittoProcess.start(executable, host, port)
        kind: BrokerKind = "mosquitto"
    else:
        handle = await _EmbeddedBroker.start(host, port)
        kind = "amqtt"
    logger.info("broker.started kind=%s host=%s port=%d", kind, host, port)
    return RunningBroker(host, port, kind, handle)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _check_port_free(host: str, port: int) -> None:
    # A busy port would let the readiness probe connect to the other
    # program, so it is checked before the broker starts.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BrokerStartError(
                f"cannot listen on {host}:{port}: {exc.strerror}; choose "
                "another port or 0 for a free one"
            ) from None


async def _wait_listening(host: str, port: int, alive: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT_S
    while loop.time() < deadline:
        if not alive():
            raise BrokerStartError(f"broker on {host}:{port} exited while starting")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise BrokerStartError(
        f"broker did not listen on {host}:{port} within {_START_TIMEOUT_S} s"
    )


class _MosquittoProcess:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        directory: tempfile.TemporaryDirectory[str],
    ) -> None:
        self._process = process
        self._directory = directory

    @classmethod
    async def start(cls, executable: str, host: str, port: int) -> _MosquittoProcess:
        directory = tempfile.TemporaryDirectory(prefix="cmagent-mosquitto-")
        config = Path(directory.name) / "mosquitto.conf"
        config.write_text(
            f"listener {port} {host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
        )
        log_path = Path(directory.name) / "mosquitto.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                executable,
                "-c",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

        broker = cls(process, directory)
        try:
            await _wait_listening(host, port, lambda: process.returncode is None)
        except BrokerStartError as exc:
            tail = log_path.read_text(errors="replace")[-2000:]
            await broker.stop()
            raise BrokerStartError(f"mosquitto: {exc}; its log:\n{tail}") from None
        return broker

    async def stop(self) -> None:
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._directory.cleanup()


class _EmbeddedBroker:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    @classmethod
    async def start(cls, host: str, port: int) -> _EmbeddedBroker:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerStartError(
                "neither mosquitto nor amqtt is installed: install one with "
                "`apt-get install mosquitto` or `pip install amqtt`"
            ) from exc

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                    "allow_anonymous": True
                },
            },
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:
            raise BrokerStartError(
                f"embedded broker failed to start on {host}:{port}: {exc}"
            ) from exc
        await _wait_listening(host, port, lambda: True)
        return cls(broker)

    async def stop(self) -> None:
        await self._broker.shutdown()
