"""Exactly-once delivery across a SIGKILL of the delivering process.

A child process fills an outbox and delivers it to the sandbox, which
answers slowly (or stores a batch and drops the answer). The test kills the
child with SIGKILL while a batch is in flight, starts it again on the same
outbox, and checks that the sandbox holds every measurement exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.uplink.sandbox import SandboxApi
from agent.uplink.token import write_secret_file

TOKEN = "crash-test-token-0d9e8f7a6b5c"
PRODUCED = 3000
REPO = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from agent.outbox import Outbox, OutboxItem, Priority
from agent.settings import UplinkEndpointSettings, UplinkSettings
from agent.uplink.client import Uplink
from agent.uplink.token import TokenProvider

db, base_url, token_file, produce = sys.argv[1:5]
outbox = Outbox(Path(db), max_bytes=100_000_000)
start = datetime(2026, 3, 1, tzinfo=UTC)
items = [
    OutboxItem(kind="measurement", priority=Priority.INDICATOR, payload={
        "asset": "pump-1", "name": "velocity_rms", "value": n / 10,
        "unit": "mm/s", "quality": "good",
        "timestamp": (start + timedelta(seconds=n)).isoformat(),
    })
    for n in range(int(produce))
]
for first in range(0, len(items), 500):
    outbox.put_many(items[first:first + 500])
print("produced", flush=True)
settings = UplinkSettings(
    sandbox=UplinkEndpointSettings(base_url=base_url, token_file=Path(token_file)),
    max_requests_per_s=1000, retry_max=0.2, request_timeout=5,
)
uplink = Uplink(settings, outbox, {"pump-1": "PUMP-0001"},
                TokenProvider(settings, environ={}), idle_poll_s=0.05)

async def deliver():
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop))
    while outbox.stats().depth:
        await asyncio.sleep(0.02)
    stop.set()
    await task

asyncio.run(deliver())
print("drained", flush=True)
"""


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxApi]:
    api = SandboxApi(tmp_path / "sandbox.db", tokens=TOKEN, seed_assets=5)
    await api.start("127.0.0.1", 0)
    yield api
    await api.stop()


async def start_child(
    tmp_path: Path, sandbox: SandboxApi, produce: int
) -> asyncio.subprocess.Process:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    token_file = tmp_path / "uplink-token"
    write_secret_file(token_file, TOKEN)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path / "outbox.db"),
        sandbox.base_url,
        str(token_file),
        str(produce),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )


def stored_timestamps(sandbox: SandboxApi) -> list[str]:
    rows, cursor = [], 0
    while True:
        page, last = sandbox.store.measurement_page(None, cursor, 500)
        rows.extend(r["timestamp"] for r in page)
        if last is None:
            return rows
        cursor = last


class TestUplinkCrash:
    @pytest.mark.parametrize("fault", ["slow_answer", "commit_then_drop"])
    async def test_sigkill_mid_delivery_stores_once(
        self, tmp_path: Path, sandbox: SandboxApi, fault: str
    ) -> None:
        path = "/api/v1/measurements"
        if fault == "slow_answer":
            sandbox.set_delay(0.5, path=path)
        else:
            sandbox.commit_then_drop_next(100, path=path)
            sandbox.set_delay(0.2, path=path)
        child = await start_child(tmp_path, sandbox, PRODUCED)

        # Kill once the first batch is stored and the next one is in flight.
        async with asyncio.timeout(30):
            while not stored_timestamps(sandbox):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        stored_at_kill = len(stored_timestamps(sandbox))

        sandbox.clear_faults()
        restarted = await start_child(tmp_path, sandbox, 0)
        async with asyncio.timeout(60):
            output, _ = await restarted.communicate()
        timestamps = stored_timestamps(sandbox)

        assert child.returncode == -signal.SIGKILL
        assert 0 < stored_at_kill < PRODUCED
        assert output.decode().split() == ["produced", "drained"]
        assert len(timestamps) == PRODUCED
        assert len(set(timestamps)) == PRODUCED
