"""The demo broker: Mosquitto or embedded amqtt, each with a real client."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.broker import BrokerStartError, start_broker
from agent.mqtt import MqttPublisher, PublisherState
from agent.settings import MqttSettings
from tests.agent.mqtt_support import (
    GATEWAY,
    READING_TOPIC,
    STATUS,
    make_reading,
    wait_until,
)
from tests.mosquitto import MqttSubscriber, find_program


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class TestStartBroker:
    @pytest.mark.parametrize("prefer", ["mosquitto", "amqtt"])
    async def test_publisher_reaches_subscriber(self, prefer: str) -> None:
        if prefer == "mosquitto":
            find_program("mosquitto")
        broker = await start_broker(prefer=prefer)  # type: ignore[arg-type]
        settings = MqttSettings(host=broker.host, port=broker.port, reconnect_max=1)
        publisher = MqttPublisher(settings, GATEWAY)
        try:
            assert broker.kind == prefer
            assert broker.host == "127.0.0.1"
            assert broker.port > 0
            publisher.start()
            connected = await asyncio.to_thread(
                wait_until, lambda: publisher.state is PublisherState.CONNECTED
            )
            assert connected

            def receive() -> tuple[bytes, float]:
                with MqttSubscriber(broker.host, broker.port) as subscriber:
                    status = subscriber.wait_for(STATUS).payload
                    publisher.publish_reading(make_reading(4.5))
                    value = subscriber.wait_for(READING_TOPIC).json()["value"]
                return status, value

            status, value = await asyncio.to_thread(receive)
            assert status == b"online"
            assert value == 4.5
        finally:
            await asyncio.to_thread(publisher.stop, 1.0)
            await broker.stop()

        assert not port_accepts(broker.host, broker.port)

    async def test_given_port_used(self) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()

        broker = await start_broker(port=port)
        try:
            assert broker.port == port
            assert port_accepts("127.0.0.1", port)
        finally:
            await broker.stop()

    async def test_busy_port_fails_clearly(self) -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]

            with pytest.raises(BrokerStartError, match=str(port)):
                await start_broker(port=port)
