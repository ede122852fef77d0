"""The pipeline against the real Modbus simulator on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.commands.status import collect_status, render
from agent.health import HealthMonitor
from agent.mqtt import PublisherCounters, PublisherState
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.pipeline_analysis import iso_boundaries
from agent.pipeline_runtime import (
    AgentRuntime,
    LoadedConfig,
    default_driver_factory,
    load_config,
)
from agent.settings import AgentSettingsModel
from agent.state import read_status
from drivers.base import Quality, QualityReason, QualityStatus, Reading, Waveform
from drivers.sim.modbus_server import ModbusSimulator

CONFIG = """
[gateway]
id = "test-gw"
state_dir = "{state_dir}"

[devices.vib1]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
asset = "pump1"
profile = "vib-triax-modbus"
poll_interval = "0.2s"
waveform_interval = "{waveform_interval}"

[devices.oil]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 10
asset = "gearbox"
profile = "oil-modbus"
poll_interval = "0.5s"

[devices.dead]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {dead_port}
unit_id = 1
asset = "fan"
profile = "vib-triax-modbus"
poll_interval = "0.2s"
connect_timeout = "0.5s"

[assets.pump1]
bearing = "6205"

[assets.fan]

[assets.gearbox.oil]
iso4406_warning = [0, 0, 0]
iso4406_alarm = [28, 28, 28]

[mqtt]
enabled = false

[uplink]
enabled = false
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveRecorder:
    """Collects what the pipeline publishes live, in place of MQTT."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.health: list[tuple[str, dict[str, object]]] = []
        self.alarms: list[tuple[str, dict[str, object]]] = []

    state = PublisherState.CONNECTED

    @property
    def counters(self) -> PublisherCounters:
        return PublisherCounters(published=len(self.readings), dropped=0, queued=0)

    def stop(self) -> None:
        self.state = PublisherState.STOPPED

    def publish_reading(self, reading: Reading) -> None:
        self.readings.append(reading)

    def publish_health(self, asset: str, payload: dict[str, object]) -> None:
        self.health.append((asset, dict(payload)))

    def publish_alarm(self, asset: str, payload: dict[str, object]) -> None:
        self.alarms.append((asset, dict(payload)))


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulator]:
    sim = ModbusSimulator("127.0.0.1", 0)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def make_config(
    tmp_path: Path, simulator: ModbusSimulator
) -> Callable[..., LoadedConfig]:
    def make(waveform_interval: str = "1h") -> LoadedConfig:
        path = tmp_path / "agent.toml"
        path.write_text(
            CONFIG.format(
                state_dir=tmp_path / "state",
                port=simulator.port,
                dead_port=free_port(),
                waveform_interval=waveform_interval,
            )
        )
        return load_config(path, environ={})

    return make


async def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


class TestPipelineScalars:
    async def test_readings_reach_outbox_and_live(
        self, make_config: Callable[..., LoadedConfig]
    ) -> None:
        recorder = LiveRecorder()
        runtime = AgentRuntime(make_config())
        runtime._start_mqtt = lambda: recorder  # type: ignore[method-assign]
        await runtime.start()
        try:
            await wait_for(lambda: len(outbox_rows(runtime)) >= 20)
        finally:
            await runtime.stop()

        rows = outbox_rows(runtime)
        names = {(r["asset"], r["name"]) for r in rows if r["kind"] == "measurement"}
        assert ("pump1", "velocity_rms_x") in names
        assert ("gearbox", "iso4406_4um") in names
        assert all(r["asset"] != "fan" for r in rows)
        assert any(r.point == "speed" for r in recorder.readings)

    async def test_dead_device_reports_bad_readings(
        self, make_config: Callable[..., LoadedConfig]
    ) -> None:
        recorder = LiveRecorder()
        runtime = AgentRuntime(make_config())
        runtime._start_mqtt = lambda: recorder  # type: ignore[method-assign]
        await runtime.start()
        try:
            await wait_for(
                lambda: sum(r.asset == "fan" for r in recorder.readings) >= 12
            )
            assert runtime.pipeline is not None
            state = runtime.pipeline.runners["dead"].state.value
        finally:
            await runtime.stop()

        fan = [r for r in recorder.readings if r.asset == "fan"]
        assert state == "down"
        assert all(r.value is None for r in fan)
        assert all(r.quality.status is QualityStatus.BAD for r in fan)
        assert all(r.quality.reason is QualityReason.COMM_ERROR for r in fan)

    async def test_oil_codes_judged(
        self, make_config: Callable[..., LoadedConfig]
    ) -> None:
        runtime = AgentRuntime(make_config())
        runtime._start_mqtt = lambda: None  # type: ignore[method-assign]
        await runtime.start()
        try:
            assert runtime.pipeline is not None
            pipeline = runtime.pipeline
            await wait_for(lambda: "gearbox" in pipeline.health.asset_summary())
            summary = pipeline.health.asset_summary()["gearbox"]
        finally:
            await runtime.stop()

        # Warning limits of code 0 are reached by any count; alarm 28 is not.
        assert summary["severity"] == "warning"
        assert set(summary["active"]) == {"iso4406_4um", "iso4406_6um", "iso4406_14um"}

    async def test_status_snapshot_written(
        self, make_config: Callable[..., LoadedConfig], tmp_path: Path
    ) -> None:
        runtime = AgentRuntime(make_config())
        runtime._start_mqtt = lambda: None  # type: ignore[method-assign]
        await runtime.start()
        try:
            await wait_for(lambda: read_status(tmp_path / "state") is not None)
            await asyncio.sleep(2.5)
        finally:
            await runtime.stop()

        status = read_status(tmp_path / "state")
        assert status is not None
        assert status["running"] is False
        assert status["devices"]["vib1"]["state"] == "stopped"
        assert status["devices"]["dead"]["last_error"]
        assert status["outbox"]["depth"] > 0

    async def test_status_names_unserved_point(
        self, make_config: Callable[..., LoadedConfig], tmp_path: Path
    ) -> None:
        # The simulator's vibration sensor at unit 1 serves no holding
        # register 0, so it responds to that block with exception 2.
        path = tmp_path / "agent.toml"
        make_config()
        with path.open("a") as file:
            file.write('[devices.vib1.points.status_word]\ntable = "holding"\n')
            file.write("address = 0\n")
        runtime = AgentRuntime(load_config(path, environ={}))
        runtime._start_mqtt = lambda: None  # type: ignore[method-assign]
        state_dir = tmp_path / "state"

        def vib1_status() -> dict[str, Any]:
            status = read_status(state_dir) or {}
            return dict(status.get("devices", {}).get("vib1", {}))

        await runtime.start()
        try:
            await wait_for(
                lambda: bool(vib1_status().get("bad_points", {}).get("count"))
            )
            device = vib1_status()
            text = render(collect_status(state_dir))
        finally:
            await runtime.stop()

        cause = (
            "device 'vib1' unit 1 function 3 address 0 count 1: "
            "ILLEGAL DATA ADDRESS (2); check the table, address and count "
            "against the device's register map (a Modicon number such as "
            "40011 is holding offset 10)"
        )
        assert device["state"] == "connected"
        assert device["last_error"] is None
        assert device["bad_points"] == {
            "count": 1,
            "first": {"asset": "pump1", "point": "status_word", "cause": cause},
        }
        assert f"; 1 bad point, pump1/status_word: {cause}" in text


class TestPipelineWaveforms:
    async def test_waveform_analysed(
        self, make_config: Callable[..., LoadedConfig]
    ) -> None:
        recorder = LiveRecorder()
        runtime = AgentRuntime(make_config(waveform_interval="1s"))
        runtime._start_mqtt = lambda: recorder  # type: ignore[method-assign]
        await runtime.start()
        try:
            assert runtime.pipeline is not None
            pipeline = runtime.pipeline
            await wait_for(lambda: pipeline.counters.waveforms_analysed >= 1, 30)
        finally:
            await runtime.stop()

        asset, health = recorder.health[0]
        values = health["values"]
        assert isinstance(values, dict)
        assert asset == "pump1"
        # The healthy record 97 has an RMS of about 0.07 g.
        assert 0.03 < values["rms"] < 0.15
        assert health["diagnosis"] != "outer_race"
        assert np.isfinite(values["velocity_rms_mm_s"])


def outbox_rows(runtime: AgentRuntime) -> list[dict[str, object]]:
    assert runtime.outbox is not None
    conn = sqlite3.connect(runtime.outbox.path)
    try:
        rows = conn.execute("SELECT kind, payload FROM items").fetchall()
    finally:
        conn.close()
    return [{"kind": kind, **json.loads(payload)} for kind, payload in rows]


def make_waveform(samples: np.ndarray, *, source: str = "vib1") -> Waveform:
    return Waveform(
        asset="pump1",
        point="accel",
        timestamp=datetime.now(UTC),
        fs_hz=12_000.0,
        samples=samples,
        rpm=1796.0,
        source=source,
    )


class TestPipelineQueue:
    async def test_full_queue_drops_oldest(
        self, make_config: Callable[..., LoadedConfig], tmp_path: Path
    ) -> None:
        config = make_config()
        pipeline = Pipeline(
            config.settings,
            config.specs,
            outbox=Outbox(tmp_path / "outbox.db", max_bytes=10_000_000),
            health=HealthMonitor(
                config.settings.health,
                config.settings.assets,
                state_path=None,
                iso_boundaries=iso_boundaries,
            ),
            driver_factory=default_driver_factory,
            queue_size=2,
        )
        waveforms = [make_waveform(np.full(4096, float(i))) for i in range(5)]

        # The worker is not started, so nothing leaves the queue.
        for waveform in waveforms:
            pipeline.waveform("vib1", waveform)

        assert pipeline.counters.waveforms_dropped == 3
        assert pipeline._queue.get_nowait() is waveforms[3]
        assert pipeline._queue.get_nowait() is waveforms[4]

    async def test_invalid_waveform_logged_once(
        self,
        make_config: Callable[..., LoadedConfig],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        runtime = AgentRuntime(make_config())
        runtime._start_mqtt = lambda: None  # type: ignore[method-assign]
        await runtime.start()
        try:
            assert runtime.pipeline is not None
            pipeline = runtime.pipeline
            bad = np.full(16_384, np.nan)
            for _ in range(3):
                pipeline.waveform("nan-device", make_waveform(bad, source="nan-device"))
            await wait_for(lambda: pipeline.counters.waveforms_rejected == 3)
        finally:
            await runtime.stop()

        rejected = [
            r for r in caplog.records if r.getMessage() == "pipeline.waveform_rejected"
        ]
        assert len(rejected) == 1
        assert rejected[0].device == "nan-device"  # type: ignore[attr-defined]
        rows = outbox_rows(runtime)
        assert all(np.isfinite(r["value"]) for r in rows if r["kind"] == "measurement")


class TestPipelineReload:
    async def test_unchanged_device_keeps_task(
        self, make_config: Callable[..., LoadedConfig], tmp_path: Path
    ) -> None:
        config = make_config()
        runtime = AgentRuntime(config)
        runtime._start_mqtt = lambda: None  # type: ignore[method-assign]
        await runtime.start()
        try:
            assert runtime.pipeline is not None
            pipeline = runtime.pipeline
            vib_before = pipeline.runners["vib1"]
            oil_before = pipeline.runners["oil"]
            path = tmp_path / "agent.toml"
            path.write_text(
                path.read_text().replace(
                    'poll_interval = "0.5s"', 'poll_interval = "2s"'
                )
            )
            restarted = await runtime.reload(load_config(path, environ={}))
            vib_after = pipeline.runners["vib1"]
            oil_after = pipeline.runners["oil"]
        finally:
            await runtime.stop()

        assert restarted == ["oil"]
        assert vib_after is vib_before
        assert oil_after is not oil_before
        assert oil_after.schedule.poll_interval_s == 2.0


class SlowOutbox(Outbox):
    """A real outbox whose writes take half a second, started in a thread."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, max_bytes=10_000_000)
        self.write_started = threading.Event()

    def put_many(self, items):  # type: ignore[no-untyped-def]
        self.write_started.set()
        time.sleep(0.5)
        return super().put_many(items)


class TestPipelineStop:
    async def test_stop_waits_for_write_in_progress(self, tmp_path: Path) -> None:
        settings = AgentSettingsModel()
        outbox = SlowOutbox(tmp_path / "outbox.db")
        health = HealthMonitor(
            settings.health, {}, state_path=None, iso_boundaries=iso_boundaries
        )
        pipeline = Pipeline(
            settings, {}, outbox=outbox, health=health, driver_factory=lambda s: None
        )
        await pipeline.start()
        now = datetime.now(UTC)
        pipeline.readings(
            "dev",
            [
                Reading(
                    asset="pump1", point=f"p{i}", timestamp=now, value=float(i), unit=""
                )
                for i in range(5)
            ],
        )
        await asyncio.to_thread(outbox.write_started.wait, 5.0)

        await pipeline.stop()
        outbox.close()

        reopened = Outbox(tmp_path / "outbox.db", max_bytes=10_000_000)
        depth = reopened.stats().depth
        reopened.close()
        assert pipeline.counters.measurements_produced == 5
        assert depth == 5


class TestAssetView:
    async def test_bad_reading_clears_last_value(self, tmp_path: Path) -> None:
        settings = AgentSettingsModel()
        outbox = Outbox(tmp_path / "outbox.db", max_bytes=10_000_000)
        health = HealthMonitor(
            settings.health, {}, state_path=None, iso_boundaries=iso_boundaries
        )
        pipeline = Pipeline(
            settings, {}, outbox=outbox, health=health, driver_factory=lambda s: None
        )
        now = datetime.now(UTC)
        good = Reading(asset="pump1", point="temp", timestamp=now, value=41.5, unit="")
        other = Reading(asset="pump1", point="rpm", timestamp=now, value=1796, unit="")
        pipeline.readings("dev", [good, other])
        assert pipeline.assets["pump1"].values == {"temp": 41.5, "rpm": 1796}

        bad = good._replace(
            value=None, quality=Quality.bad(QualityReason.COMM_ERROR, "lost")
        )
        pipeline.readings("dev", [bad])
        outbox.close()

        assert pipeline.assets["pump1"].values == {"rpm": 1796}
