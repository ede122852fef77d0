"""The OPC UA driver against the simulator, a real asyncua server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from numpy.typing import NDArray

from drivers.base import QualityReason, QualityStatus, Reading
from drivers.errors import DriverConfigError, DriverConnectError, DriverTimeoutError
from drivers.opcua import DriverState, OpcUaDriver
from drivers.opcua_errors import MessageSizeLimitError
from drivers.sim.opcua_server import OpcUaSimulator
from drivers.sim.recordings import load_recording
from drivers.spec import OpcUaNodeRef, OpcUaPointSpec, OpcUaSpec, OpcUaWaveformSpec

SIM = "{urn:cmagent:sim}"
ROOT = (f"{SIM}Sensors", f"{SIM}Motor4")
RECORDING = "inner_race_007_105"
WAVEFORM_SAMPLES = 65536


def browse(name: str) -> OpcUaNodeRef:
    return OpcUaNodeRef(browse_path=(*ROOT, f"{SIM}{name}"))


def make_spec(endpoint: str, **overrides: object) -> OpcUaSpec:
    points = (
        OpcUaPointSpec(name="acc_rms", asset="motor4", node=browse("AccelerationRms")),
        OpcUaPointSpec(
            name="temperature",
            asset="motor4",
            node=OpcUaNodeRef(node_id="nsu=urn:cmagent:sim;s=Motor4.Temperature"),
            unit="°C",
        ),
        OpcUaPointSpec(name="rpm", asset="motor4", node=browse("Rpm")),
    )
    waveform = OpcUaWaveformSpec(
        name="accel",
        asset="motor4",
        samples=browse("Waveform"),
        sample_rate=browse("SampleRate"),
        rpm=browse("Rpm"),
        sequence=browse("Sequence"),
    )
    base = OpcUaSpec(
        device_id="motor4-ua",
        endpoint=endpoint,
        connect_timeout_s=5.0,
        request_timeout_s=2.0,
        publishing_interval_s=0.2,
        points=points,
        waveforms=(waveform,),
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def by_point(readings: list[Reading]) -> dict[str, Reading]:
    return {reading.point: reading for reading in readings}


def rms(samples: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(np.square(samples))))


@pytest.fixture
async def simulator() -> AsyncIterator[OpcUaSimulator]:
    # A long update period keeps the served waveform fixed during a test.
    sim = OpcUaSimulator(update_period_s=60.0)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def driver(simulator: OpcUaSimulator) -> AsyncIterator[OpcUaDriver]:
    opcua = OpcUaDriver(make_spec(simulator.endpoint))
    await opcua.connect()
    yield opcua
    await opcua.close()


async def read_until(
    opcua: OpcUaDriver, point: str, accept: object, timeout_s: float = 5.0
) -> Reading:
    """Read points until ``accept(reading)`` holds for ``point``."""
    deadline = time.monotonic() + timeout_s
    while True:
        reading = by_point(await opcua.read_points())[point]
        if accept(reading):  # type: ignore[operator]
            return reading
        if time.monotonic() > deadline:
            raise AssertionError(f"{point} never matched; last reading {reading}")
        await asyncio.sleep(0.05)


class TestNodeReferences:
    def test_rejects_bare_namespace_index(self) -> None:
        spec = make_spec("opc.tcp://127.0.0.1:4840")
        bad = dataclasses.replace(
            spec.points[0], node=OpcUaNodeRef(node_id="ns=2;s=Motor4.Rpm")
        )
        with pytest.raises(DriverConfigError, match="nsu=URI") as caught:
            OpcUaDriver(dataclasses.replace(spec, points=(bad,)))
        assert "points.acc_rms" in str(caught.value)
        assert caught.value.device == "motor4-ua"

    def test_rejects_malformed_browse_element(self) -> None:
        spec = make_spec("opc.tcp://127.0.0.1:4840")
        bad = dataclasses.replace(
            spec.points[0], node=OpcUaNodeRef(browse_path=("{urn:x}",))
        )
        with pytest.raises(DriverConfigError, match=r"browse path element '\{urn:x\}'"):
            OpcUaDriver(dataclasses.replace(spec, points=(bad,)))

    async def test_unknown_node_gives_bad_reading(
        self, simulator: OpcUaSimulator
    ) -> None:
        spec = make_spec(simulator.endpoint)
        missing = OpcUaPointSpec(name="ghost", asset="motor4", node=browse("Ghost"))
        opcua = OpcUaDriver(dataclasses.replace(spec, points=(*spec.points, missing)))
        await opcua.connect()
        try:
            readings = by_point(await opcua.read_points())
        finally:
            await opcua.close()

        assert readings["ghost"].quality.status is QualityStatus.BAD
        assert "BadNoMatch" in readings["ghost"].quality.detail
        assert readings["rpm"].quality.is_good


class TestScalarReads:
    async def test_subscription_delivers_values(
        self, simulator: OpcUaSimulator, driver: OpcUaDriver
    ) -> None:
        recording = load_recording(RECORDING)
        expected_rms = rms(simulator.window("Motor4"))

        readings = by_point(await driver.read_points())

        assert driver.subscribed
        assert readings["rpm"].value == recording.rpm
        assert readings["acc_rms"].value == pytest.approx(expected_rms, rel=1e-12)
        assert readings["temperature"].unit == "°C"
        assert all(r.quality.is_good for r in readings.values())

    async def test_subscription_follows_changes(
        self, simulator: OpcUaSimulator, driver: OpcUaDriver
    ) -> None:
        await simulator.set_status("Motor4", "Temperature", "BadSensorFailure")

        reading = await read_until(
            driver, "temperature", lambda r: not r.quality.is_good
        )

        assert reading.quality.status is QualityStatus.BAD
        assert reading.quality.reason is QualityReason.SENSOR_FAULT
        assert reading.quality.detail == "BadSensorFailure"
        assert driver.subscription_recreations == 0

    async def test_polling_reads_all_points(self, simulator: OpcUaSimulator) -> None:
        recording = load_recording(RECORDING)
        expected_rms = rms(simulator.window("Motor4"))
        opcua = OpcUaDriver(make_spec(simulator.endpoint, use_subscriptions=False))
        await opcua.connect()
        try:
            readings = by_point(await opcua.read_points())
            subscribed = opcua.subscribed
        finally:
            await opcua.close()

        assert not subscribed
        assert readings["rpm"].value == recording.rpm
        assert readings["acc_rms"].value == pytest.approx(expected_rms, rel=1e-12)

    @pytest.mark.parametrize(
        ("status", "reason"),
        [
            ("BadSensorFailure", QualityReason.SENSOR_FAULT),
            ("BadCommunicationError", QualityReason.COMM_ERROR),
        ],
    )
    async def test_polling_maps_bad_status(
        self, simulator: OpcUaSimulator, status: str, reason: QualityReason
    ) -> None:
        await simulator.set_status("Motor4", "Temperature", status)
        opcua = OpcUaDriver(make_spec(simulator.endpoint, use_subscriptions=False))
        await opcua.connect()
        try:
            reading = by_point(await opcua.read_points())["temperature"]
        finally:
            await opcua.close()

        assert reading.quality.status is QualityStatus.BAD
        assert reading.quality.reason is reason
        assert reading.quality.detail == status

    async def test_value_outside_range_is_bad(self, simulator: OpcUaSimulator) -> None:
        spec = make_spec(simulator.endpoint, use_subscriptions=False)
        narrow = dataclasses.replace(spec.points[2], valid_range=(0.0, 1000.0))
        opcua = OpcUaDriver(dataclasses.replace(spec, points=(narrow,)))
        await opcua.connect()
        try:
            reading = (await opcua.read_points())[0]
        finally:
            await opcua.close()

        assert reading.value == load_recording(RECORDING).rpm
        assert reading.quality.reason is QualityReason.OUT_OF_RANGE


class TestSilentSubscription:
    async def test_stale_then_recreated(self, simulator: OpcUaSimulator) -> None:
        # The silent limit is 3 x 0.3 s = 0.9 s, and values go stale after 0.4 s.
        spec = make_spec(simulator.endpoint, publishing_interval_s=0.3)
        opcua = OpcUaDriver(spec, stale_after_s=0.4)
        await opcua.connect()
        try:
            first = by_point(await opcua.read_points())
            stopped = await simulator.silence_subscriptions()
            await asyncio.sleep(0.6)
            stale = by_point(await opcua.read_points())
            await asyncio.sleep(0.6)
            recovered = by_point(await opcua.read_points())
            await asyncio.sleep(0.8)
            later = by_point(await opcua.read_points())
            recreations = opcua.subscription_recreations
        finally:
            await opcua.close()

        assert first["rpm"].quality.is_good
        assert stopped == 1
        assert stale["rpm"].quality.status is QualityStatus.UNCERTAIN
        assert stale["rpm"].quality.reason is QualityReason.STALE
        assert recovered["rpm"].quality.is_good
        assert later["rpm"].quality.is_good
        assert recreations == 1


class TestWaveform:
    async def test_whole_waveform_matches_recording(
        self, simulator: OpcUaSimulator, driver: OpcUaDriver
    ) -> None:
        recording = load_recording(RECORDING)

        waveform = await driver.read_waveform("accel")

        assert waveform.samples.shape == (WAVEFORM_SAMPLES,)
        assert waveform.fs_hz == recording.fs_hz
        assert waveform.rpm == recording.rpm
        assert waveform.sequence == 1
        assert waveform.quality.is_good
        # The samples are a contiguous stretch of the recording (wrapping at
        # its end), found by where the first sample occurs.
        source = recording.samples.astype(np.float64)
        starts = np.flatnonzero(source == waveform.samples[0])
        matches = [
            start
            for start in starts
            if np.array_equal(
                np.take(
                    source, np.arange(start, start + WAVEFORM_SAMPLES), mode="wrap"
                ),
                waveform.samples,
            )
        ]
        assert matches

    async def test_unknown_waveform_name(self, driver: OpcUaDriver) -> None:
        with pytest.raises(DriverConfigError, match=r"'velocity'.*'accel'"):
            await driver.read_waveform("velocity")

    async def test_message_size_limit_named(self, simulator: OpcUaSimulator) -> None:
        opcua = OpcUaDriver(make_spec(simulator.endpoint, max_message_size=100_000))
        await opcua.connect()
        try:
            with pytest.raises(MessageSizeLimitError) as caught:
                await opcua.read_waveform("accel")
            state = opcua.state
        finally:
            await opcua.close()

        assert caught.value.limit == "max_message_size"
        assert caught.value.limit_value == 100_000
        assert "max_message_size is 100000" in str(caught.value)
        assert caught.value.node.endswith("Motor4/{urn:cmagent:sim}Waveform")
        assert state is DriverState.DISCONNECTED


class TestReconnect:
    async def test_restart_moves_namespace_index(
        self, simulator: OpcUaSimulator, driver: OpcUaDriver
    ) -> None:
        old_index = simulator.namespace_index
        old_node = driver.resolved_node(browse("Rpm"))

        await simulator.restart(reorder_namespaces=True)
        with pytest.raises(DriverConnectError):
            await driver.read_points()
        state_after_loss = driver.state
        await driver.connect()
        readings = by_point(await driver.read_points())
        new_node = driver.resolved_node(browse("Rpm"))

        assert state_after_loss is DriverState.DISCONNECTED
        assert simulator.namespace_index != old_index
        assert old_node is not None and new_node is not None
        assert old_node.NamespaceIndex == old_index
        assert new_node.NamespaceIndex == simulator.namespace_index
        # A bare "ns=<old index>;" would now name another namespace.
        assert driver.namespaces[old_index] != "urn:cmagent:sim"
        assert readings["rpm"].value == load_recording(RECORDING).rpm
        assert readings["rpm"].quality.is_good
        assert readings["temperature"].quality.is_good

    async def test_dropped_connection_then_reconnect(
        self, simulator: OpcUaSimulator
    ) -> None:
        opcua = OpcUaDriver(make_spec(simulator.endpoint, use_subscriptions=False))
        await opcua.connect()
        try:
            await simulator.drop_connections()
            with pytest.raises(DriverConnectError) as caught:
                await opcua.read_points()
            lost_state = opcua.state
            await opcua.connect()
            readings = await opcua.read_points()
        finally:
            await opcua.close()

        assert simulator.endpoint in str(caught.value)
        assert lost_state is DriverState.DISCONNECTED
        assert all(r.quality.is_good for r in readings)

    async def test_mute_server_times_out(self, simulator: OpcUaSimulator) -> None:
        spec = make_spec(
            simulator.endpoint, use_subscriptions=False, request_timeout_s=0.5
        )
        opcua = OpcUaDriver(spec)
        await opcua.connect()
        try:
            simulator.stop_answering()
            with pytest.raises(DriverTimeoutError, match="request_timeout"):
                await opcua.read_points()
        finally:
            simulator.resume_answering()
            await opcua.close()

    async def test_read_before_connect(self) -> None:
        opcua = OpcUaDriver(make_spec("opc.tcp://127.0.0.1:4840"))
        with pytest.raises(DriverConnectError, match="call connect"):
            await opcua.read_points()
        assert opcua.state is DriverState.DISCONNECTED


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A listening socket that completes TCP handshakes and never replies."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


class TestConnectTimeout:
    async def test_black_hole_times_out(self, black_hole: int) -> None:
        endpoint = f"opc.tcp://127.0.0.1:{black_hole}/silent"
        opcua = OpcUaDriver(make_spec(endpoint, connect_timeout_s=0.5))

        started = time.monotonic()
        with pytest.raises(DriverTimeoutError, match="connect_timeout") as caught:
            await opcua.connect()
        elapsed_s = time.monotonic() - started

        # Generous bound: it must end near the timeout, not hang.
        assert elapsed_s < 5.0
        assert endpoint in str(caught.value)
        assert opcua.state is DriverState.DISCONNECTED
        assert opcua.last_error is caught.value
