"""Fixtures for agent tests: real Mosquitto brokers on loopback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# ``tests.mosquitto`` is imported as a namespace package from the repository
# root, which ``python -m pytest`` puts on sys.path but plain ``pytest`` does
# not.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.mosquitto import (  # noqa: E402
    MosquittoBroker,
    MosquittoNotInstalledError,
    TlsFiles,
    make_tls_files,
)

BrokerFactory = Callable[..., MosquittoBroker]


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start Mosquitto brokers with ``MosquittoBroker`` keyword arguments.

    Every broker started through the factory is stopped after the test. A
    missing Mosquitto fails the test, because CI installs it.
    """
    brokers: list[MosquittoBroker] = []

    def start(**options: object) -> MosquittoBroker:
        directory = tmp_path / f"mosquitto-{len(brokers)}"
        try:
            broker = MosquittoBroker(directory, **options)  # type: ignore[arg-type]
        except MosquittoNotInstalledError as exc:
            pytest.fail(str(exc))
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    """A plain Mosquitto broker with anonymous access."""
    return mosquitto_factory()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    """A CA with server and client certificates for 127.0.0.1 and localhost."""
    return make_tls_files(tmp_path / "tls")
