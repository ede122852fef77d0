"""The Modbus driver against real servers on loopback: the simulator, and
small asyncio peers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import pytest

from agent.devices_runtime import DeviceRunner, DeviceState, Schedule
from agent.pipeline_runtime import default_driver_factory
from drivers.base import QualityReason, Reading, Waveform
from drivers.errors import DriverConnectError, DriverProtocolError
from drivers.modbus import ModbusDriver
from drivers.sim import modbus_sensors as layout
from drivers.sim.modbus_sensors import (
    SimOilSensor,
    SimRegisterBank,
    SimVibrationSensor,
)
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.recordings import load_recording
from drivers.spec import (
    DataType,
    Endian,
    ModbusPointSpec,
    ModbusTcpSpec,
    ModbusWaveformSpec,
    RegisterTable,
    TransactionIdCheck,
)

B, L = Endian.BIG, Endian.LITTLE
IR = RegisterTable.INPUT


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    simulator = ModbusSimulator(
        sensors=[
            SimVibrationSensor(2, "outer_race_021_234"),
            SimOilSensor(10),
            SimRegisterBank(20, size=200),
        ]
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


def tcp_spec(port: int, unit_id: int, **kwargs: object) -> ModbusTcpSpec:
    options: dict[str, object] = {
        "device_id": "dev",
        "host": "127.0.0.1",
        "port": port,
        "unit_id": unit_id,
        "timeout_s": 0.5,
        "retries": 0,
    }
    options.update(kwargs)
    return ModbusTcpSpec(**options)  # type: ignore[arg-type]


def float_point(
    name: str, address: int, byte_order: Endian = B, word_order: Endian = B
) -> ModbusPointSpec:
    return ModbusPointSpec(
        name=name,
        asset="m1",
        address=address,
        data_type=DataType.FLOAT32,
        byte_order=byte_order,
        word_order=word_order,
    )


ACCEL = ModbusWaveformSpec(
    name="accel",
    asset="m1",
    block_address=layout.CAPTURE_BLOCK,
    max_samples=layout.BLOCK_WINDOW_SAMPLES,
    sample_count_address=layout.CAPTURE_SAMPLE_COUNT,
    sample_rate_address=layout.CAPTURE_SAMPLE_RATE,
    sequence_address=layout.CAPTURE_SEQUENCE,
    ready_address=layout.CAPTURE_READY,
    trigger_address=layout.CAPTURE_TRIGGER,
    rpm_address=layout.CAPTURE_RPM,
)


async def write_bank(port: int, address: int, registers: list[int]) -> None:
    """Store registers in the simulator's bank through a real client."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, reconnect_delay=0)
    await client.connect()
    result = await client.write_registers(address, registers, device_id=20)
    client.close()
    assert not result.isError()


class TestByteOrders:
    # -1.11 as float32 is 0xBF8E147B: bytes A=BF B=8E C=14 D=7B.
    @pytest.mark.parametrize(
        ("byte_order", "word_order", "registers"),
        [
            (B, B, [0xBF8E, 0x147B]),
            (B, L, [0x147B, 0xBF8E]),
            (L, B, [0x8EBF, 0x7B14]),
            (L, L, [0x7B14, 0x8EBF]),
        ],
    )
    async def test_float_in_each_order(
        self,
        sim: ModbusSimulator,
        byte_order: Endian,
        word_order: Endian,
        registers: list[int],
    ) -> None:
        await write_bank(sim.port, 40, registers)
        point = float_point("x", 40, byte_order, word_order)
        driver = ModbusDriver(tcp_spec(sim.port, 20, points=(point,)))
        await driver.connect()
        (reading,) = await driver.read_points()
        await driver.close()
        assert reading.quality.is_good
        assert reading.value == pytest.approx(-1.11, rel=1e-6)

    async def test_three_floats_little_words_in_place(
        self, sim: ModbusSimulator
    ) -> None:
        registers = [0x0000, 0x3F80, 0x0000, 0x4000, 0x0000, 0x4040]
        await write_bank(sim.port, 60, registers)
        points = tuple(float_point(f"f{i}", 60 + 2 * i, B, L) for i in range(3))
        driver = ModbusDriver(tcp_spec(sim.port, 20, points=points))
        await driver.connect()
        readings = await driver.read_points()
        await driver.close()
        assert len(driver.requests) == 1
        assert [r.value for r in readings] == [1.0, 2.0, 3.0]


class TestMixedBlock:
    async def test_types_orders_and_scales_in_one_block(
        self, sim: ModbusSimulator
    ) -> None:
        # Hand-encoded values. int16 -2 is 0xFFFE. uint32 0x00012345 in
        # CDAB order is [0x2345, 0x0001]. int16 215 scaled by 0.1 plus 1 is
        # 22.5. float32 1.5 is 0x3FC00000, in DCBA order [0x0000, 0xC03F].
        await write_bank(sim.port, 100, [0xFFFE, 0x2345, 0x0001, 215, 0x0000, 0xC03F])
        points = (
            ModbusPointSpec(
                name="a", asset="m1", address=100, data_type=DataType.INT16
            ),
            ModbusPointSpec(
                name="b", asset="m1", address=101, data_type=DataType.UINT32,
                word_order=L,
            ),
            ModbusPointSpec(
                name="c", asset="m1", address=103, data_type=DataType.INT16,
                scale=0.1, offset=1.0,
            ),
            ModbusPointSpec(
                name="d", asset="m1", address=104, data_type=DataType.FLOAT32,
                byte_order=L, word_order=L,
            ),
        )  # fmt: skip
        driver = ModbusDriver(tcp_spec(sim.port, 20, points=points))
        await driver.connect()
        readings = {r.point: r for r in await driver.read_points()}
        await driver.close()
        assert len(driver.requests) == 1
        assert readings["a"].value == -2
        assert isinstance(readings["a"].value, int)
        assert readings["b"].value == 0x00012345
        assert readings["c"].value == pytest.approx(22.5)
        assert readings["d"].value == 1.5
        assert all(r.quality.is_good for r in readings.values())


class TestFaults:
    async def test_exception_code_marks_block_bad(self, sim: ModbusSimulator) -> None:
        sim.set_exception(10, 2)
        point = ModbusPointSpec(
            name="t", asset="m1", table=IR, address=12, data_type=DataType.FLOAT32
        )
        driver = ModbusDriver(tcp_spec(sim.port, 10, points=(point,)))
        await driver.connect()
        (reading,) = await driver.read_points()
        await driver.close()
        assert reading.value is None
        # The device itself responded, with an exception code.
        assert reading.quality.reason is QualityReason.SENSOR_FAULT
        detail = reading.quality.detail
        assert "unit 10" in detail
        assert "function 4" in detail
        assert "address 12" in detail
        assert "ILLEGAL DATA ADDRESS (2)" in detail

    async def test_nan_float_is_decode_error(self, sim: ModbusSimulator) -> None:
        sim.set_garbage(10, True)
        points = (
            ModbusPointSpec(
                name="water",
                asset="m1",
                table=IR,
                address=10,
                data_type=DataType.FLOAT32,
            ),
            ModbusPointSpec(name="code", asset="m1", table=IR, address=6),
        )
        driver = ModbusDriver(tcp_spec(sim.port, 10, points=points))
        await driver.connect()
        water, code = sorted(await driver.read_points(), key=lambda r: r.point)[::-1]
        await driver.close()
        assert water.point == "water"
        assert water.value is None
        assert water.quality.reason is QualityReason.DECODE_ERROR
        # The ISO 4406 code is an integer register the fault leaves intact.
        assert code.quality.is_good

    async def test_out_of_range_keeps_value(self, sim: ModbusSimulator) -> None:
        await write_bank(sim.port, 5, [500])
        point = ModbusPointSpec(name="p", asset="m1", address=5, valid_range=(0, 100))
        driver = ModbusDriver(tcp_spec(sim.port, 20, points=(point,)))
        await driver.connect()
        (reading,) = await driver.read_points()
        await driver.close()
        assert reading.value == 500
        assert reading.quality.reason is QualityReason.OUT_OF_RANGE

    async def test_silent_server_times_out(self, sim: ModbusSimulator) -> None:
        sim.stop_answering(True)
        point = ModbusPointSpec(name="p", asset="m1", address=5)
        driver = ModbusDriver(tcp_spec(sim.port, 20, timeout_s=0.3, points=(point,)))
        await driver.connect()
        (reading,) = await driver.read_points()
        await driver.close()
        assert reading.value is None
        assert reading.quality.reason is QualityReason.TIMEOUT

    async def test_silent_server_bounded_by_timeout(self, sim: ModbusSimulator) -> None:
        # The driver relies on pymodbus' own per-attempt timeout, so a
        # silent server must end every attempt after timeout_s, not hang.
        sim.stop_answering(True)
        point = ModbusPointSpec(name="p", asset="m1", address=5)
        spec = tcp_spec(sim.port, 20, timeout_s=0.3, retries=2, points=(point,))
        driver = ModbusDriver(spec)
        await driver.connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        (reading,) = await driver.read_points()
        elapsed = loop.time() - started
        await driver.close()
        assert reading.quality.reason is QualityReason.TIMEOUT
        assert elapsed >= 3 * 0.3 * 0.9
        assert elapsed < 3 * 0.3 + 2.0


class TestWaveform:
    async def test_matches_recording(self, sim: ModbusSimulator) -> None:
        recording = load_recording("outer_race_021_234")
        driver = ModbusDriver(tcp_spec(sim.port, 2, waveforms=(ACCEL,)))
        await driver.connect()
        waveform = await driver.read_waveform("accel")
        high, low = await driver.read_block(IR, layout.CAPTURE_START_INDEX, 2)
        await driver.close()

        start = (high << 16) | low
        index = (start + np.arange(layout.DEFAULT_CAPTURE_LENGTH)) % (
            recording.samples.size
        )
        assert waveform.fs_hz == 12000.0
        assert waveform.rpm == 1796.0
        assert waveform.samples.size == 16384
        np.testing.assert_array_equal(waveform.samples, recording.samples[index])

    async def test_torn_capture_is_retried(self, sim: ModbusSimulator) -> None:
        sim.tear_captures(2, 1)
        driver = ModbusDriver(tcp_spec(sim.port, 2, waveforms=(ACCEL,)))
        await driver.connect()
        first_sequence = sim.sensors[2].sequence  # type: ignore[union-attr]
        waveform = await driver.read_waveform("accel")
        await driver.close()
        # Trigger, tear, trigger again: three captures after the first.
        assert waveform.sequence == first_sequence + 3
        assert waveform.samples.size == 16384

    async def test_capture_torn_every_time_fails(self, sim: ModbusSimulator) -> None:
        sim.tear_captures(2, 10)
        driver = ModbusDriver(tcp_spec(sim.port, 2, waveforms=(ACCEL,)))
        await driver.connect()
        with pytest.raises(DriverProtocolError, match="capture torn"):
            await driver.read_waveform("accel")
        await driver.close()


async def serve_wrong_tid(offset: int) -> tuple[asyncio.Server, int]:
    """Start a peer that answers function 3 with the request's id + offset."""

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                tid = (int.from_bytes(header[:2], "big") + offset) % 65536
                count = int.from_bytes(body[3:5], "big")
                payload = bytes([3, 2 * count]) + b"\x00\x2a" * count
                mbap = tid.to_bytes(2, "big") + b"\x00\x00"
                mbap += (len(payload) + 1).to_bytes(2, "big") + header[6:7]
                writer.write(mbap + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


class TestTransactionId:
    async def test_strict_marks_reading_bad(self) -> None:
        server, port = await serve_wrong_tid(offset=5)
        point = ModbusPointSpec(name="p", asset="m1", address=0)
        driver = ModbusDriver(tcp_spec(port, 1, points=(point,)))
        await driver.connect()
        first = (await driver.read_points())[0]
        second = (await driver.read_points())[0]
        await driver.close()
        server.close()

        assert first.value is None
        assert first.quality.reason is QualityReason.COMM_ERROR
        assert "transaction id mismatch (sent 1, got 6)" in first.quality.detail
        assert "transaction id mismatch (sent 2, got 7)" in second.quality.detail

    async def test_lenient_accepts_single_answer(self) -> None:
        server, port = await serve_wrong_tid(offset=5)
        point = ModbusPointSpec(name="p", asset="m1", address=0)
        spec = tcp_spec(
            port, 1, points=(point,), transaction_id_check=TransactionIdCheck.LENIENT
        )
        driver = ModbusDriver(spec)
        await driver.connect()
        readings = [(await driver.read_points())[0] for _ in range(3)]
        await driver.close()
        server.close()
        assert [r.value for r in readings] == [0x2A, 0x2A, 0x2A]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


Arrival = tuple[float, Reading]
"""A reading with the event-loop time at which the sink received it."""


class RecordingSink:
    """An acquisition sink that keeps every reading with its arrival time."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []

    def readings(self, device_id: str, readings: Sequence[Reading]) -> None:
        arrived_at = asyncio.get_running_loop().time()
        self.arrivals.extend((arrived_at, reading) for reading in readings)

    def waveform(self, device_id: str, waveform: Waveform) -> None:
        raise AssertionError(f"device {device_id!r} has no waveforms configured")

    def beat(self, device_id: str) -> None:
        pass

    def split_outage(self, since: float) -> tuple[list[Arrival], float | None]:
        """Split the readings after ``since`` into the bad run and its end.

        Returns the readings from the first bad one after ``since`` up to
        the next good one, and the arrival time of that good reading (None
        while none has arrived). Good readings that were already in flight
        at ``since`` are skipped.
        """
        later = [(t, r) for t, r in self.arrivals if t >= since]
        first_bad = next(
            (i for i, (_, r) in enumerate(later) if not r.quality.is_good), None
        )
        if first_bad is None:
            return [], None
        gap: list[Arrival] = []
        for arrived_at, reading in later[first_bad:]:
            if reading.quality.is_good:
                return gap, arrived_at
            gap.append((arrived_at, reading))
        return gap, None


async def wait_until(
    condition: Callable[[], bool], timeout_s: float, description: str
) -> float:
    """Check ``condition`` every 10 ms; return the loop time it first held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s: {description}")
        await asyncio.sleep(0.01)
    return loop.time()


class TestReconnect:
    POLL_S = 1.0
    """The agent's default poll interval (``devices.<id>.poll_interval``)."""

    OUTAGE_S = 30.0
    """How long the field case keeps the server down."""

    @pytest.mark.slow
    async def test_thirty_second_outage(self, sim: ModbusSimulator) -> None:
        # The agent's own device task, with the reconnect backoff it uses by
        # default, so the recovery bound is checked against its real cap.
        point = ModbusPointSpec(name="p", asset="m1", address=5)
        schedule = Schedule(poll_interval_s=self.POLL_S, waveform_interval_s=60.0)
        sink = RecordingSink()
        runner = DeviceRunner(
            tcp_spec(sim.port, 20, points=(point,)),
            schedule,
            default_driver_factory,
            sink,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        loop = asyncio.get_running_loop()
        try:
            await wait_until(
                lambda: runner.state is DeviceState.CONNECTED, 5.0, "first connect"
            )
            stopped_at = loop.time()
            await sim.stop()
            offline_at = await wait_until(
                lambda: runner.state is DeviceState.DOWN, 10 * self.POLL_S, "offline"
            )

            await asyncio.sleep(stopped_at + self.OUTAGE_S - loop.time())
            await sim.start()
            listening_at = loop.time()
            # Waiting past the 10 s bound lets a slow recovery show its time.
            await wait_until(
                lambda: sink.split_outage(stopped_at)[1] is not None,
                60.0,
                "first good reading after the restart",
            )
        finally:
            stop.set()
            await task

        gap, recovered_at = sink.split_outage(stopped_at)
        assert recovered_at is not None
        assert offline_at - stopped_at <= 3 * self.POLL_S
        assert recovered_at - listening_at <= 10.0

        # Bad readings fill the gap at least every two poll intervals, and
        # none repeats the last good value (register 5 of the bank contains 5).
        assert gap != []
        assert gap[0][0] - stopped_at <= 3 * self.POLL_S
        assert [r.value for _, r in gap if r.value is not None] == []
        assert [r for _, r in gap if r.quality.is_good] == []
        arrivals = [t for t, _ in gap] + [recovered_at]
        longest_silence_s = max(b - a for a, b in itertools.pairwise(arrivals))
        assert longest_silence_s <= 2 * self.POLL_S
        last_good = [r for t, r in sink.arrivals if t < stopped_at][-1]
        assert last_good.value == 5

    @pytest.mark.slow
    async def test_ten_restarts_leak_no_fds(self, sim: ModbusSimulator) -> None:
        # Each cycle stops and restarts the server within a fraction of a
        # second. It still makes a connection and a refused connect attempt,
        # which is where the driver opens descriptors, and a longer outage
        # only repeats the refused attempts. Ten cycles of the field case's
        # 30 s would add over five minutes to the suite.
        point = ModbusPointSpec(name="p", asset="m1", address=5)
        driver = ModbusDriver(tcp_spec(sim.port, 20, points=(point,)))
        await driver.connect()
        await driver.read_points()
        before = open_fds()
        for _ in range(10):
            await sim.stop()
            await asyncio.sleep(0.05)
            with pytest.raises(DriverConnectError):
                await driver.read_points()
            with pytest.raises(DriverConnectError):
                await driver.connect()
            await sim.start()
            await driver.connect()
            assert (await driver.read_points())[0].quality.is_good
        await driver.close()
        await asyncio.sleep(0.05)
        assert open_fds() <= before
