"""Fixtures for agent tests: real Mosquitto brokers on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.mqtt import MqttPublisher, PublisherState
from agent.mqtt_commands import Command
from tests.agent.mqtt_support import GATEWAY, settings_for, wait_until
from tests.mosquitto import (
    MosquittoBroker,
    MosquittoNotInstalledError,
    MqttSubscriber,
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


@pytest.fixture
def subscriber(mosquitto: MosquittoBroker) -> Iterator[MqttSubscriber]:
    """A subscriber to every topic of the ``mosquitto`` broker."""
    with MqttSubscriber(mosquitto.host, mosquitto.port) as client:
        yield client


@pytest.fixture
def publishers() -> Iterator[list[MqttPublisher]]:
    """Publishers a test creates; each is stopped after the test."""
    created: list[MqttPublisher] = []
    yield created
    for publisher in created:
        if publisher.state is not PublisherState.STOPPED:
            publisher.stop(timeout_s=1.0)


@pytest.fixture
def connect(publishers: list[MqttPublisher]) -> Callable[..., MqttPublisher]:
    """Start a publisher for a broker and, unless ``wait=False``, wait
    until it is connected. Keyword arguments override ``MqttSettings``."""

    def start(
        broker: MosquittoBroker,
        *,
        password: str | None = None,
        on_command: Callable[[Command], None] | None = None,
        wait: bool = True,
        **overrides: object,
    ) -> MqttPublisher:
        publisher = MqttPublisher(
            settings_for(broker, **overrides),
            GATEWAY,
            password=password,
            on_command=on_command,
        )
        publishers.append(publisher)
        publisher.start()
        if wait:
            assert wait_until(lambda: publisher.state is PublisherState.CONNECTED)
        return publisher

    return start
