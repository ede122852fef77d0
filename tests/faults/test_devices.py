"""Device faults: power cycles, a silent device, a black-holed link, a dead unit.

Each run lasts about 20 s instead of the minutes a plant outage lasts; the
agent's poll interval is 1 s and its Modbus timeouts are 1 to 2 s, so a few
seconds of outage already take every device through failure and recovery.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import (
    SPARE_ASSET,
    FaultPlant,
    SilentDevice,
    TcpProxy,
    record,
    spare_device_text,
)

pytestmark = pytest.mark.faults


def assert_nothing_lost(plant: FaultPlant, tally: object) -> None:
    from tests.faults.conftest import Tally

    assert isinstance(tally, Tally)
    assert len(tally.produced) > 50, plant.agent.log_tail()
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert tally.unexpected == 0
    assert tally.evicted == 0
    assert tally.dead_lettered == 0


DETECT_DEADLINE_S = 20.0
"""Maximum seconds for a device to show as down once its link fails.

Each request of a silent poll waits 2 s twice, and a due waveform capture
adds its own timeout, so a black-holed link took 2 to 10 s here. The
status file is written every 2 s, and the rest is room for a loaded host.
"""


def device_state(plant: FaultPlant, device: str) -> str | None:
    return ((plant.status() or {}).get("devices") or {}).get(device, {}).get("state")


async def wait_connected(plant: FaultPlant, device: str) -> None:
    """Wait until the status snapshot shows ``device`` connected.

    The first measurements can reach the API before the snapshot, written
    every 2 s, stops showing the device as ``connecting``.
    """
    await plant.wait_for(
        lambda: device_state(plant, device) == "connected",
        15.0,
        f"{device} to show as connected",
    )


async def hold_fault_until_down(
    plant: FaultPlant, device: str, fault_s: float
) -> float:
    """Keep a fault on until ``device`` shows as down and ``fault_s`` passed.

    Returns the seconds from the start of the fault to the first status
    snapshot showing the device down.
    """
    started = time.monotonic()
    detect_s = await plant.wait_for(
        lambda: device_state(plant, device) == "down",
        DETECT_DEADLINE_S,
        f"{device} to show as down",
    )
    await asyncio.sleep(max(0.0, fault_s - (time.monotonic() - started)))
    return detect_s


class TestDevicePowerCycle:
    async def test_modbus_simulator_restart(self, plant: FaultPlant) -> None:
        """Modbus simulator off for 6 s, then back on the same port."""
        plant.write_config()
        await plant.start_agent()
        await plant.wait_stored_growth("pump-outer", 15.0)
        await wait_connected(plant, "pump-healthy-sensor")

        await plant.modbus.stop()
        detect_s = await hold_fault_until_down(plant, "pump-healthy-sensor", 6.0)
        await plant.modbus.start()
        recover_s = await plant.wait_stored_growth("pump-healthy", 30.0)
        await plant.wait_stored_growth("pump-outer", 30.0)
        tally = await plant.drain_and_stop()

        record(
            "Modbus simulator restart (6 s off)",
            tally,
            faults=1,
            recover_s=recover_s,
            note=f"device shown down {detect_s:.1f} s after the stop",
        )
        assert recover_s < 20.0
        assert_nothing_lost(plant, tally)

    async def test_opcua_restart_reordered_namespaces(self, plant: FaultPlant) -> None:
        """OPC UA server replaced; the sensor namespace moves to another index."""
        plant.write_config()
        await plant.start_agent()
        await plant.wait_stored_growth("motor-4", 15.0)
        index_before = plant.opcua.namespace_index

        await plant.opcua.restart(reorder_namespaces=True)
        recover_s = await plant.wait_stored_growth("motor-4", 30.0)
        await plant.wait_stored_growth("motor-4", 15.0)
        tally = await plant.drain_and_stop()

        record(
            "OPC UA restart, namespaces reordered",
            tally,
            faults=1,
            recover_s=recover_s,
        )
        assert plant.opcua.namespace_index != index_before
        assert recover_s < 20.0
        assert_nothing_lost(plant, tally)


class TestUnresponsiveDevices:
    async def test_silent_device_leaves_others_polling(self, plant: FaultPlant) -> None:
        """A device that accepts TCP and never answers, for 12 s."""
        silent = SilentDevice()
        await silent.start()
        try:
            plant.write_config(extra=spare_device_text(port=silent.port, unit_id=1))
            await plant.start_agent()
            await plant.wait_for(lambda: silent.connections > 0, 15.0, "a connection")
            before = plant.stored_count("pump-healthy")
            await asyncio.sleep(12.0)
            during = plant.stored_count("pump-healthy") - before
            status = plant.status() or {}
            tally = await plant.drain_and_stop()
        finally:
            await silent.stop()

        record(
            "device accepts TCP, never answers (12 s)",
            tally,
            faults=1,
            recover_s=None,
            note=f"{during} measurements of a healthy device stored meanwhile",
        )
        assert status["devices"][f"{SPARE_ASSET}-sensor"]["state"] in {
            "down",
            "connecting",
        }
        assert status["devices"]["pump-healthy-sensor"]["state"] == "connected"
        # A waveform every 3 s and speed readings every second.
        assert during >= 8
        assert plant.stored_count(SPARE_ASSET) == 0
        assert_nothing_lost(plant, tally)

    async def test_black_holed_link_recovers(self, plant: FaultPlant) -> None:
        """A proxy stops forwarding Modbus for 8 s without closing anything."""
        proxy = TcpProxy(plant.modbus.port)
        await proxy.start()
        try:
            plant.write_config(modbus_port=proxy.port)
            await plant.start_agent()
            await plant.wait_stored_growth("pump-outer", 15.0)
            await wait_connected(plant, "pump-healthy-sensor")

            proxy.forwarding = False
            detect_s = await hold_fault_until_down(plant, "pump-healthy-sensor", 8.0)
            proxy.forwarding = True
            recover_s = await plant.wait_stored_growth("pump-healthy", 30.0)
            await plant.wait_stored_growth("pump-outer", 30.0)
            tally = await plant.drain_and_stop()
        finally:
            await proxy.stop()

        record(
            "black-holed Modbus link (8 s)",
            tally,
            faults=1,
            recover_s=recover_s,
            note=f"device shown down {detect_s:.1f} s after the link stopped",
        )
        assert recover_s < 20.0
        assert_nothing_lost(plant, tally)

    async def test_dead_unit_on_shared_gateway(self, plant: FaultPlant) -> None:
        """Unit 4 on the shared TCP gateway is not served; units 1-3 and 10 are."""
        plant.write_config(extra=spare_device_text(port=plant.modbus.port, unit_id=4))
        await plant.start_agent()
        before = plant.stored_count("gearbox-oil")
        await asyncio.sleep(10.0)
        during = plant.stored_count("gearbox-oil") - before
        status = plant.status() or {}
        tally = await plant.drain_and_stop()

        record(
            "dead unit id 4 on a shared gateway (10 s)",
            tally,
            faults=1,
            recover_s=None,
            note=f"{during} oil measurements of unit 10 stored meanwhile",
        )
        assert status["devices"][f"{SPARE_ASSET}-sensor"]["state"] in {
            "down",
            "connecting",
        }
        assert status["devices"]["gearbox-oil-sensor"]["state"] == "connected"
        assert during >= 10
        assert plant.stored_count(SPARE_ASSET) == 0
        assert_nothing_lost(plant, tally)
