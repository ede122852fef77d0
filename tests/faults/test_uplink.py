"""Integration API faults: 5xx storms, 429, a revoked token, lost answers.

Each run lasts 20 to 30 s; the agent's retry backoff is capped at 5 s by
the generated configuration (``uplink.retry_max``), so recovery figures are
a few seconds rather than the minute a default configuration allows.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import pytest

from agent.uplink.token import write_secret_file
from tests.faults.conftest import FaultPlant, Tally, record

pytestmark = pytest.mark.faults
MEASUREMENTS = "/api/v1/measurements"


def assert_nothing_lost(tally: Tally) -> None:
    assert len(tally.produced) > 50
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert tally.unexpected == 0
    assert tally.evicted == 0
    assert tally.dead_lettered == 0


def statuses(plant: FaultPlant, since: int) -> list[int | None]:
    return [
        r.status
        for r in plant.sandbox.requests[since:]
        if r.path == MEASUREMENTS and r.method == "POST"
    ]


class TestServerErrors:
    async def test_5xx_storm(self, plant: FaultPlant) -> None:
        """The next 8 measurement posts fail with 500 and 503 alternately."""
        plant.write_config()
        await plant.start_agent()
        await plant.wait_stored_growth("pump-outer", 15.0)
        mark = len(plant.sandbox.requests)
        for _ in range(4):
            plant.sandbox.fail_next(1, 500, path=MEASUREMENTS)
            plant.sandbox.fail_next(1, 503, path=MEASUREMENTS)

        await plant.wait_for(
            lambda: statuses(plant, mark).count(503) == 4, 60.0, "8 failed posts"
        )
        failed_at = time.monotonic()
        await plant.wait_stored_growth("pump-outer", 20.0)
        recover_s = time.monotonic() - failed_at
        tally = await plant.drain_and_stop()

        record("API 5xx storm (8 answers)", tally, faults=8, recover_s=recover_s)
        assert statuses(plant, mark).count(500) == 4
        assert_nothing_lost(tally)

    async def test_429_retry_after_is_honoured(self, plant: FaultPlant) -> None:
        """Three 429 answers with Retry-After: 3."""
        plant.write_config()
        await plant.start_agent()
        await plant.wait_stored_growth("pump-outer", 15.0)
        mark = len(plant.sandbox.requests)
        plant.sandbox.rate_limit_next(3, 3.0, path=MEASUREMENTS)

        await plant.wait_for(
            lambda: statuses(plant, mark).count(429) == 3, 60.0, "three 429s"
        )
        limited_at = time.monotonic()
        await plant.wait_stored_growth("pump-outer", 20.0)
        recover_s = time.monotonic() - limited_at
        tally = await plant.drain_and_stop()

        posts = [
            r
            for r in plant.sandbox.requests[mark:]
            if r.path == MEASUREMENTS and r.method == "POST"
        ]
        gaps = [
            later.at_s - earlier.at_s
            for earlier, later in itertools.pairwise(posts)
            if earlier.status == 429
        ]
        record(
            "API 429 with Retry-After 3 s (x3)",
            tally,
            faults=3,
            recover_s=recover_s,
            note=f"shortest wait after a 429: {min(gaps):.1f} s",
        )
        assert len(gaps) == 3
        assert min(gaps) >= 3.0
        assert_nothing_lost(tally)

    async def test_answers_lost_after_commit(self, plant: FaultPlant) -> None:
        """The API stores the next 5 batches and closes without answering."""
        plant.write_config()
        await plant.start_agent()
        await plant.wait_stored_growth("pump-outer", 15.0)
        mark = len(plant.sandbox.requests)
        plant.sandbox.commit_then_drop_next(5, path=MEASUREMENTS)

        await plant.wait_for(
            lambda: statuses(plant, mark).count(None) == 5, 60.0, "5 lost answers"
        )
        dropped_at = time.monotonic()
        await plant.wait_stored_growth("pump-outer", 20.0)
        recover_s = time.monotonic() - dropped_at
        tally = await plant.drain_and_stop()

        record("answers lost after commit (x5)", tally, faults=5, recover_s=recover_s)
        assert_nothing_lost(tally)


class TestRevokedToken:
    async def test_reprovisioned_token_resumes(self, plant: FaultPlant) -> None:
        """Token revoked; 8 s later a new one is written and SIGHUP sent."""
        plant.write_config()
        await plant.start_agent()
        await plant.wait_stored_growth("pump-outer", 15.0)
        mark = len(plant.sandbox.requests)
        plant.sandbox.revoke_token(plant.token)

        await plant.wait_for(
            lambda: any(r.status == 401 for r in plant.sandbox.requests[mark:]),
            30.0,
            "a 401",
        )
        await asyncio.sleep(8.0)
        rejected = sum(1 for r in plant.sandbox.requests[mark:] if r.status == 401)
        write_secret_file(plant.token_file, plant.sandbox.issue_token())
        plant.agent.send(signal.SIGHUP)
        hup_at = time.monotonic()
        await plant.wait_stored_growth("pump-outer", 30.0)
        recover_s = time.monotonic() - hup_at
        tally = await plant.drain_and_stop()

        record(
            "token revoked, new token + SIGHUP after 8 s",
            tally,
            faults=1,
            recover_s=recover_s,
            note=f"{rejected} requests answered 401 in the 8 s without a token",
        )
        # Delivery stops at the first 401 instead of retrying with a token
        # that cannot work; one 401 per kind (measurements, requests) at most.
        assert rejected <= 2
        assert_nothing_lost(tally)
