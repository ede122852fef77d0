"""Outbox write rate and drain rate into the sandbox API.

Writes: the same readings go into a fresh outbox once in batches of
``--batch`` per transaction and once with one transaction per reading, in
the same run and on the same filesystem. Every transaction is durable
(WAL with ``synchronous=FULL``), so the ratio is the gain from batching.

Drain: the batched outbox is delivered by the uplink client to the
sandbox API on loopback (500 measurements per request, no rate limit), and
the rate is compared with the write rate of the same run.

Run with ``.venv/bin/python bench/outbox.py [--count N] [--batch B]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.outbox import Outbox, OutboxItem, Priority
from agent.settings import UplinkEndpointSettings, UplinkSettings
from agent.uplink.client import Uplink
from agent.uplink.sandbox import SandboxApi
from agent.uplink.token import TokenProvider, write_secret_file

TOKEN = "bench-token-not-secret"


def readings(count: int) -> list[OutboxItem]:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        OutboxItem(
            kind="measurement",
            priority=Priority.INDICATOR,
            payload={
                "asset": f"pump-{n % 4 + 1}",
                "name": "velocity_rms",
                "value": 2.0 + n * 1e-4,
                "unit": "mm/s",
                "timestamp": (start + timedelta(seconds=n // 4)).isoformat(),
                "quality": "good",
            },
        )
        for n in range(count)
    ]


def write_rate(path: Path, items: list[OutboxItem], batch: int) -> float:
    """Return readings per second stored with ``batch`` per transaction."""
    outbox = Outbox(path, max_bytes=10**10)
    began = time.perf_counter()
    for first in range(0, len(items), batch):
        outbox.put_many(items[first : first + batch])
    elapsed = time.perf_counter() - began
    outbox.close()
    return len(items) / elapsed


async def drain_rate(path: Path, directory: Path) -> tuple[float, int]:
    """Deliver the outbox at ``path`` to a sandbox; return readings per
    second and the number stored by the sandbox."""
    sandbox = SandboxApi(directory / "sandbox.db", tokens=TOKEN, seed_assets=4)
    await sandbox.start("127.0.0.1", 0)
    token_file = directory / "token"
    write_secret_file(token_file, TOKEN)
    settings = UplinkSettings(
        sandbox=UplinkEndpointSettings(
            base_url=sandbox.base_url, token_file=token_file
        ),
        max_requests_per_s=10_000,
    )
    outbox = Outbox(path, max_bytes=10**10)
    depth = outbox.stats().depth
    tags = {f"pump-{n}": f"PUMP-{n:04d}" for n in range(1, 5)}
    uplink = Uplink(settings, outbox, tags, TokenProvider(settings, environ={}))

    began = time.perf_counter()
    drained = await uplink.flush(600)
    elapsed = time.perf_counter() - began
    await uplink.close()
    stored = sandbox.store._conn.execute("SELECT COUNT(*) FROM measurements")
    count = int(stored.fetchone()[0])
    outbox.close()
    await sandbox.stop()
    if not drained:
        raise SystemExit("the outbox did not drain; see the log for the cause")
    return depth / elapsed, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument(
        "--single",
        type=int,
        default=2_000,
        help="readings written one per transaction (2000)",
    )
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    items = readings(args.count)

    with tempfile.TemporaryDirectory(dir=Path.cwd()) as name:
        directory = Path(name)
        single = write_rate(directory / "single.db", items[: args.single], 1)
        batched = write_rate(directory / "batched.db", items, args.batch)
        drained, stored = asyncio.run(drain_rate(directory / "batched.db", directory))

    print(f"one transaction per reading: {single:10.0f} readings/s")
    print(
        f"{args.batch} per transaction:       {batched:10.0f} readings/s"
        f"  ({batched / single:.1f}x)"
    )
    print(
        f"drain to sandbox on loopback: {drained:9.0f} readings/s"
        f"  ({drained / batched:.2f}x the batched write rate)"
    )
    print(f"stored by the sandbox: {stored} of {args.count}")


if __name__ == "__main__":
    main()
