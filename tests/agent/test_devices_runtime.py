"""The device task against the real Modbus simulator on loopback.

Unit 1 of the simulator is a vibration sensor, whose register map does
not include holding register 0, and unit 7 is a bank of holding
registers in which register ``a`` contains ``a`` until a test writes it.
No unit 99 exists, so over TCP the simulator responds for it with
exception 11 (GATEWAY TARGET DEVICE FAILED TO RESPOND).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from agent.devices_runtime import BadPoint, DeviceRunner, DeviceState, Schedule
from agent.pipeline_runtime import default_driver_factory
from drivers.base import QualityReason, QualityStatus, Reading, Waveform
from drivers.sim import modbus_sensors as layout
from drivers.sim.modbus_sensors import SimRegisterBank, SimVibrationSensor
from drivers.sim.modbus_server import ModbusSimulator
from drivers.spec import (
    DataType,
    DeviceSpec,
    ModbusPointSpec,
    ModbusRtuSpec,
    ModbusTcpSpec,
    ModbusWaveformSpec,
    RegisterTable,
)

VIBRATION_UNIT = 1
BANK_UNIT = 7
MISSING_UNIT = 99
POLL_S = 0.1

VELOCITY = ModbusPointSpec(
    name="velocity_rms_x",
    asset="pump1",
    table=RegisterTable.INPUT,
    address=0,
    data_type=DataType.FLOAT32,
)
STATUS_WORD = ModbusPointSpec(name="status_word", asset="pump1", address=0)
LEVEL = ModbusPointSpec(
    name="level",
    asset="tank1",
    address=4,
    data_type=DataType.FLOAT32,
    valid_range=(0.0, 100.0),
)
ACCEL = ModbusWaveformSpec(
    name="accel",
    asset="pump1",
    block_address=layout.CAPTURE_BLOCK,
    max_samples=layout.BLOCK_WINDOW_SAMPLES,
    sample_count_address=layout.CAPTURE_SAMPLE_COUNT,
    sample_rate_address=layout.CAPTURE_SAMPLE_RATE,
    sequence_address=layout.CAPTURE_SEQUENCE,
    ready_address=layout.CAPTURE_READY,
    trigger_address=layout.CAPTURE_TRIGGER,
    rpm_address=layout.CAPTURE_RPM,
)


class CountingSimulator(ModbusSimulator):
    """The simulator, counting the Modbus TCP requests it receives per unit."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.requests: dict[int, int] = {}

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if not sending and len(packet) > 6:
            # Byte 6 of a Modbus TCP frame, after the MBAP header's
            # transaction id, protocol id and length, is the unit id.
            unit_id = packet[6]
            self.requests[unit_id] = self.requests.get(unit_id, 0) + 1
        return super()._trace_packet(sending, packet)


def make_sensors() -> list[SimVibrationSensor | SimRegisterBank]:
    return [
        SimVibrationSensor(VIBRATION_UNIT, "normal_97"),
        SimRegisterBank(BANK_UNIT, size=20),
    ]


@pytest.fixture
async def sim() -> AsyncIterator[CountingSimulator]:
    simulator = CountingSimulator("127.0.0.1", 0, sensors=make_sensors())
    await simulator.start()
    yield simulator
    await simulator.stop()


def tcp_spec(
    port: int, unit_id: int, points: Sequence[ModbusPointSpec], **kwargs: object
) -> ModbusTcpSpec:
    options: dict[str, object] = {
        "device_id": f"unit{unit_id}",
        "host": "127.0.0.1",
        "port": port,
        "unit_id": unit_id,
        "timeout_s": 0.2,
        "connect_timeout_s": 0.5,
        "retries": 0,
        "points": tuple(points),
    }
    options.update(kwargs)
    return ModbusTcpSpec(**options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def write_registers(port: int, address: int, registers: list[int]) -> None:
    """Store registers in the bank through a real Modbus client."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0)
    await client.connect()
    result = await client.write_registers(address, registers, device_id=BANK_UNIT)
    client.close()
    assert not result.isError(), result


def float32_registers(value: float) -> list[int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [high, low]


class RecordingSink:
    """An acquisition sink that keeps what the device task hands over.

    ``on_waveform`` runs when a waveform arrives, so a test can look at the
    device task's state while its poll is still in progress.
    """

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[Reading]]] = []
        self.waveforms: list[Waveform] = []
        self.on_waveform: Callable[[], None] | None = None

    def readings(self, device_id: str, readings: Sequence[Reading]) -> None:
        self.batches.append((time.monotonic(), list(readings)))

    def waveform(self, device_id: str, waveform: Waveform) -> None:
        self.waveforms.append(waveform)
        if self.on_waveform is not None:
            self.on_waveform()

    def beat(self, device_id: str) -> None:
        pass

    def readings_of(self, point: str) -> list[Reading]:
        return [r for _, batch in self.batches for r in batch if r.point == point]


class Device:
    """A device task running in the background of one test."""

    def __init__(self, spec: DeviceSpec, poll_s: float = POLL_S) -> None:
        self.sink = RecordingSink()
        self.runner = DeviceRunner(
            spec,
            Schedule(poll_interval_s=poll_s, waveform_interval_s=3600.0),
            default_driver_factory,
            self.sink,
        )
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.runner.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        await self.task


@pytest.fixture
async def devices() -> AsyncIterator[list[Device]]:
    """Device tasks a test starts; each is stopped after the test."""
    started: list[Device] = []
    yield started
    for device in started:
        await device.close()


async def wait_until(
    condition: Callable[[], bool], timeout_s: float, description: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s: {description}")
        await asyncio.sleep(0.02)


async def wait_for_polls(device: Device, point: str, count: int) -> None:
    """Wait until ``count`` more readings of ``point`` arrived."""
    target = len(device.sink.readings_of(point)) + count
    await wait_until(
        lambda: len(device.sink.readings_of(point)) >= target,
        10.0,
        f"{count} more readings of {point}",
    )


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


class TestBadPoints:
    async def test_unserved_point_logged_once(
        self,
        sim: CountingSimulator,
        devices: list[Device],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger="agent")
        spec = tcp_spec(sim.port, VIBRATION_UNIT, [VELOCITY, STATUS_WORD])
        device = Device(spec)
        devices.append(device)

        await wait_until(
            lambda: len(device.sink.readings_of("status_word")) >= 10,
            10.0,
            "ten polls",
        )

        cause = (
            f"device 'unit{VIBRATION_UNIT}' unit {VIBRATION_UNIT} function 3 "
            "address 0 count 1: ILLEGAL DATA ADDRESS (2); check the table, "
            "address and count against the device's register map (a Modicon "
            "number such as 40011 is holding offset 10)"
        )
        bad = events(caplog, "device.point_bad")
        assert len(bad) == 1
        assert bad[0].levelno == logging.WARNING
        assert bad[0].device == f"unit{VIBRATION_UNIT}"  # type: ignore[attr-defined]
        assert bad[0].asset == "pump1"  # type: ignore[attr-defined]
        assert bad[0].point == "status_word"  # type: ignore[attr-defined]
        assert bad[0].cause == cause  # type: ignore[attr-defined]
        assert device.runner.bad_points == [
            BadPoint(asset="pump1", point="status_word", cause=cause)
        ]
        assert device.runner.state is DeviceState.CONNECTED
        assert device.runner.last_error is None

    async def test_exception_answers_keep_device_up(
        self, sim: CountingSimulator, devices: list[Device]
    ) -> None:
        # An exception response comes from the device, so the device stays
        # reachable and polled at its normal rate, and only the point is bad.
        device = Device(tcp_spec(sim.port, VIBRATION_UNIT, [STATUS_WORD]))
        devices.append(device)

        await wait_until(
            lambda: len(device.sink.readings_of("status_word")) >= 5,
            10.0,
            "five polls",
        )

        assert device.runner.state is DeviceState.CONNECTED
        assert device.runner.last_error is None
        assert device.runner.last_reading_at is not None
        assert [p.point for p in device.runner.bad_points] == ["status_word"]

    async def test_status_names_first_bad_point(
        self, sim: CountingSimulator, devices: list[Device]
    ) -> None:
        spec = tcp_spec(sim.port, VIBRATION_UNIT, [VELOCITY, STATUS_WORD])
        device = Device(spec)
        devices.append(device)

        await wait_until(lambda: bool(device.runner.bad_points), 10.0, "a bad point")

        status = device.runner.bad_points_status()
        first = status["first"]
        assert status["count"] == 1
        assert isinstance(first, dict)
        assert first["asset"] == "pump1"
        assert first["point"] == "status_word"
        assert "ILLEGAL DATA ADDRESS (2)" in first["cause"]

    async def test_changes_logged_not_repeats(
        self,
        sim: CountingSimulator,
        devices: list[Device],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger="agent")
        device = Device(tcp_spec(sim.port, BANK_UNIT, [LEVEL]))
        devices.append(device)

        def level_read(value: float) -> Callable[[], bool]:
            def seen() -> bool:
                readings = device.sink.readings_of("level")
                last = readings[-1].value if readings else None
                if math.isnan(value):
                    return last is None and readings[-1].quality.reason is (
                        QualityReason.DECODE_ERROR
                    )
                return last == value

            return seen

        # Out of range for several polls with a new value each time, then
        # not a number, then back in range.
        for value in (500.0, 501.0, 502.0, math.nan, 50.0):
            await write_registers(sim.port, LEVEL.address, float32_registers(value))
            await wait_until(level_read(value), 10.0, f"level {value}")
            await wait_for_polls(device, "level", 2)

        bad = events(caplog, "device.point_bad")
        recovered = events(caplog, "device.point_recovered")
        assert [r.quality for r in bad] == [  # type: ignore[attr-defined]
            "bad/out_of_range",
            "bad/decode_error",
        ]
        assert len(recovered) == 1
        assert recovered[0].levelno == logging.INFO
        assert recovered[0].point == "level"  # type: ignore[attr-defined]
        assert device.runner.bad_points == []


class TestLastReading:
    @pytest.mark.parametrize("fault", ["missing unit", "silent server"])
    async def test_unanswered_polls_never_set_it(
        self, sim: CountingSimulator, devices: list[Device], fault: str
    ) -> None:
        unit_id = MISSING_UNIT if fault == "missing unit" else BANK_UNIT
        sim.stop_answering(fault == "silent server")
        device = Device(tcp_spec(sim.port, unit_id, [LEVEL]))
        devices.append(device)

        await wait_until(lambda: sim.requests.get(unit_id, 0) >= 3, 10.0, "3 polls")

        assert device.runner.last_reading_at is None
        assert device.runner.state is DeviceState.DOWN
        assert device.runner.last_error is not None
        assert "no response to any request" in device.runner.last_error

    async def test_missing_unit_names_exception(
        self, sim: CountingSimulator, devices: list[Device]
    ) -> None:
        device = Device(tcp_spec(sim.port, MISSING_UNIT, [LEVEL]))
        devices.append(device)

        await wait_until(
            lambda: device.runner.state is DeviceState.DOWN, 10.0, "device down"
        )

        assert device.runner.last_error is not None
        assert "GATEWAY TARGET DEVICE FAILED TO RESPOND (11)" in (
            device.runner.last_error
        )

    async def test_answered_bad_reading_sets_it(
        self, sim: CountingSimulator, devices: list[Device]
    ) -> None:
        await write_registers(sim.port, LEVEL.address, float32_registers(500.0))
        device = Device(tcp_spec(sim.port, BANK_UNIT, [LEVEL]))
        devices.append(device)

        await wait_until(
            lambda: device.runner.last_reading_at is not None, 10.0, "a reading"
        )

        (reading, *_) = device.sink.readings_of("level")
        assert reading.quality.reason is QualityReason.OUT_OF_RANGE
        assert device.runner.last_reading_at == reading.timestamp
        assert device.runner.state is DeviceState.CONNECTED


class TestSilentBackoff:
    SILENT_S = 3.0

    async def test_silent_device_polled_at_backoff(
        self, sim: CountingSimulator, devices: list[Device]
    ) -> None:
        device = Device(tcp_spec(sim.port, BANK_UNIT, [LEVEL]))
        devices.append(device)
        runner = device.runner
        await wait_until(
            lambda: runner.state is DeviceState.CONNECTED, 10.0, "connected"
        )

        sim.stop_answering(True)
        silent_from = time.monotonic()
        before = sim.requests[BANK_UNIT]
        await asyncio.sleep(self.SILENT_S)
        silent_requests = sim.requests[BANK_UNIT] - before
        silent_batches = [t for t, _ in device.sink.batches if t >= silent_from]
        state_while_silent = runner.state

        sim.stop_answering(False)
        await wait_until(
            lambda: runner.state is DeviceState.CONNECTED, 10.0, "answering again"
        )
        before = sim.requests[BANK_UNIT]
        await asyncio.sleep(1.0)
        answered_requests = sim.requests[BANK_UNIT] - before

        # Backoff delays of 0.5, 1 and 2 s (each within ±20 % jitter) after
        # silent polls of 0.2 s allow at most 4 requests in 3 s. Without
        # the backoff, a new request follows each 0.2 s timeout at once.
        assert state_while_silent is DeviceState.DOWN
        assert silent_requests <= 4
        # Bad readings still arrive every poll interval while the device
        # waits, and after each silent poll's 0.2 s timeout.
        gaps = [b - a for a, b in itertools.pairwise(silent_batches)]
        assert len(silent_batches) >= 10
        assert max(gaps) <= POLL_S + 0.2 + 0.1
        assert answered_requests >= 6


@pytest.fixture
def serial_line(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two ends of a pseudo-terminal pair joined by socat."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    sim_end, agent_end = tmp_path / "sim", tmp_path / "agent"
    process = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={sim_end}", f"pty,raw,echo=0,link={agent_end}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5.0
    while not (sim_end.exists() and agent_end.exists()):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail(f"socat did not create {sim_end} and {agent_end}")
        time.sleep(0.01)
    yield str(sim_end), str(agent_end)
    process.terminate()
    process.wait(timeout=5)


def rtu_spec(serial_port: str, unit_id: int) -> ModbusRtuSpec:
    return ModbusRtuSpec(
        device_id=f"unit{unit_id}",
        serial_port=serial_port,
        parity="N",
        unit_id=unit_id,
        timeout_s=0.2,
        retries=1,
        points=(LEVEL,),
    )


class TestSharedSerialLine:
    WINDOW_S = 4.0

    @pytest.mark.slow
    async def test_missing_unit_leaves_line_free(
        self, serial_line: tuple[str, str], devices: list[Device]
    ) -> None:
        sim_end, agent_end = serial_line
        simulator = ModbusSimulator(
            sensors=[SimRegisterBank(BANK_UNIT, size=20)],
            serial_port=sim_end,
            parity="N",
        )
        await simulator.start()
        try:
            neighbour = Device(rtu_spec(agent_end, BANK_UNIT))
            devices.append(neighbour)
            await wait_until(
                lambda: neighbour.runner.state is DeviceState.CONNECTED,
                10.0,
                "neighbour connected",
            )
            missing = Device(rtu_spec(agent_end, MISSING_UNIT))
            devices.append(missing)

            # The first silent polls of the missing unit come 0.5 and 1 s
            # apart; the window starts after them.
            await asyncio.sleep(2.0)
            before = len(neighbour.sink.readings_of("level"))
            await asyncio.sleep(self.WINDOW_S)
            polls = len(neighbour.sink.readings_of("level")) - before
        finally:
            for device in devices:
                await device.close()
            devices.clear()
            await simulator.stop()

        # Each silent poll occupies the line for 2 attempts of 0.2 s timeout
        # and 0.2 s quiet time. At the backoff (2 and then 4 s apart), at
        # most 2 polls fall in the window and take 1.6 s of line time. That
        # leaves the neighbour 2.4 s for polls 0.1 s apart. Without the
        # backoff, the missing unit is polled again as soon as its poll
        # ends, and the neighbour gets one request between its attempts.
        assert polls >= 15
        good = [
            r
            for r in neighbour.sink.readings_of("level")
            if r.quality.status is QualityStatus.GOOD
        ]
        assert good


class TestStateDuringCapture:
    async def test_state_updated_before_capture(self, devices: list[Device]) -> None:
        port = free_port()
        spec = tcp_spec(
            port, VIBRATION_UNIT, [VELOCITY], waveforms=(ACCEL,), timeout_s=2.0
        )
        device = Device(spec, poll_s=1.0)
        devices.append(device)
        runner = device.runner
        seen: list[tuple[DeviceState, str | None, bool]] = []
        device.sink.on_waveform = lambda: seen.append(
            (runner.state, runner.last_error, runner.last_reading_at is not None)
        )
        await wait_until(
            lambda: runner.state is DeviceState.DOWN, 10.0, "first connect failed"
        )
        assert runner.last_error is not None

        simulator = ModbusSimulator("127.0.0.1", port, sensors=make_sensors())
        await simulator.start()
        try:
            await wait_until(lambda: bool(seen), 30.0, "a waveform")
        finally:
            await device.close()
            devices.clear()
            await simulator.stop()

        assert seen[0] == (DeviceState.CONNECTED, None, True)


class TestConnectEvents:
    async def test_late_first_connect_not_reconnect(
        self, devices: list[Device], caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="agent")
        port = free_port()
        device = Device(tcp_spec(port, VIBRATION_UNIT, [VELOCITY]))
        devices.append(device)
        await wait_until(
            lambda: device.runner.state is DeviceState.DOWN, 10.0, "refused"
        )

        simulator = ModbusSimulator("127.0.0.1", port, sensors=make_sensors())
        await simulator.start()
        try:
            await wait_until(
                lambda: device.runner.state is DeviceState.CONNECTED,
                15.0,
                "first connect",
            )
            simulator.drop_connections()
            await wait_until(
                lambda: bool(events(caplog, "device.reconnected")),
                15.0,
                "reconnect after the drop",
            )
        finally:
            await device.close()
            devices.clear()
            await simulator.stop()

        (connected,) = events(caplog, "device.connected")
        assert connected.after_s > 0  # type: ignore[attr-defined]
        assert len(events(caplog, "device.reconnected")) == 1


class TestStillDown:
    async def test_summary_logged_while_down(
        self, devices: list[Device], caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="agent")
        device = Device(tcp_spec(free_port(), VIBRATION_UNIT, [VELOCITY]))
        device.runner.still_down_interval_s = 1.0
        devices.append(device)

        await wait_until(
            lambda: len(events(caplog, "device.still_down")) >= 2, 10.0, "summaries"
        )

        (first,) = events(caplog, "device.unreachable")
        summaries = events(caplog, "device.still_down")
        assert summaries[0].cause == first.cause  # type: ignore[attr-defined]
        assert summaries[0].attempt > first.attempt  # type: ignore[attr-defined]
        assert summaries[1].down_for_s >= 1  # type: ignore[attr-defined]
        # A summary per interval, not a line per attempt.
        gap_s = summaries[1].created - summaries[0].created
        assert gap_s >= 1.0
