"""Shared helpers of the MQTT tests (imported by tests/agent/test_mqtt*.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from agent.settings import MqttSettings
from drivers.base import Reading
from tests.mosquitto import MosquittoBroker

GATEWAY = "gw-test"
BASE = f"cmagent/v1/{GATEWAY}"
STATUS = f"{BASE}/status"
READING_TOPIC = f"{BASE}/pump-1/bearing_temp"


def settings_for(broker: MosquittoBroker, **overrides: object) -> MqttSettings:
    """Build settings for ``broker`` with a 1 s reconnect backoff."""
    values: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "keepalive": 5,
        "reconnect_max": 1,
    }
    values.update(overrides)
    return MqttSettings.model_validate(values)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def make_reading(value: float | None, **fields: object) -> Reading:
    """Build a reading of pump-1 bearing_temp at a fixed time."""
    values: dict[str, object] = {
        "asset": "pump-1",
        "point": "bearing_temp",
        "timestamp": datetime(2024, 3, 1, 12, 30, 5, 250_000, tzinfo=UTC),
        "value": value,
        "unit": "degC",
    }
    values.update(fields)
    return Reading(**values)  # type: ignore[arg-type]
