"""Outbox faults: the byte cap, a full filesystem, a corrupt database.

The API is kept failing (503) for 12 to 20 s so the outbox grows; a plant
outage of hours is scaled down by shrinking the cap (30 kB) and the
filesystem (1 MiB tmpfs) instead of waiting.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.conftest import FaultPlant, record

pytestmark = pytest.mark.faults
MEASUREMENTS = "/api/v1/measurements"
STORM = 1_000_000
SMALL_FS_BYTES = 1024 * 1024


class TestOutboxFull:
    async def test_byte_cap_evicts_counted(self, plant: FaultPlant) -> None:
        """API down 12 s with a 30 kB cap: what is missing was evicted."""
        plant.write_config(max_bytes=30_000)
        await plant.start_agent()
        await plant.wait_stored_growth("pump-outer", 15.0)
        plant.sandbox.fail_next(STORM, 503)
        await asyncio.sleep(12.0)
        plant.sandbox.clear_faults()
        plant.sandbox._faults.clear()
        cleared_at = time.monotonic()
        await plant.wait_stored_growth("pump-outer", 30.0)
        recover_s = time.monotonic() - cleared_at
        tally = await plant.drain_and_stop()

        record(
            "outbox cap 30 kB, API down 12 s",
            tally,
            faults=1,
            recover_s=recover_s,
            note="lost equals the outbox's eviction count",
        )
        assert tally.evicted > 0
        assert tally.lost == tally.evicted
        assert tally.duplicated == 0
        assert tally.unexpected == 0
        assert tally.dead_lettered == 0

    async def test_full_filesystem(self, plant: FaultPlant, tmp_path: Path) -> None:
        """Outbox on a 1 MiB tmpfs, API down until the filesystem is full.

        The audit table lives in the outbox file and is never emptied, so
        the outbox has less room after every write than the agent alone
        would leave it.
        """
        mount_dir = tmp_path / "small"
        mount_dir.mkdir()
        mounted = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={SMALL_FS_BYTES}",
                "tmpfs",
                str(mount_dir),
            ],
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        try:
            plant.write_config(outbox_path=mount_dir / "outbox.db")
            await plant.start_agent()
            await plant.wait_stored_growth("pump-outer", 15.0)
            plant.sandbox.fail_next(STORM, 503)
            await plant.wait_for(
                lambda: disk_full(plant),
                120.0,
                "a full outbox filesystem (an eviction or a failed write)",
            )
            await asyncio.sleep(3.0)
            alive_when_full = plant.agent.running
            evicted_when_full = plant.outbox_counts()["evicted"]
            plant.sandbox._faults.clear()
            cleared_at = time.monotonic()
            await plant.wait_stored_growth("pump-outer", 40.0)
            recover_s = time.monotonic() - cleared_at
            tally = await plant.drain_and_stop(60.0)
            errors = (plant.status() or {}).get("counters", {}).get("outbox_errors")
            log = plant.agent.log_text()
        finally:
            subprocess.run(["umount", "-l", str(mount_dir)], check=False)

        record(
            "outbox filesystem full (1 MiB tmpfs)",
            tally,
            faults=1,
            recover_s=recover_s,
            note=f"{evicted_when_full} evicted while full; {errors} outbox"
            " writes failed and were counted by the agent",
        )
        assert alive_when_full
        assert "outbox.reserve_released" in log
        assert tally.pending == 0
        assert tally.lost == tally.evicted
        assert tally.duplicated == 0
        assert tally.dead_lettered == 0

    async def test_corrupt_database_moved_aside(self, plant: FaultPlant) -> None:
        """A garbage outbox file at start-up is moved aside; the agent runs."""
        garbage = b"this is not an SQLite database\n" * 512
        plant.outbox_path.write_bytes(garbage)
        plant.write_config()
        started = time.monotonic()
        await plant.start_agent()
        await plant.wait_stored_growth("pump-outer", 20.0)
        recover_s = time.monotonic() - started
        await plant.agent.stop()

        aside = list(plant.state_dir.glob("outbox.db.corrupt-*"))
        stored = plant.stored()
        assert len(aside) == 1
        assert aside[0].read_bytes() == garbage
        assert max(stored.values()) == 1
        assert len(stored) > 10
        from collections import Counter

        from tests.faults.conftest import Tally

        record(
            "corrupt outbox file at start-up",
            Tally(
                produced=Counter(stored),
                stored=stored,
                pending=plant.outbox_counts()["pending"],
                evicted=0,
                dead_lettered=0,
            ),
            faults=1,
            recover_s=recover_s,
            note="no audit trigger in the fresh file: produced = stored",
        )


def disk_full(plant: FaultPlant) -> bool:
    """Whether the outbox evicted for room (the cap is far off) or a write
    failed, the two signs of a full filesystem."""
    counters = (plant.status() or {}).get("counters") or {}
    return counters.get("outbox_errors", 0) > 0 or plant.outbox_counts()["evicted"] > 0
