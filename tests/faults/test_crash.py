"""SIGKILL of the agent process, four times, during delivery and writes.

Kills land at fixed offsets rather than at instrumented points: two while
the API holds each measurement post for 0.5 s (so a batch is in flight),
two at offsets within the 0.5 s cycle of outbox writes. A kill cannot be
aimed at the inside of one SQLite transaction from outside the process,
so "during an outbox write" means "at some instant of the write cycle".
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.faults.conftest import FaultPlant, record

pytestmark = pytest.mark.faults
MEASUREMENTS = "/api/v1/measurements"


class TestAgentKilled:
    async def test_repeated_sigkill_delivers_once(self, plant: FaultPlant) -> None:
        """Four SIGKILLs over about 30 s; then every measurement exactly once."""
        plant.write_config()
        await plant.start_agent()
        statuses = []

        plant.sandbox.set_delay(0.5, path=MEASUREMENTS)
        for _ in range(2):
            await plant.wait_stored_growth("pump-outer", 20.0)
            await asyncio.sleep(0.25)
            statuses.append(await plant.agent.kill())
            await plant.start_agent()
        plant.sandbox.clear_faults()

        for offset_s in (0.3, 0.75):
            await asyncio.sleep(3.0 + offset_s)
            statuses.append(await plant.agent.kill())
            await plant.start_agent()

        await asyncio.sleep(3.0)
        tally = await plant.drain_and_stop()
        replays = (
            plant.sandbox.store.replay_count()
            if hasattr(plant.sandbox.store, "replay_count")
            else None
        )

        record(
            "agent SIGKILL x4 (2 mid-delivery, 2 mid-cycle)",
            tally,
            faults=4,
            recover_s=plant.start_s,
            note="recovery = restart to first status snapshot"
            + ("" if replays is None else f"; {replays} replays"),
        )
        assert statuses == [-signal.SIGKILL] * 4
        assert plant.agent.starts == 5
        assert len(tally.produced) > 100
        assert tally.lost == 0
        assert tally.duplicated == 0
        assert tally.unexpected == 0
        assert tally.dead_lettered == 0
