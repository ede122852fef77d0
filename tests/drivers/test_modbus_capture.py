"""Long waveform captures read page by page from the Modbus simulator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agent.profiles import build_device_specs
from agent.settings import load_settings
from drivers.errors import DriverProtocolError
from drivers.modbus import ModbusDriver
from drivers.sim import modbus_sensors as layout
from drivers.sim.modbus_sensors import SimVibrationSensor
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.recordings import load_recording
from drivers.spec import ModbusTcpSpec, ModbusWaveformSpec, RegisterTable

RECORDING = "normal_97"
UNIT = 1

PAGED = ModbusWaveformSpec(
    name="accel",
    asset="m1",
    block_address=layout.CAPTURE_BLOCK,
    max_samples=65_536,
    sample_count_address=layout.CAPTURE_SAMPLE_COUNT,
    sample_rate_address=layout.CAPTURE_SAMPLE_RATE,
    sequence_address=layout.CAPTURE_SEQUENCE,
    ready_address=layout.CAPTURE_READY,
    trigger_address=layout.CAPTURE_TRIGGER,
    rpm_address=layout.CAPTURE_RPM,
    capture_length_address=layout.CAPTURE_LENGTH,
    page_address=layout.CAPTURE_PAGE,
    page_samples=16_384,
    chunk_registers=124,
)


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    simulator = ModbusSimulator(sensors=[SimVibrationSensor(UNIT, RECORDING)])
    await simulator.start()
    yield simulator
    await simulator.stop()


def driver_for(port: int, waveform: ModbusWaveformSpec) -> ModbusDriver:
    return ModbusDriver(
        ModbusTcpSpec(
            device_id="vib",
            host="127.0.0.1",
            port=port,
            unit_id=UNIT,
            timeout_s=1.0,
            waveforms=(waveform,),
        )
    )


async def read_with_start(
    driver: ModbusDriver, name: str = "accel"
) -> tuple[np.ndarray, int, int | None]:
    """Read a waveform; return its samples, the capture start and sequence."""
    await driver.connect()
    waveform = await driver.read_waveform(name)
    high, low = await driver.read_block(
        RegisterTable.INPUT, layout.CAPTURE_START_INDEX, 2
    )
    await driver.close()
    return waveform.samples, (high << 16) | low, waveform.sequence


def recording_window(start: int, count: int) -> np.ndarray:
    samples = load_recording(RECORDING).samples
    return samples[(start + np.arange(count)) % samples.size]


class TestPagedCapture:
    async def test_full_length_matches_recording(self, sim: ModbusSimulator) -> None:
        samples, start, _ = await read_with_start(driver_for(sim.port, PAGED))
        # 65 536 float32 samples are 131 072 registers: twice the address
        # space, so only reading four pages can deliver them.
        assert samples.size == 65_536
        np.testing.assert_array_equal(samples, recording_window(start, 65_536))

    async def test_partial_last_page(self, sim: ModbusSimulator) -> None:
        waveform = dataclasses.replace(PAGED, capture_samples=20_000)
        samples, start, _ = await read_with_start(driver_for(sim.port, waveform))
        sensor = sim.sensors[UNIT]
        assert isinstance(sensor, SimVibrationSensor)
        assert sensor.capture_length == 20_000
        assert samples.size == 20_000
        np.testing.assert_array_equal(samples, recording_window(start, 20_000))

    async def test_capture_torn_mid_pages_is_retried(
        self, sim: ModbusSimulator
    ) -> None:
        sensor = sim.sensors[UNIT]
        assert isinstance(sensor, SimVibrationSensor)
        # Page 0 takes 32 768 / 124 = 265 reads, so read 400 is in page 1.
        sim.tear_captures(UNIT, 1, after_reads=400)
        first_sequence = sensor.sequence
        samples, start, sequence = await read_with_start(driver_for(sim.port, PAGED))
        # Trigger, tear, trigger again: three captures after the first.
        assert sequence == first_sequence + 3
        assert sensor.tears_pending == 0
        np.testing.assert_array_equal(samples, recording_window(start, 65_536))

    async def test_capture_torn_every_time_fails(self, sim: ModbusSimulator) -> None:
        waveform = dataclasses.replace(PAGED, capture_samples=40_000)
        sim.tear_captures(UNIT, 10, after_reads=300)
        driver = driver_for(sim.port, waveform)
        await driver.connect()
        with pytest.raises(DriverProtocolError, match="capture torn 3 times"):
            await driver.read_waveform("accel")
        await driver.close()


class TestShippedProfile:
    async def test_profile_reads_65536_samples(
        self, sim: ModbusSimulator, tmp_path: Path
    ) -> None:
        config = tmp_path / "agent.toml"
        config.write_text(
            f"""
[gateway]
id = "gw"
state_dir = "{tmp_path}"

[devices.vib]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {sim.port}
unit_id = {UNIT}
asset = "pump"
profile = "vib-triax-modbus"

[assets.pump]
""",
            encoding="utf-8",
        )
        device = build_device_specs(load_settings(config, environ={}))["vib"]
        assert isinstance(device, ModbusTcpSpec)
        (profile_waveform,) = device.waveforms
        assert profile_waveform.capture_samples == 16_384
        assert profile_waveform.max_samples == 65_536

        longest = dataclasses.replace(profile_waveform, capture_samples=65_536)
        driver = ModbusDriver(dataclasses.replace(device, waveforms=(longest,)))
        samples, start, _ = await read_with_start(driver)
        np.testing.assert_array_equal(samples, recording_window(start, 65_536))
