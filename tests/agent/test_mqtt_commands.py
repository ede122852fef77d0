"""Commands over MQTT: parsing, and delivery from a real Mosquitto."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from agent.mqtt import PublisherState
from agent.mqtt_commands import (
    MAX_COMMAND_BYTES,
    Command,
    CommandName,
    InvalidCommandError,
    parse_command,
)
from tests.agent.mqtt_support import BASE, wait_until
from tests.mosquitto import MosquittoBroker, MqttSubscriber

CMD = f"{BASE}/cmd"


class Inbox:
    """Collects commands delivered to the publisher's callback."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, command: Command) -> None:
        with self._lock:
            self.commands.append(command)
            self.threads.add(threading.current_thread().name)

    def names(self) -> list[CommandName]:
        with self._lock:
            return [c.name for c in self.commands]


def subscribed_count(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        r.getMessage().startswith("mqtt.commands_subscribed") for r in caplog.records
    )


def rejected_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("mqtt.command_rejected")
    ]


class TestParseCommand:
    def test_request_waveform_with_asset(self) -> None:
        command = parse_command("t", "request-waveform", b'{"asset": "pump-1"}')

        assert command.name is CommandName.REQUEST_WAVEFORM
        assert command.asset == "pump-1"

    @pytest.mark.parametrize("payload", [b"", b"{}", b"  "])
    def test_reload_with_empty_payload(self, payload: bytes) -> None:
        command = parse_command("t", "reload", payload)

        assert command.name is CommandName.RELOAD
        assert command.asset is None

    @pytest.mark.parametrize(
        ("name", "payload", "reason"),
        [
            ("shutdown", b"{}", "unknown command"),
            ("request-waveform", b'{"asset": "pu', "not JSON"),
            ("request-waveform", b"[1, 2]", "expected a JSON object"),
            ("request-waveform", b"{}", "missing argument 'asset'"),
            ("request-waveform", b'{"asset": 7}', "expected a string"),
            ("request-waveform", b'{"asset": "a/#"}', "A-Za-z0-9"),
            ("request-waveform", b'{"asset": "p", "x": 1}', "unknown arguments"),
            ("reload", b'{"force": true}', "unknown arguments"),
            ("reload", b"\xff\xfe", "not UTF-8"),
            ("reload", b"x" * (MAX_COMMAND_BYTES + 1), "bytes, expected at most"),
        ],
    )
    def test_rejects_invalid(self, name: str, payload: bytes, reason: str) -> None:
        with pytest.raises(InvalidCommandError) as caught:
            parse_command("t", name, payload)

        assert reason in caught.value.reason


@pytest.fixture
def connect_commands(connect, caplog: pytest.LogCaptureFixture):
    """Connect with commands enabled and wait until the broker acknowledged
    the command subscription."""
    caplog.set_level(logging.INFO, logger="agent.mqtt")

    def start(broker: MosquittoBroker, on_command) -> object:
        before = subscribed_count(caplog)
        publisher = connect(broker, on_command=on_command, commands_enabled=True)
        assert wait_until(lambda: subscribed_count(caplog) > before)
        return publisher

    return start


class TestMqttPublisherCommands:
    def test_disabled_by_default(
        self, mosquitto: MosquittoBroker, subscriber: MqttSubscriber, connect
    ) -> None:
        inbox = Inbox()
        publisher = connect(mosquitto, on_command=inbox)

        subscriber.publish(f"{CMD}/reload", b"{}")
        publisher.publish_health("pump-1", {"marker": 1})
        subscriber.wait_for(f"{BASE}/pump-1/health")

        assert inbox.names() == []

    def test_commands_delivered_to_callback(
        self, mosquitto: MosquittoBroker, subscriber: MqttSubscriber, connect_commands
    ) -> None:
        inbox = Inbox()
        connect_commands(mosquitto, inbox)

        subscriber.publish(f"{CMD}/request-waveform", b'{"asset": "fan-2"}')
        subscriber.publish(f"{CMD}/reload", b"")

        assert wait_until(lambda: len(inbox.names()) == 2)
        assert inbox.names() == [CommandName.REQUEST_WAVEFORM, CommandName.RELOAD]
        assert inbox.commands[0].asset == "fan-2"
        assert inbox.commands[0].topic == f"{CMD}/request-waveform"
        assert threading.main_thread().name not in inbox.threads

    def test_malformed_logged_once_and_dropped(
        self,
        mosquitto: MosquittoBroker,
        subscriber: MqttSubscriber,
        connect_commands,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger="agent.mqtt")
        inbox = Inbox()
        publisher = connect_commands(mosquitto, inbox)
        junk = b"\x00junk" * (2 * 1024 * 1024 // 5)

        subscriber.publish(f"{CMD}/request-waveform", b'{"asset": "pu')
        subscriber.publish(f"{CMD}/request-waveform", junk)
        subscriber.publish(f"{CMD}/self-destruct", b"{}")
        subscriber.publish(f"{CMD}/request-waveform", b'{"asset": ["x"]}')
        subscriber.publish(f"{CMD}/request-waveform", b'{"asset": "pump-1"}')

        assert wait_until(lambda: len(inbox.names()) == 1)
        assert inbox.commands[0].asset == "pump-1"
        lines = rejected_lines(caplog)
        assert len(lines) == 4
        assert "not JSON" in lines[0]
        assert f"size={len(junk)} " in lines[1]
        assert "unknown command" in lines[2]
        assert "expected a string" in lines[3]
        assert all(len(line) < 400 for line in lines)
        assert publisher.state is PublisherState.CONNECTED

    def test_callback_error_keeps_loop_alive(
        self,
        mosquitto: MosquittoBroker,
        subscriber: MqttSubscriber,
        connect_commands,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        delivered: list[Command] = []

        def explode_once(command: Command) -> None:
            delivered.append(command)
            if len(delivered) == 1:
                raise RuntimeError("handler failed")

        publisher = connect_commands(mosquitto, explode_once)

        subscriber.publish(f"{CMD}/reload", b"")
        subscriber.publish(f"{CMD}/reload", b"")

        assert wait_until(lambda: len(delivered) == 2)
        assert publisher.state is PublisherState.CONNECTED
        assert "mqtt.command_failed" in caplog.text

    def test_subscription_restored_after_restart(
        self,
        mosquitto: MosquittoBroker,
        connect_commands,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        inbox = Inbox()
        publisher = connect_commands(mosquitto, inbox)
        subscribed_before = subscribed_count(caplog)

        mosquitto.stop()
        assert wait_until(lambda: publisher.state is PublisherState.DISCONNECTED)
        mosquitto.start()
        assert wait_until(lambda: subscribed_count(caplog) > subscribed_before)

        with MqttSubscriber(mosquitto.host, mosquitto.port) as sender:
            body = json.dumps({"asset": "pump-3"}).encode()
            sender.publish(f"{CMD}/request-waveform", body)
            assert wait_until(lambda: bool(inbox.names()))
        assert inbox.names() == [CommandName.REQUEST_WAVEFORM]
        assert inbox.commands[0].asset == "pump-3"
