"""The durable outbox on real SQLite files in a temporary directory."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.outbox import ROW_OVERHEAD_BYTES, Outbox, OutboxItem, Priority


class Clock:
    """A clock that advances only when a test advances it."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def measurement(n: int, priority: Priority = Priority.INDICATOR) -> OutboxItem:
    return OutboxItem(
        kind="measurement",
        priority=priority,
        payload={"asset": "pump-1", "name": "rms", "value": float(n)},
    )


def item_size(item: OutboxItem) -> int:
    text = json.dumps(item.payload, separators=(",", ":"))
    return len(text.encode()) + ROW_OVERHEAD_BYTES


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", max_bytes=10_000_000, clock=clock)
    yield box
    box.close()


def values(items: list) -> list[float]:
    return [item.payload["value"] for item in items]


class TestOutboxStorage:
    def test_opens_in_wal_mode(self, outbox: Outbox) -> None:
        conn = sqlite3.connect(outbox.path)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.close()
        assert mode == "wal"

    def test_items_survive_reopen(self, tmp_path: Path, clock: Clock) -> None:
        path = tmp_path / "outbox.db"
        first = Outbox(path, max_bytes=1_000_000, clock=clock)
        stored = first.put_many([measurement(i) for i in range(3)])
        first.close()
        second = Outbox(path, max_bytes=1_000_000, clock=clock)
        leased = second.lease("measurement", 10)
        second.close()
        assert stored == 3
        assert values(leased) == [0.0, 1.0, 2.0]

    def test_stats_count_depth_and_bytes(self, outbox: Outbox) -> None:
        items = [measurement(i) for i in range(4)]
        outbox.put_many(items)
        outbox.put_many(
            [
                OutboxItem(
                    kind="maintenance_request",
                    priority=Priority.ALARM,
                    payload={"title": "x"},
                )
            ]
        )
        stats = outbox.stats()
        assert stats.depth == 5
        assert stats.depth_by_kind == {"measurement": 4, "maintenance_request": 1}
        expected_bytes = (
            sum(item_size(i) for i in items) + len('{"title":"x"}') + ROW_OVERHEAD_BYTES
        )
        assert stats.bytes == expected_bytes

    def test_oldest_age_follows_clock(self, outbox: Outbox, clock: Clock) -> None:
        outbox.put_many([measurement(0)])
        clock.advance(42.0)
        assert outbox.stats().oldest_age_s == pytest.approx(42.0)

    def test_rejects_non_positive_cap(self, tmp_path: Path) -> None:
        with pytest.raises(OutboxError, match="max_bytes must be positive"):
            Outbox(tmp_path / "o.db", max_bytes=0)


class TestOutboxLease:
    def test_orders_by_priority_then_age(self, outbox: Outbox) -> None:
        outbox.put_many([measurement(1, Priority.SUMMARY)])
        outbox.put_many([measurement(2, Priority.ALARM)])
        outbox.put_many([measurement(3, Priority.INDICATOR)])
        outbox.put_many([measurement(4, Priority.ALARM)])
        leased = outbox.lease("measurement", 3)
        assert sorted(values(leased)) == [2.0, 3.0, 4.0]
        outbox.ack([item.id for item in leased])
        assert values(outbox.lease("measurement", 3)) == [1.0]

    def test_leased_items_are_hidden(self, outbox: Outbox) -> None:
        outbox.put_many([measurement(i) for i in range(4)])
        first = outbox.lease("measurement", 2)
        assert values(first) == [0.0, 1.0]
        assert outbox.lease("measurement", 2) == []

    def test_expired_lease_returns_same_batch(
        self, outbox: Outbox, clock: Clock
    ) -> None:
        outbox.put_many([measurement(i) for i in range(5)])
        first = outbox.lease("measurement", 3, lease_s=30)
        outbox.put_many([measurement(i, Priority.ALARM) for i in range(9, 12)])
        clock.advance(31)
        again = outbox.lease("measurement", 3, lease_s=30)
        assert [i.id for i in again] == [i.id for i in first]
        assert {i.batch_key for i in again} == {first[0].batch_key}

    def test_batch_key_survives_restart(self, tmp_path: Path, clock: Clock) -> None:
        path = tmp_path / "outbox.db"
        box = Outbox(path, max_bytes=1_000_000, clock=clock)
        box.put_many([measurement(i) for i in range(3)])
        first = box.lease("measurement", 10, lease_s=3600)
        box.save_batch_body(first[0].batch_key, b"{body}")
        box.close()
        reopened = Outbox(path, max_bytes=1_000_000, clock=clock)
        again = reopened.lease("measurement", 10, lease_s=3600)
        body = reopened.batch_body(first[0].batch_key)
        reopened.close()
        assert [i.id for i in again] == [i.id for i in first]
        assert again[0].batch_key == first[0].batch_key
        assert body == b"{body}"

    def test_retry_keeps_key_and_waits(self, outbox: Outbox, clock: Clock) -> None:
        outbox.put_many([measurement(i) for i in range(3)])
        first = outbox.lease("measurement", 2)
        outbox.retry([i.id for i in first], delay_s=10)
        assert outbox.lease("measurement", 2) == []
        clock.advance(10)
        again = outbox.lease("measurement", 2)
        assert again[0].batch_key == first[0].batch_key
        assert again[0].attempts == 1

    def test_ack_of_part_dissolves_batch(self, outbox: Outbox) -> None:
        outbox.put_many([measurement(i) for i in range(3)])
        first = outbox.lease("measurement", 3)
        outbox.ack([first[0].id])
        again = outbox.lease("measurement", 3)
        assert values(again) == [1.0, 2.0]
        assert again[0].batch_key != first[0].batch_key

    def test_kinds_lease_independently(self, outbox: Outbox) -> None:
        outbox.put_many([measurement(0)])
        outbox.put_many(
            [
                OutboxItem(
                    kind="maintenance_request",
                    priority=Priority.ALARM,
                    payload={"title": "t"},
                )
            ]
        )
        requests = outbox.lease("maintenance_request", 1)
        measurements = outbox.lease("measurement", 5)
        assert [i.kind for i in requests] == ["maintenance_request"]
        assert values(measurements) == [0.0]

    def test_rejects_limit_below_one(self, outbox: Outbox) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            outbox.lease("measurement", 0)


class TestOutboxCounters:
    def test_ack_counts_delivered(self, outbox: Outbox) -> None:
        outbox.put_many([measurement(i) for i in range(3)])
        leased = outbox.lease("measurement", 3)
        outbox.ack([i.id for i in leased])
        stats = outbox.stats()
        assert stats.delivered == 3
        assert stats.depth == 0
        assert stats.bytes == 0

    def test_dead_letter_keeps_reason(self, outbox: Outbox) -> None:
        outbox.put_many([measurement(i) for i in range(2)])
        leased = outbox.lease("measurement", 2)
        outbox.dead_letter(leased[1].id, "unknown_asset: no such asset")
        outbox.ack([leased[0].id])
        stats = outbox.stats()
        letters = outbox.dead_letters()
        assert stats.dead_lettered == 1
        assert stats.delivered == 1
        assert letters[0].reason == "unknown_asset: no such asset"
        assert letters[0].payload["value"] == 1.0

    def test_counters_persist(self, tmp_path: Path, clock: Clock) -> None:
        path = tmp_path / "outbox.db"
        box = Outbox(path, max_bytes=1_000_000, clock=clock)
        box.put_many([measurement(i) for i in range(2)])
        box.ack([i.id for i in box.lease("measurement", 2)])
        box.close()
        reopened = Outbox(path, max_bytes=1_000_000, clock=clock)
        assert reopened.stats().delivered == 2
        reopened.close()


class TestOutboxByteCap:
    def test_evicts_lowest_priority_oldest_first(
        self, tmp_path: Path, clock: Clock
    ) -> None:
        size = item_size(measurement(1))
        box = Outbox(tmp_path / "o.db", max_bytes=4 * size, clock=clock)
        box.put_many([measurement(1, Priority.SUMMARY)])
        box.put_many([measurement(2, Priority.INDICATOR)])
        box.put_many([measurement(3, Priority.SUMMARY)])
        box.put_many([measurement(4, Priority.ALARM)])
        box.put_many([measurement(5, Priority.ALARM), measurement(6)])
        stats = box.stats()
        kept = box.lease("measurement", 10)
        box.close()
        assert stats.evicted == 2
        assert stats.bytes == 4 * size
        assert sorted(values(kept)) == [2.0, 4.0, 5.0, 6.0]

    def test_new_low_priority_item_is_evicted_first(
        self, tmp_path: Path, clock: Clock
    ) -> None:
        size = item_size(measurement(1))
        box = Outbox(tmp_path / "o.db", max_bytes=2 * size, clock=clock)
        box.put_many([measurement(i, Priority.ALARM) for i in (1, 2)])
        box.put_many([measurement(3, Priority.SUMMARY)])
        kept = values(box.lease("measurement", 10))
        box.close()
        assert kept == [1.0, 2.0]

    def test_leased_items_are_not_evicted(self, tmp_path: Path, clock: Clock) -> None:
        size = item_size(measurement(1))
        box = Outbox(tmp_path / "o.db", max_bytes=2 * size, clock=clock)
        box.put_many([measurement(1, Priority.SUMMARY)])
        leased = box.lease("measurement", 1)
        box.put_many([measurement(i, Priority.ALARM) for i in (2, 3)])
        box.ack([i.id for i in leased])
        stats = box.stats()
        box.close()
        assert stats.delivered == 1
        assert stats.evicted == 1


class TestOutboxFailures:
    def test_corrupt_file_is_moved_aside(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = tmp_path / "outbox.db"
        path.write_bytes(b"this is not an sqlite database\n" * 200)
        with caplog.at_level(logging.ERROR, logger="agent.outbox"):
            box = Outbox(path, max_bytes=1_000_000)
        box.put_many([measurement(1)])
        leased = box.lease("measurement", 1)
        box.close()
        aside = list(tmp_path.glob("outbox.db.corrupt-*"))
        assert len(aside) == 1
        assert aside[0].read_bytes().startswith(b"this is not an sqlite")
        assert values(leased) == [1.0]
        assert any("outbox.corrupt" in r.getMessage() for r in caplog.records)

    def test_damaged_pages_are_moved_aside(self, tmp_path: Path) -> None:
        path = tmp_path / "outbox.db"
        box = Outbox(path, max_bytes=10_000_000)
        box.put_many([measurement(i) for i in range(2000)])
        box.close()
        data = bytearray(path.read_bytes())
        page = 4096
        data[2 * page : 6 * page] = b"\xa5" * (4 * page)
        path.write_bytes(bytes(data))
        fresh = Outbox(path, max_bytes=10_000_000)
        depth = fresh.stats().depth
        fresh.close()
        assert depth == 0
        assert len(list(tmp_path.glob("outbox.db.corrupt-*"))) == 1

    def test_missing_directory_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(OutboxError, match="cannot open outbox database"):
            Outbox(tmp_path / "absent" / "outbox.db", max_bytes=1000)

    def test_full_disk_raises_and_keeps_working(self, outbox: Outbox) -> None:
        outbox.put_many([measurement(0)])
        pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
        outbox._conn.execute(f"PRAGMA max_page_count={pages + 1}")
        big = [measurement(i) for i in range(5000)]
        with pytest.raises(OutboxError, match="database or disk is full") as raised:
            outbox.put_many(big)
        assert "evicting up to 1 of 1 queued items did not make room" in str(
            raised.value
        )
        assert outbox.disk_full
        assert outbox.stats().depth == 1
        assert outbox.stats().bytes == item_size(measurement(0))
        assert outbox.stats().evicted == 0
        # While the disk counts as full, intake evicts before it adds.
        assert outbox.put_many([measurement(1)]) == 1
        assert values(outbox.lease("measurement", 10)) == [1.0]
        assert outbox.stats().evicted == 1

    def test_concurrent_writers_lose_nothing(self, outbox: Outbox) -> None:
        def produce(base: int) -> None:
            for n in range(20):
                outbox.put_many([measurement(base + n * 10 + k) for k in range(10)])

        threads = [threading.Thread(target=produce, args=(b,)) for b in (0, 10_000)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outbox.stats().depth == 400
