"""A real MQTT subscriber that counts what the agent publishes.

The demo and the end-to-end tests use it to show that live data reaches a
broker: readings, health, alarm state (retained) and the gateway status.
Callbacks run in paho's network thread, so every access takes a lock.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class MqttCounter:
    """Subscribes to ``{prefix}/{gateway}/#`` and counts messages by kind.

    Kinds: ``reading``, ``health``, ``alarm``, ``status`` and ``other``.
    """

    def __init__(
        self, host: str, port: int, *, gateway: str, prefix: str = "cmagent/v1"
    ) -> None:
        self.host = host
        self.port = port
        self._base = f"{prefix}/{gateway}/"
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._alarms: dict[str, dict[str, Any]] = {}
        self._retained_alarms: set[str] = set()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"cmagent-demo-counter-{id(self)}"
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and wait until the subscription is acknowledged.

        Raises:
            TimeoutError: the broker did not acknowledge in time.
        """
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError(
                f"MQTT subscription on {self.host}:{self.port} not acknowledged "
                f"within {timeout_s} s"
            )

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def alarm_states(self) -> dict[str, dict[str, Any]]:
        """Return the latest alarm payload per asset."""
        with self._lock:
            return dict(self._alarms)

    def retained_alarm_assets(self) -> set[str]:
        """Return the assets whose alarm state arrived with the retain flag."""
        with self._lock:
            return set(self._retained_alarms)

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(self._base + "#", qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        rest = message.topic[len(self._base) :].split("/")
        if rest == ["status"]:
            kind = "status"
        elif len(rest) == 2 and rest[1] in ("health", "alarm"):
            kind = rest[1]
        elif len(rest) == 2:
            kind = "reading"
        else:
            kind = "other"
        with self._lock:
            self._counts[kind] += 1
            if kind == "alarm":
                try:
                    self._alarms[rest[0]] = json.loads(message.payload)
                except ValueError:
                    self._alarms[rest[0]] = {"invalid": True}
                if message.retain:
                    self._retained_alarms.add(rest[0])
