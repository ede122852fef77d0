"""The demo's wiring end to end, for about 30 s, with a real Mosquitto.

Simulators replay the real recordings over Modbus TCP and OPC UA, the agent
analyses, judges and delivers to the sandbox API over HTTP, and publishes
on the broker. The checks read what the sandbox stored (through its HTTP
API) and what a real MQTT subscriber received.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.demo import Delivered, DemoPlant
from agent.demo_config import GATEWAY_ID
from agent.outbox import OutboxItem
from tests.mosquitto import MosquittoBroker, MqttSubscriber

RUN_S = 30.0
TOPIC_BASE = f"cmagent/v1/{GATEWAY_ID}"


@dataclass
class DemoRun:
    summary: dict[str, Any]
    delivered: Delivered
    produced: list[dict[str, Any]]
    health: dict[str, dict[str, Any]]
    live: MqttSubscriber
    late: MqttSubscriber
    remote_ids: dict[str, str]


async def run_plant(state_dir: Path, broker: MosquittoBroker) -> DemoRun:
    live = MqttSubscriber(broker.host, broker.port, (f"{TOPIC_BASE}/#",))
    plant = DemoPlant(
        state_dir, mqtt=(broker.host, broker.port), waveform_interval_s=3.0
    )
    produced: list[dict[str, Any]] = []
    await plant.start()
    try:
        # Record every measurement the pipeline writes, to compare with
        # what the sandbox stored. The first write comes a second after
        # start, so nothing is missed.
        assert plant.runtime is not None and plant.runtime.outbox is not None
        outbox = plant.runtime.outbox
        put_many = outbox.put_many

        def recording_put_many(items: Sequence[OutboxItem]) -> int:
            produced.extend(dict(i.payload) for i in items if i.kind == "measurement")
            return put_many(items)

        outbox.put_many = recording_put_many  # type: ignore[method-assign]
        await asyncio.sleep(RUN_S)
    finally:
        await plant.stop()
    delivered = await plant.read_back()
    assert plant.runtime.pipeline is not None
    health = plant.runtime.pipeline.health.asset_summary()
    summary = plant.summary(delivered)
    await plant.stop_services()

    late = MqttSubscriber(broker.host, broker.port, (f"{TOPIC_BASE}/+/alarm",))
    return DemoRun(
        summary=summary,
        delivered=delivered,
        produced=produced,
        health=health,
        live=live,
        late=late,
        remote_ids={local: remote for remote, local in plant.remote_ids.items()},
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    state_dir = tmp_path_factory.mktemp("demo")
    with MosquittoBroker(tmp_path_factory.mktemp("broker")) as broker:
        run = asyncio.run(run_plant(state_dir, broker))
        # Retained messages arrive right after the late subscription.
        time.sleep(1.0)
        yield run
        run.live.close()
        run.late.close()


def measurement_key(item: dict[str, Any]) -> tuple[str, str, str]:
    return (item["asset"], item["name"], item["timestamp"])


@pytest.mark.slow
class TestDemoEndToEnd:
    def test_outer_race_pump_alarms(self, demo_run: DemoRun) -> None:
        asset = demo_run.summary["assets"]["pump-outer"]
        assert asset["diagnosis"] == "outer_race"
        assert demo_run.health["pump-outer"]["episode_id"] == "pump-outer:alarm:1"

    def test_healthy_pump_stays_ok(self, demo_run: DemoRun) -> None:
        asset = demo_run.summary["assets"]["pump-healthy"]
        assert asset["severity"] == "ok"
        assert asset["diagnosis"] == "normal"
        assert demo_run.health["pump-healthy"]["episode_id"] is None

    def test_one_request_for_outer_race_episode(self, demo_run: DemoRun) -> None:
        remote = demo_run.remote_ids["pump-outer"]
        requests = [
            r
            for r in demo_run.delivered.maintenance_requests
            if r["asset_id"] == remote
        ]
        assert len(requests) == 1
        assert requests[0]["source_event_id"] == "pump-outer:alarm:1"

    def test_no_request_for_healthy_pump(self, demo_run: DemoRun) -> None:
        remote = demo_run.remote_ids["pump-healthy"]
        assert all(
            r["asset_id"] != remote for r in demo_run.delivered.maintenance_requests
        )

    def test_every_measurement_delivered_once(self, demo_run: DemoRun) -> None:
        produced = Counter(measurement_key(m) for m in demo_run.produced)
        stored = Counter(measurement_key(m) for m in demo_run.delivered.measurements)

        assert len(produced) > 100
        assert max(produced.values()) == 1
        assert max(stored.values()) == 1
        assert set(stored) == set(produced)

    def test_waveforms_from_every_vibration_asset(self, demo_run: DemoRun) -> None:
        names = {
            m["asset"]
            for m in demo_run.delivered.measurements
            if m["name"] == "velocity_rms_mm_s"
        }
        assert names == {"pump-healthy", "pump-outer", "pump-inner", "motor-4"}

    def test_mqtt_readings_and_health(self, demo_run: DemoRun) -> None:
        topics = {m.topic for m in demo_run.live.messages()}
        assert f"{TOPIC_BASE}/pump-healthy/speed" in topics
        assert f"{TOPIC_BASE}/gearbox-oil/iso4406_4um" in topics
        assert f"{TOPIC_BASE}/pump-outer/health" in topics
        assert f"{TOPIC_BASE}/status" in topics

    def test_mqtt_health_payload(self, demo_run: DemoRun) -> None:
        health = demo_run.live.messages(f"{TOPIC_BASE}/pump-outer/health")
        payload = health[-1].json()
        assert payload["diagnosis"] == "outer_race"
        assert payload["iso_zone"] in {"A", "B", "C", "D"}

    def test_retained_alarm_state(self, demo_run: DemoRun) -> None:
        retained = [
            m
            for m in demo_run.late.messages(f"{TOPIC_BASE}/pump-outer/alarm")
            if m.retain
        ]
        assert len(retained) == 1
        assert retained[0].json()["severity"] in {"warning", "alarm"}
        assert retained[0].json()["episode_id"] == "pump-outer:alarm:1"

    def test_summary_counts(self, demo_run: DemoRun) -> None:
        summary = demo_run.summary
        assert summary["waveforms_analysed"] >= 20
        assert summary["measurements_delivered"] == summary["measurements_produced"]
        assert summary["mqtt_messages"] > 100
