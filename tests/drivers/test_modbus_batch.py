"""The Modbus driver's poll result: one ReadingBatch in plan order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from drivers.base import QualityReason, Reading, ReadingBatch
from drivers.modbus import ModbusDriver
from drivers.sim.modbus_sensors import SimRegisterBank
from drivers.sim.modbus_server import ModbusSimulator
from drivers.spec import ModbusPointSpec, ModbusTcpSpec

UNIT = 5


@pytest.fixture
async def bank() -> AsyncIterator[ModbusSimulator]:
    # Register ``a`` of the bank contains the number ``a``.
    simulator = ModbusSimulator(sensors=[SimRegisterBank(UNIT, size=100)])
    await simulator.start()
    yield simulator
    await simulator.stop()


def spec(port: int) -> ModbusTcpSpec:
    # Declared out of address order, and far enough apart (gap 0) that
    # each point is its own request.
    points = tuple(
        ModbusPointSpec(name=f"r{address}", asset="m1", address=address, unit="raw")
        for address in (40, 7, 20)
    )
    return ModbusTcpSpec(
        device_id="bank",
        host="127.0.0.1",
        port=port,
        unit_id=UNIT,
        timeout_s=0.5,
        retries=0,
        max_gap_registers=0,
        points=points,
    )


class TestReadPointsBatch:
    async def test_values_in_plan_order(self, bank: ModbusSimulator) -> None:
        driver = ModbusDriver(spec(bank.port))
        await driver.connect()
        readings = await driver.read_points()
        await driver.close()

        assert isinstance(readings, ReadingBatch)
        assert [r.point for r in readings] == ["r7", "r20", "r40"]
        assert [r.value for r in readings] == [7, 20, 40]
        assert all(r.quality.is_good for r in readings)
        assert {r.source for r in readings} == {"bank"}
        assert {r.unit for r in readings} == {"raw"}

    async def test_each_block_has_its_request_time(self, bank: ModbusSimulator) -> None:
        driver = ModbusDriver(spec(bank.port))
        await driver.connect()
        readings = await driver.read_points()
        await driver.close()

        stamps = [r.timestamp for r in readings]
        assert stamps == sorted(stamps)
        assert all(t.utcoffset() is not None for t in stamps)
        # Three requests on loopback take at least some microseconds each.
        assert len(set(stamps)) == 3

    async def test_offline_readings_match_poll_order(
        self, bank: ModbusSimulator
    ) -> None:
        driver = ModbusDriver(spec(bank.port))
        await driver.connect()
        polled = await driver.read_points()
        await driver.close()

        offline = driver.offline_readings("link down")
        assert [r.point for r in offline] == [r.point for r in polled]
        assert all(r.value is None for r in offline)
        assert {r.quality.reason for r in offline} == {QualityReason.COMM_ERROR}
        assert {r.quality.detail for r in offline} == {"link down"}

    async def test_silent_server_marks_every_block_bad(
        self, bank: ModbusSimulator
    ) -> None:
        driver = ModbusDriver(spec(bank.port))
        await driver.connect()
        bank.stop_answering(True)
        readings = await driver.read_points()
        bank.stop_answering(False)
        await driver.close()

        assert [r.point for r in readings] == ["r7", "r20", "r40"]
        assert all(r.value is None for r in readings)
        assert {r.quality.reason for r in readings} == {QualityReason.TIMEOUT}


async def read_with_exception(bank: ModbusSimulator, code: int) -> Sequence[Reading]:
    """Poll once while the simulator responds to every request with exception
    ``code``."""
    driver = ModbusDriver(spec(bank.port))
    await driver.connect()
    bank.set_exception(UNIT, code)
    try:
        return await driver.read_points()
    finally:
        bank.set_exception(UNIT, None)
        await driver.close()


class TestExceptionReasons:
    @pytest.mark.parametrize(
        ("code", "reason"),
        [
            (2, QualityReason.SENSOR_FAULT),  # ILLEGAL DATA ADDRESS
            (4, QualityReason.SENSOR_FAULT),  # SERVER DEVICE FAILURE
            (10, QualityReason.COMM_ERROR),  # GATEWAY PATH UNAVAILABLE
            (11, QualityReason.COMM_ERROR),  # GATEWAY TARGET FAILED TO RESPOND
        ],
    )
    async def test_reason_tells_device_from_gateway(
        self, bank: ModbusSimulator, code: int, reason: QualityReason
    ) -> None:
        readings = await read_with_exception(bank, code)

        assert {r.quality.reason for r in readings} == {reason}
        assert all(f"({code})" in r.quality.detail for r in readings)
        assert all(r.value is None for r in readings)

    @pytest.mark.parametrize(
        ("code", "advice"),
        [
            (2, "check the table, address and count"),
            (11, "check the unit id"),
        ],
    )
    async def test_detail_says_what_to_check(
        self, bank: ModbusSimulator, code: int, advice: str
    ) -> None:
        readings = await read_with_exception(bank, code)

        assert all(f"({code}); {advice}" in r.quality.detail for r in readings)
