"""The pipeline fed hostile readings and waveforms by a scripted device.

The device replaces hardware that sends garbage: a driver class
written here returns the readings and waveforms a test chooses. Everything
downstream is real: the device task, the analysis worker, the health
monitor, an outbox in ``tmp_path`` and the MQTT payload builders of
``agent.mqtt_payloads`` (called as the real publisher calls them).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.health import HealthMonitor
from agent.mqtt_payloads import (
    asset_topic,
    encode_fields,
    encode_reading,
    reading_topic,
)
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.pipeline_analysis import analyse_waveform, iso_boundaries
from agent.pipeline_runtime import LoadedConfig, load_config
from agent.settings import AssetSettings
from drivers.backoff import Backoff
from drivers.base import GOOD, Reading, Waveform
from drivers.spec import DeviceSpec

CONFIG = """
[gateway]
id = "prop-gw"
state_dir = "{state_dir}"

[devices.vib1]
driver = "modbus_tcp"
host = "127.0.0.1"
port = 1
unit_id = 1
asset = "pump1"
profile = "vib-triax-modbus"
poll_interval = "0.05s"
waveform_interval = "0.05s"

[assets.pump1]
bearing = "6205"

[mqtt]
enabled = false

[uplink]
enabled = false
"""


def strict_json(payload: bytes) -> Any:
    """Parse JSON, failing on NaN and infinity as a strict consumer would."""

    def reject(constant: str) -> None:
        raise AssertionError(f"non-finite constant {constant} in {payload!r}")

    return json.loads(payload, parse_constant=reject)


class PayloadRecorder:
    """Builds every live payload with the MQTT publisher's own functions."""

    def __init__(self) -> None:
        self.payloads: list[tuple[str, Any]] = []

    def publish_reading(self, reading: Reading) -> None:
        topic = reading_topic("cmagent/v1", "prop-gw", reading)
        self.payloads.append((topic, strict_json(encode_reading(reading))))

    def publish_health(self, asset: str, payload: Mapping[str, object]) -> None:
        topic = asset_topic("cmagent/v1", "prop-gw", asset, "health")
        body = encode_fields(payload, now=datetime.now(UTC))
        self.payloads.append((topic, strict_json(body)))

    def publish_alarm(self, asset: str, payload: Mapping[str, object]) -> None:
        topic = asset_topic("cmagent/v1", "prop-gw", asset, "alarm")
        body = encode_fields(payload, now=datetime.now(UTC))
        self.payloads.append((topic, strict_json(body)))


class ScriptedDevice:
    """A driver that returns prepared readings and waveforms in turn."""

    def __init__(
        self, spec: DeviceSpec, readings: list[Reading], waveforms: list[Waveform]
    ) -> None:
        self.device_id = spec.device_id
        self._readings = readings
        self._waveforms = list(waveforms)
        self.served = 0

    async def connect(self) -> None:
        return None

    async def read_points(self) -> list[Reading]:
        return self._readings

    async def read_waveform(self, name: str) -> Waveform:
        self.served += 1
        if not self._waveforms:
            return healthy_waveform()
        return self._waveforms.pop(0)

    async def close(self) -> None:
        return None


def healthy_waveform(**changes: Any) -> Waveform:
    fields: dict[str, Any] = {
        "asset": "pump1",
        "point": "accel",
        "timestamp": datetime.now(UTC),
        "fs_hz": 12_000.0,
        "samples": np.random.default_rng(5).standard_normal(4096),
        "rpm": 1796.0,
        "source": "vib1",
    }
    fields.update(changes)
    return Waveform(**fields)


HOSTILE_SAMPLES: dict[str, Callable[[], object]] = {
    "nan": lambda: np.full(4096, np.nan),
    "inf": lambda: np.concatenate([np.ones(4095), [np.inf]]),
    "empty": lambda: np.array([]),
    "one": lambda: np.array([1.0]),
    "huge": lambda: np.full(4096, 1e300),
    "tiny": lambda: np.random.default_rng(1).standard_normal(4096) * 1e-300,
    "constant": lambda: np.full(4096, 3.0),
    "strings": lambda: np.array(["x"] * 4096),
    "objects": lambda: np.array([None] * 4096),
    "complex": lambda: np.ones(4096, dtype=complex),
    "two_d": lambda: np.zeros((64, 64)),
    "int16": lambda: np.arange(4096, dtype=np.int16),
    "list": lambda: [0.0, 1.0] * 2048,
}
HOSTILE_FIELDS: dict[str, dict[str, Any]] = {
    "fs_zero": {"fs_hz": 0.0},
    "fs_negative": {"fs_hz": -12_000.0},
    "fs_nan": {"fs_hz": math.nan},
    "fs_inf": {"fs_hz": math.inf},
    "rpm_zero": {"rpm": 0.0},
    "rpm_nan": {"rpm": math.nan},
    "rpm_negative": {"rpm": -1796.0},
    "rpm_huge": {"rpm": 1e300},
}


def hostile_waveform(kind: str, timestamp: datetime) -> Waveform:
    if kind in HOSTILE_SAMPLES:
        return healthy_waveform(samples=HOSTILE_SAMPLES[kind](), timestamp=timestamp)
    return healthy_waveform(timestamp=timestamp, **HOSTILE_FIELDS[kind])


def hostile_reading(
    value: object, point: str = "temperature", **changes: Any
) -> Reading:
    fields: dict[str, Any] = {
        "asset": "pump1",
        "point": point,
        "timestamp": datetime.now(UTC),
        "value": value,
        "unit": "degC",
        "quality": GOOD,
        "source": "vib1",
    }
    fields.update(changes)
    return Reading(**fields)


def outbox_values(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT payload FROM items").fetchall()
    finally:
        conn.close()
    return [json.loads(payload) for (payload,) in rows]


@pytest.fixture
def config(tmp_path: Path) -> LoadedConfig:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(state_dir=tmp_path / "state"))
    return load_config(path, environ={})


def make_pipeline(
    config: LoadedConfig, outbox: Outbox, device: Callable[[DeviceSpec], Any]
) -> tuple[Pipeline, PayloadRecorder]:
    recorder = PayloadRecorder()
    pipeline = Pipeline(
        config.settings,
        config.specs,
        outbox=outbox,
        health=HealthMonitor(
            config.settings.health,
            config.settings.assets,
            state_path=None,
            iso_boundaries=iso_boundaries,
        ),
        driver_factory=device,
        publisher=recorder,
    )
    return pipeline, recorder


async def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def assert_all_finite(rows: list[dict[str, Any]]) -> None:
    """Every number anywhere in the rows is finite."""
    text = json.dumps(rows)
    strict_json(text.encode())


HOSTILE_KINDS = sorted([*HOSTILE_SAMPLES, *HOSTILE_FIELDS])


class TestPipelineHostileWaveforms:
    async def test_device_task_survives_every_kind(
        self, config: LoadedConfig, tmp_path: Path
    ) -> None:
        start = datetime.now(UTC)
        waveforms = [
            hostile_waveform(kind, start + timedelta(seconds=n))
            for n, kind in enumerate(HOSTILE_KINDS)
        ]
        devices: list[ScriptedDevice] = []

        def factory(spec: DeviceSpec) -> ScriptedDevice:
            devices.append(ScriptedDevice(spec, [], waveforms))
            return devices[-1]

        outbox = Outbox(tmp_path / "outbox.db", max_bytes=50_000_000)
        pipeline, recorder = make_pipeline(config, outbox, factory)
        await pipeline.start()
        try:
            # Healthy waveforms follow the hostile ones; one analysed after
            # them proves the task and the worker are both alive.
            await wait_for(lambda: devices and devices[0].served > len(waveforms) + 2)
            await wait_for(lambda: pipeline.counters.waveforms_analysed >= 1)
            task, _ = pipeline._tasks["vib1"]
            assert not task.done()
            assert pipeline._worker is not None
            assert not pipeline._worker.done()
        finally:
            await pipeline.stop()

        counters = pipeline.counters
        assert counters.waveforms_received == (
            counters.waveforms_analysed
            + counters.waveforms_rejected
            + counters.waveforms_dropped
        )
        assert counters.waveforms_rejected >= len(HOSTILE_SAMPLES) - 3
        rows = outbox_values(outbox.path)
        assert rows
        assert_all_finite(rows)
        assert recorder.payloads

    async def test_hostile_readings_keep_task_alive(
        self, config: LoadedConfig, tmp_path: Path
    ) -> None:
        readings = [
            hostile_reading(math.nan),
            hostile_reading(math.inf, point="pressure"),
            hostile_reading(10**30, point="count"),
            hostile_reading(np.float32(np.nan), point="f32"),
            hostile_reading(np.int64(7), point="i64"),
            hostile_reading(None, point="none"),
            hostile_reading("text", point="label"),
            hostile_reading(True, point="flag"),
            hostile_reading(1.0, point="health"),
            hostile_reading(1.0, point="bad/topic"),
            hostile_reading(1.0, point="naive", timestamp=datetime.now()),
            hostile_reading(2.0, point="after"),
        ]
        devices: list[ScriptedDevice] = []

        def factory(spec: DeviceSpec) -> ScriptedDevice:
            devices.append(ScriptedDevice(spec, readings, []))
            return devices[-1]

        outbox = Outbox(tmp_path / "outbox.db", max_bytes=50_000_000)
        pipeline, recorder = make_pipeline(config, outbox, factory)
        await pipeline.start()
        try:
            await wait_for(lambda: pipeline.counters.readings >= 5 * len(readings))
            await wait_for(lambda: pipeline.counters.waveforms_analysed >= 1)
            task, _ = pipeline._tasks["vib1"]
            assert not task.done()
        finally:
            await pipeline.stop()

        rows = outbox_values(outbox.path)
        assert_all_finite(rows)
        names = {row.get("name") for row in rows}
        assert "count" in names
        assert "after" in names
        assert "naive" not in names
        topics = {topic for topic, _ in recorder.payloads}
        assert "cmagent/v1/prop-gw/pump1/after" in topics
        assert "cmagent/v1/prop-gw/pump1/naive" not in topics
        # The points health, bad/topic and naive are rejected once per poll.
        assert pipeline.counters.readings_rejected >= 3 * 5
        assert "temperature" not in names
        assert "pressure" not in names


class BrokenDevice(ScriptedDevice):
    """A driver whose reads raise a non-driver exception every other poll."""

    async def read_points(self) -> list[Reading]:
        self.served += 1
        if self.served % 2:
            raise KeyError("register map entry missing")
        return [hostile_reading(20.0 + self.served)]


class TestDeviceTaskDefects:
    async def test_unexpected_exception_marks_device_down(
        self,
        config: LoadedConfig,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        devices: list[BrokenDevice] = []

        def factory(spec: DeviceSpec) -> BrokenDevice:
            devices.append(BrokenDevice(spec, [], []))
            return devices[-1]

        outbox = Outbox(tmp_path / "outbox.db", max_bytes=50_000_000)
        pipeline, _ = make_pipeline(config, outbox, factory)
        await pipeline.start()
        try:
            runner = pipeline.runners["vib1"]
            runner._backoff = Backoff(0.01, 0.02)
            await wait_for(lambda: sum(d.served for d in devices) >= 6)
            task, _ = pipeline._tasks["vib1"]
            assert not task.done()
        finally:
            await pipeline.stop()

        failures = [r for r in caplog.records if r.getMessage() == "device.poll_failed"]
        assert len(failures) == 1
        assert "register map entry missing" in failures[0].cause  # type: ignore[attr-defined]
        rows = outbox_values(outbox.path)
        assert any(row.get("name") == "temperature" for row in rows)


class TestAnalyseWaveformBoundary:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        kind=st.sampled_from(HOSTILE_KINDS),
        bearing=st.sampled_from([None, "6205"]),
    )
    def test_rejects_or_returns_finite(self, kind: str, bearing: str | None) -> None:
        waveform = hostile_waveform(kind, datetime.now(UTC))
        asset = AssetSettings(bearing=bearing)

        try:
            result = analyse_waveform(waveform, asset, waveform.rpm)
        except ValueError as exc:
            assert str(exc)
            return

        assert all(math.isfinite(v) for v, _ in result.measurements.values())
        assert all(math.isfinite(v) for v in result.health_values.values())
        strict_json(encode_fields(result.summary, now=datetime.now(UTC)))

    @pytest.mark.parametrize(
        "kind", ["strings", "objects", "complex", "two_d", "empty", "nan", "fs_zero"]
    )
    def test_invalid_waveform_raises_value_error(self, kind: str) -> None:
        waveform = hostile_waveform(kind, datetime.now(UTC))

        with pytest.raises(ValueError) as error:
            analyse_waveform(waveform, AssetSettings(bearing="6205"), 1796.0)

        assert str(error.value)
