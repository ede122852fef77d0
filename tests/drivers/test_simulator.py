"""The Modbus simulator's register maps, read on loopback by a plain
pymodbus client, by the driver with the shipped profiles, and by
``cmagent probe modbus``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from agent.cli import main
from agent.profiles import build_device_specs
from agent.settings import load_settings
from drivers.modbus import ModbusDriver
from drivers.sim.modbus_sensors import (
    SimOilSensor,
    SimRegisterBank,
    SimVibrationSensor,
)
from drivers.sim.modbus_server import ModbusSimulator
from drivers.spec import ModbusTcpSpec

# The exception code the Modbus application protocol names ILLEGAL DATA ADDRESS.
ILLEGAL_DATA_ADDRESS = 2

VIB_UNIT = 1
OIL_UNIT = 10
BANK_UNIT = 20
BANK_SIZE = 200

COILS, DISCRETE_INPUTS, HOLDING, INPUT = 1, 2, 3, 4


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    simulator = ModbusSimulator(
        sensors=[
            SimVibrationSensor(VIB_UNIT, "normal_97"),
            SimOilSensor(OIL_UNIT),
            SimRegisterBank(BANK_UNIT, size=BANK_SIZE),
        ]
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def client(sim: ModbusSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    modbus_client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
    assert await modbus_client.connect()
    yield modbus_client
    modbus_client.close()


async def read(
    client: AsyncModbusTcpClient, unit: int, function: int, address: int, count: int
) -> ModbusPDU:
    methods = {
        COILS: client.read_coils,
        DISCRETE_INPUTS: client.read_discrete_inputs,
        HOLDING: client.read_holding_registers,
        INPUT: client.read_input_registers,
    }
    return await methods[function](address, count=count, device_id=unit)


class TestReadOutsideMap:
    @pytest.mark.parametrize(
        ("unit", "function", "address", "count"),
        [
            pytest.param(VIB_UNIT, INPUT, 8, 3, id="vib-past-overall-values"),
            pytest.param(VIB_UNIT, INPUT, 10, 1, id="vib-after-overall-values"),
            pytest.param(VIB_UNIT, INPUT, 0, 112, id="vib-across-two-groups"),
            pytest.param(VIB_UNIT, INPUT, 99, 2, id="vib-before-header"),
            pytest.param(VIB_UNIT, INPUT, 110, 3, id="vib-past-header"),
            pytest.param(VIB_UNIT, INPUT, 999, 2, id="vib-before-block"),
            pytest.param(VIB_UNIT, HOLDING, 0, 1, id="vib-holding-0"),
            pytest.param(VIB_UNIT, HOLDING, 99, 2, id="vib-before-control"),
            pytest.param(VIB_UNIT, HOLDING, 104, 2, id="vib-past-control"),
            pytest.param(VIB_UNIT, COILS, 0, 1, id="vib-coils"),
            pytest.param(VIB_UNIT, DISCRETE_INPUTS, 0, 1, id="vib-discrete"),
            pytest.param(OIL_UNIT, INPUT, 12, 3, id="oil-past-readings"),
            pytest.param(OIL_UNIT, INPUT, 14, 1, id="oil-after-readings"),
            pytest.param(OIL_UNIT, HOLDING, 0, 1, id="oil-holding"),
            pytest.param(OIL_UNIT, COILS, 0, 8, id="oil-coils"),
            pytest.param(BANK_UNIT, HOLDING, BANK_SIZE - 1, 2, id="bank-past-end"),
            pytest.param(BANK_UNIT, INPUT, 0, 1, id="bank-input"),
        ],
    )
    async def test_returns_illegal_data_address(
        self,
        client: AsyncModbusTcpClient,
        unit: int,
        function: int,
        address: int,
        count: int,
    ) -> None:
        response = await read(client, unit, function, address, count)

        assert response.isError()
        assert response.exception_code == ILLEGAL_DATA_ADDRESS


class TestReadInsideMap:
    @pytest.mark.parametrize(
        ("unit", "function", "address", "count"),
        [
            pytest.param(VIB_UNIT, INPUT, 0, 10, id="vib-overall-values"),
            pytest.param(VIB_UNIT, INPUT, 100, 12, id="vib-header"),
            pytest.param(VIB_UNIT, INPUT, 1000, 124, id="vib-block-start"),
            pytest.param(VIB_UNIT, INPUT, 65536 - 124, 124, id="vib-block-end"),
            pytest.param(VIB_UNIT, HOLDING, 100, 5, id="vib-control"),
            pytest.param(OIL_UNIT, INPUT, 0, 14, id="oil-readings"),
            pytest.param(BANK_UNIT, HOLDING, 0, 125, id="bank-start"),
            pytest.param(BANK_UNIT, HOLDING, BANK_SIZE - 125, 125, id="bank-end"),
        ],
    )
    async def test_returns_every_register(
        self,
        client: AsyncModbusTcpClient,
        unit: int,
        function: int,
        address: int,
        count: int,
    ) -> None:
        response = await read(client, unit, function, address, count)

        assert not response.isError()
        assert len(response.registers) == count

    @pytest.mark.parametrize(
        ("unit", "address", "reserved"),
        [
            pytest.param(OIL_UNIT, 0, 9, id="oil-between-codes-and-water"),
            pytest.param(VIB_UNIT, 100, 101, id="vib-between-ready-and-sequence"),
        ],
    )
    async def test_reserved_register_reads_zero(
        self, client: AsyncModbusTcpClient, unit: int, address: int, reserved: int
    ) -> None:
        response = await read(client, unit, INPUT, address, 12)

        assert not response.isError()
        assert response.registers[reserved - address] == 0


def profile_config(tmp_path: Path, port: int) -> Path:
    """Write a configuration with one device per shipped Modbus profile."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[gateway]
id = "gw"
state_dir = "{tmp_path}"

[assets.pump]

[devices.vib]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = {VIB_UNIT}
asset = "pump"
profile = "vib-triax-modbus"

[devices.oil]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = {OIL_UNIT}
asset = "pump"
profile = "oil-modbus"
# Both profiles have a point named temperature.
point_names = {{ temperature = "oil_temperature" }}
""",
        encoding="utf-8",
    )
    return config


class TestShippedProfiles:
    @pytest.mark.parametrize("device_id", ["vib", "oil"])
    async def test_every_point_reads_good(
        self, sim: ModbusSimulator, tmp_path: Path, device_id: str
    ) -> None:
        config = profile_config(tmp_path, sim.port)
        device = build_device_specs(load_settings(config, environ={}))[device_id]
        assert isinstance(device, ModbusTcpSpec)
        driver = ModbusDriver(device)

        await driver.connect()
        readings = await driver.read_points()
        await driver.close()

        assert len(readings) == len(device.points)
        for reading in readings:
            assert reading.quality.is_good, (reading.point, reading.quality)

    async def test_oil_block_spans_reserved_register(
        self, sim: ModbusSimulator, tmp_path: Path
    ) -> None:
        # The oil profile maps input 8 (one register) and 10 (two), so its
        # planned read runs over the unmapped register 9.
        config = profile_config(tmp_path, sim.port)
        device = build_device_specs(load_settings(config, environ={}))["oil"]
        assert isinstance(device, ModbusTcpSpec)
        driver = ModbusDriver(device)

        (request,) = driver.requests
        await driver.connect()
        readings = await driver.read_points()
        await driver.close()

        assert request.address <= 9 < request.end
        assert all(reading.quality.is_good for reading in readings)

    async def test_vibration_waveform_captured(
        self, sim: ModbusSimulator, tmp_path: Path
    ) -> None:
        config = profile_config(tmp_path, sim.port)
        device = build_device_specs(load_settings(config, environ={}))["vib"]
        assert isinstance(device, ModbusTcpSpec)
        driver = ModbusDriver(device)

        await driver.connect()
        waveform = await driver.read_waveform("accel")
        await driver.close()

        assert waveform.samples.size == 16_384
        assert waveform.quality.is_good


class TestProbeAgainstSimulator:
    async def test_block_past_map_reports_exception(
        self, sim: ModbusSimulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # The probe runs its own event loop, so it runs in a thread while
        # this loop serves the simulator.
        arguments = ["probe", "modbus", "--host", "127.0.0.1",
                     "--port", str(sim.port), "--unit", str(VIB_UNIT),
                     "--function", "4", "--address", "8", "--count", "4"]  # fmt: skip

        status = await asyncio.to_thread(main, arguments)

        captured = capsys.readouterr()
        assert status == 1
        assert "ILLEGAL DATA ADDRESS (2)" in captured.err
