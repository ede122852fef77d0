"""The Modbus driver against garbage: the simulator's garbage mode and a
raw TCP peer that responds to every request with random bytes.

``read_points`` must return one reading per point or raise a
``DriverError``; a reading marked good must hold a finite value within
its point's valid range.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.pipeline_runtime import load_config
from drivers.base import QualityReason, Reading
from drivers.errors import DriverError
from drivers.modbus import ModbusDriver
from drivers.sim.modbus_server import ModbusSimulator
from drivers.spec import (
    DataType,
    ModbusPointSpec,
    ModbusTcpSpec,
    RegisterTable,
)

CONFIG = """
[gateway]
id = "prop-gw"
state_dir = "{state_dir}"

[devices.vib1]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 1
asset = "pump1"
profile = "vib-triax-modbus"
timeout = "1s"

[devices.oil]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 10
asset = "gearbox"
profile = "oil-modbus"
timeout = "1s"

[assets.pump1]
[assets.gearbox]

[mqtt]
enabled = false

[uplink]
enabled = false
"""


def check_readings(
    readings: list[Reading], points: tuple[ModbusPointSpec, ...]
) -> None:
    """One reading per point; a good one is finite and within its range."""
    assert [r.point for r in readings] == [p.name for p in points]
    for reading, point in zip(readings, points, strict=True):
        if not reading.quality.is_good:
            assert reading.quality.detail
            continue
        value = reading.value
        assert value is not None
        if isinstance(value, float):
            assert math.isfinite(value), reading
        if point.valid_range is not None and isinstance(value, int | float):
            low, high = point.valid_range
            assert low <= value <= high, reading


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulator]:
    sim = ModbusSimulator("127.0.0.1", 0)
    await sim.start()
    yield sim
    await sim.stop()


class TestSimulatorGarbage:
    @pytest.mark.parametrize("device", ["vib1", "oil"])
    async def test_garbage_floats_are_bad_readings(
        self, simulator: ModbusSimulator, tmp_path: Path, device: str
    ) -> None:
        path = tmp_path / "agent.toml"
        path.write_text(
            CONFIG.format(state_dir=tmp_path / "state", port=simulator.port)
        )
        spec = load_config(path, environ={}).specs[device]
        assert isinstance(spec, ModbusTcpSpec)
        driver = ModbusDriver(spec)
        await driver.connect()
        try:
            clean = await driver.read_points()
            simulator.set_garbage(spec.unit_id, True)
            garbage = await driver.read_points()
        finally:
            await driver.close()

        check_readings(clean, spec.points)
        check_readings(garbage, spec.points)
        floats = [p.name for p in spec.points if p.data_type is DataType.FLOAT32]
        assert floats
        by_point = {r.point: r for r in garbage}
        for name in floats:
            assert by_point[name].value is None
            assert by_point[name].quality.reason is QualityReason.DECODE_ERROR
        assert all(r.quality.is_good for r in clean if r.point in floats)


POINTS = (
    ModbusPointSpec(
        name="speed",
        asset="m1",
        table=RegisterTable.INPUT,
        address=0,
        data_type=DataType.FLOAT32,
        count=2,
        valid_range=(0.0, 10_000.0),
    ),
    ModbusPointSpec(
        name="count",
        asset="m1",
        table=RegisterTable.INPUT,
        address=2,
        data_type=DataType.UINT16,
        count=1,
    ),
    ModbusPointSpec(
        name="temperature",
        asset="m1",
        table=RegisterTable.INPUT,
        address=3,
        data_type=DataType.INT16,
        count=1,
        scale=0.1,
        valid_range=(-40.0, 150.0),
    ),
)


class RandomBytesPeer:
    """A TCP peer that responds to each request with prepared bytes.

    With ``echo_header`` the response starts with the request's transaction
    id, protocol id and unit id, so the random part reaches the PDU
    parser instead of being discarded for a wrong header.
    """

    def __init__(self, answers: list[bytes], echo_header: bool) -> None:
        self.answers = answers
        self.echo_header = echo_header
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.writers.append(writer)
        try:
            while request := await reader.read(260):
                answer = self.answers[self.requests % len(self.answers)]
                self.requests += 1
                if self.echo_header and len(request) >= 7:
                    length = struct.pack(">H", len(answer) + 1)
                    answer = request[:4] + length + request[6:7] + answer
                writer.write(answer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def read_from_peer(
    answers: list[bytes], echo_header: bool
) -> list[Reading] | None:
    peer = RandomBytesPeer(answers, echo_header)
    port = await peer.start()
    spec = ModbusTcpSpec(
        device_id="garbage",
        host="127.0.0.1",
        port=port,
        unit_id=1,
        timeout_s=0.2,
        connect_timeout_s=1.0,
        retries=0,
        points=POINTS,
    )
    driver = ModbusDriver(spec)
    try:
        await driver.connect()
        return await driver.read_points()
    except DriverError:
        return None
    finally:
        await driver.close()
        await peer.stop()


class TestRandomBytesPeer:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        answers=st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=3),
        echo_header=st.booleans(),
    )
    def test_random_bytes_give_bad_readings(
        self, answers: list[bytes], echo_header: bool
    ) -> None:
        readings = asyncio.run(read_from_peer(answers, echo_header))

        if readings is not None:
            check_readings(readings, POINTS)
            if not echo_header:
                assert not any(r.quality.is_good for r in readings)

    @pytest.mark.parametrize(
        "pdu",
        [
            # Function 4, 10 bytes claimed, 2 sent.
            bytes([4, 10, 0, 1]),
            # Function 4 with 5 registers; the request asked for 4.
            bytes([4, 10]) + bytes(10),
            # Exception response with an unknown exception code.
            bytes([0x84, 0x7F]),
            # A response to a different function.
            bytes([3, 8]) + bytes(8),
        ],
        ids=["short", "extra_register", "unknown_exception", "wrong_function"],
    )
    async def test_malformed_pdu_gives_bad_readings(self, pdu: bytes) -> None:
        readings = await read_from_peer([pdu], echo_header=True)

        if readings is not None:
            check_readings(readings, POINTS)
            assert not any(r.quality.is_good for r in readings)
