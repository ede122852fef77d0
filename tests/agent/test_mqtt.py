"""MqttPublisher against a real Mosquitto on loopback."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.mqtt import PublisherState
from drivers.base import Quality, QualityReason
from tests.agent.mqtt_support import (
    BASE,
    GATEWAY,
    STATUS,
    make_reading,
    wait_until,
)
from tests.mosquitto import MosquittoBroker, MqttSubscriber

ROOT = Path(__file__).resolve().parents[2]


class TestMqttPublisherTopics:
    def test_reading_topic_and_payload(
        self, mosquitto: MosquittoBroker, subscriber: MqttSubscriber, connect
    ) -> None:
        publisher = connect(mosquitto)

        publisher.publish_reading(make_reading(71.5))

        message = subscriber.wait_for(f"{BASE}/pump-1/bearing_temp")
        assert message.json() == {
            "ts": "2024-03-01T12:30:05.250Z",
            "value": 71.5,
            "unit": "degC",
            "quality": "good",
        }
        assert message.qos == 0
        assert not message.retain

    def test_bad_quality_label_kept(
        self, mosquitto: MosquittoBroker, subscriber: MqttSubscriber, connect
    ) -> None:
        publisher = connect(mosquitto)
        quality = Quality.bad(QualityReason.COMM_ERROR, "timeout")

        publisher.publish_reading(make_reading(None, quality=quality))

        body = subscriber.wait_for(f"{BASE}/pump-1/bearing_temp").json()
        assert body["value"] is None
        assert body["quality"] == "bad/comm_error"

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_non_finite_value_sent_as_null(
        self,
        mosquitto: MosquittoBroker,
        subscriber: MqttSubscriber,
        connect,
        value: float,
    ) -> None:
        publisher = connect(mosquitto)

        publisher.publish_reading(make_reading(value))

        message = subscriber.wait_for(f"{BASE}/pump-1/bearing_temp")
        assert b"NaN" not in message.payload
        assert b"Infinity" not in message.payload
        assert message.json()["value"] is None
        assert message.json()["quality"] == "bad/decode_error"

    def test_health_topic_and_fields(
        self, mosquitto: MosquittoBroker, subscriber: MqttSubscriber, connect
    ) -> None:
        publisher = connect(mosquitto)
        before = datetime.now(UTC)

        publisher.publish_health(
            "pump-1", {"score": 82, "zone": "B", "kurtosis": math.nan}
        )

        body = subscriber.wait_for(f"{BASE}/pump-1/health").json()
        assert body["score"] == 82
        assert body["zone"] == "B"
        assert body["kurtosis"] is None
        assert body["ts"].endswith("Z")
        sent = datetime.fromisoformat(body["ts"].replace("Z", "+00:00"))
        assert abs((sent - before).total_seconds()) < 60

    def test_alarm_retained_for_late_subscriber(
        self, mosquitto: MosquittoBroker, connect
    ) -> None:
        publisher = connect(mosquitto)
        publisher.publish_alarm("pump-1", {"severity": "alarm", "event": "e-1"})
        assert wait_until(lambda: publisher.counters.published >= 2)

        with MqttSubscriber(mosquitto.host, mosquitto.port) as late:
            message = late.wait_for(f"{BASE}/pump-1/alarm")

        assert message.retain
        assert message.qos == 1
        assert message.json()["severity"] == "alarm"
        assert message.json()["event"] == "e-1"

    def test_status_online_retained(self, mosquitto: MosquittoBroker, connect) -> None:
        connect(mosquitto)

        with MqttSubscriber(mosquitto.host, mosquitto.port) as late:
            message = late.wait_for(STATUS)

        assert message.payload == b"online"
        assert message.retain

    def test_stop_publishes_offline(self, mosquitto: MosquittoBroker, connect) -> None:
        publisher = connect(mosquitto)

        publisher.stop()

        assert publisher.state is PublisherState.STOPPED
        with MqttSubscriber(mosquitto.host, mosquitto.port) as late:
            assert late.wait_for(STATUS).payload == b"offline"

    def test_reserved_point_name_rejected(
        self, mosquitto: MosquittoBroker, connect
    ) -> None:
        publisher = connect(mosquitto)

        with pytest.raises(ValueError, match="reserved"):
            publisher.publish_reading(make_reading(1.0, point="alarm"))

    def test_topic_wildcard_in_asset_rejected(
        self, mosquitto: MosquittoBroker, connect
    ) -> None:
        publisher = connect(mosquitto)

        with pytest.raises(ValueError, match=r"reading\.asset"):
            publisher.publish_reading(make_reading(1.0, asset="pump/#"))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
class TestMqttPublisherProtocols:
    def test_connects_and_publishes(
        self,
        mosquitto: MosquittoBroker,
        subscriber: MqttSubscriber,
        connect,
        protocol: str,
    ) -> None:
        publisher = connect(mosquitto, protocol=protocol)

        publisher.publish_reading(make_reading(3.25))

        body = subscriber.wait_for(f"{BASE}/pump-1/bearing_temp").json()
        assert body["value"] == 3.25

    def test_persistent_session_connects(
        self, mosquitto: MosquittoBroker, connect, protocol: str
    ) -> None:
        publisher = connect(mosquitto, protocol=protocol, clean_session=False)

        assert publisher.state is PublisherState.CONNECTED


CHILD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from agent.mqtt import MqttPublisher, PublisherState
    from agent.settings import MqttSettings

    settings = MqttSettings(
        host="127.0.0.1", port=int(sys.argv[1]), keepalive=float(sys.argv[2])
    )
    publisher = MqttPublisher(settings, sys.argv[3])
    publisher.start()
    while publisher.state is not PublisherState.CONNECTED:
        time.sleep(0.02)
    print("connected", flush=True)
    time.sleep(120)
    """
)


class TestMqttPublisherLastWill:
    KEEPALIVE_S = 2

    def start_child(self, broker: MosquittoBroker) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD_SCRIPT,
                str(broker.port),
                str(self.KEEPALIVE_S),
                GATEWAY,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "connected"
        return child

    def test_sigkill_publishes_offline_then_online(
        self, mosquitto: MosquittoBroker, subscriber: MqttSubscriber
    ) -> None:
        child = self.start_child(mosquitto)
        try:
            subscriber.wait_for(STATUS, lambda m: m.payload == b"online")
            seen = len(subscriber.messages())

            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            # Mosquitto sends the Last Will at the latest when 1.5 keepalive
            # periods pass without a packet.
            offline = subscriber.wait_for(
                STATUS,
                lambda m: m.payload == b"offline",
                timeout_s=1.5 * self.KEEPALIVE_S + 1.0,
                start=seen,
            )
            assert offline.payload == b"offline"
            seen = len(subscriber.messages())

            child = self.start_child(mosquitto)
            online = subscriber.wait_for(
                STATUS, lambda m: m.payload == b"online", start=seen
            )
            assert online.payload == b"online"
        finally:
            child.kill()
            child.wait()
