"""A sensor clock that jumps backwards.

The gateway clock cannot be changed safely on a shared machine, so this
moves the OPC UA simulator's clock instead: its source timestamps jump
30 s into the past for 6 s. The agent takes reading timestamps from the
OPC UA source timestamp, so it sees a sensor whose clock went backwards.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, tzinfo

import pytest

import drivers.sim.opcua_server as opcua_server
from tests.faults.conftest import FaultPlant, record

pytestmark = pytest.mark.faults
JUMP = timedelta(seconds=30)


class _BehindClock(datetime):
    """``datetime`` whose ``now`` is 30 s behind the real clock."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) - JUMP


def skipped_count(plant: FaultPlant) -> int:
    status = plant.status() or {}
    return int(status["counters"]["measurements_skipped"])


class TestSensorClockBackwards:
    async def test_old_timestamps_skipped_not_sent(
        self, plant: FaultPlant, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Source timestamps 30 s in the past for 6 s are skipped and counted."""
        plant.write_config()
        await plant.start_agent()
        await plant.wait_stored_growth("motor-4", 15.0)
        # Some points repeat their timestamp when polled faster than the
        # sensor updates, so a window without the fault sets the baseline.
        first = skipped_count(plant)
        await asyncio.sleep(9.0)
        baseline = skipped_count(plant) - first

        monkeypatch.setattr(opcua_server, "datetime", _BehindClock)
        await asyncio.sleep(6.0)
        monkeypatch.undo()
        await asyncio.sleep(3.0)
        skipped = skipped_count(plant) - first - baseline
        tally = await plant.drain_and_stop()

        record(
            "sensor clock 30 s backwards for 6 s",
            tally,
            faults=1,
            recover_s=None,
            note=f"{skipped} measurements skipped and counted",
        )
        # At least one OPC UA point polled each second for 6 s.
        assert skipped >= 6
        assert tally.lost == 0
        assert tally.duplicated == 0
        assert tally.dead_lettered == 0
