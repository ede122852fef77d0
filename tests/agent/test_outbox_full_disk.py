"""The outbox on a real, small tmpfs filled to the last block.

Mounting needs root (CI runs the tests as root). Where mount is not
permitted the tests fail and say so, because skipping them would hide the
only check that delivery survives a full disk.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.outbox import RECOVERY_INTERVAL_S, Outbox, OutboxItem, Priority
from tests.agent.test_outbox import Clock

FS_BYTES = 2 * 1024 * 1024
MAX_BYTES = 50_000_000
BATCH = 500
SPARE_BYTES = 64 * 1024
"""Free space left on a full disk: room for a few WAL pages, far fewer
than deleting 500 rows with their index entries writes."""


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount_dir = tmp_path / "small"
    mount_dir.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mount_dir)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"mounting a {FS_BYTES}-byte tmpfs on {mount_dir} failed"
            f" ({mounted.stderr.strip()}); these tests need root, as in CI"
        )
    try:
        yield mount_dir
    finally:
        subprocess.run(["umount", "-l", str(mount_dir)], check=False)


def reading(n: int) -> OutboxItem:
    return OutboxItem(
        kind="measurement",
        priority=Priority.INDICATOR,
        payload={"asset": "pump-1", "name": "velocity_rms", "seq": n, "pad": "x" * 80},
    )


def fill_disk(directory: Path) -> Path:
    """Write zeros to a filler file until the filesystem has no block left."""
    filler = directory / "filler"
    block = bytes(4096)
    with open(filler, "wb", buffering=0) as out:
        while True:
            try:
                out.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return filler


def free_bytes(directory: Path) -> int:
    found = os.statvfs(directory)
    return found.f_bavail * found.f_frsize


class Producer:
    """Numbers readings and remembers which ones the outbox accepted."""

    def __init__(self, box: Outbox) -> None:
        self.box = box
        self.next = 0
        self.accepted: list[int] = []
        self.rejected = 0

    def put(self, count: int) -> None:
        numbers = list(range(self.next, self.next + count))
        self.next += count
        try:
            self.box.put_many([reading(n) for n in numbers])
        except OutboxError:
            self.rejected += 1
            return
        self.accepted.extend(numbers)


def deliver_all(box: Outbox, delivered: list[int], max_rounds: int = 200) -> int:
    """Lease, save a body and acknowledge like the uplink until nothing is
    left; return the number of batches."""
    for rounds in range(max_rounds):
        leased = box.lease("measurement", BATCH)
        if not leased:
            return rounds
        body = json.dumps([item.payload for item in leased]).encode()
        box.save_batch_body(leased[0].batch_key, body)
        box.ack([item.id for item in leased])
        delivered.extend(int(item.payload["seq"]) for item in leased)
    raise AssertionError(f"outbox not drained after {max_rounds} batches")


class TestOutboxReserve:
    def test_reserve_is_allocated_zeros(self, small_fs: Path) -> None:
        box = Outbox(small_fs / "outbox.db", max_bytes=MAX_BYTES)
        try:
            found = os.stat(box.reserve_path)
            content = box.reserve_path.read_bytes()
        finally:
            box.close()
        # min(4 MiB, max_bytes / 16, filesystem / 8) = 2 MiB / 8.
        assert box.reserve_bytes == FS_BYTES // 8
        assert found.st_size == FS_BYTES // 8
        assert found.st_blocks * 512 >= FS_BYTES // 8
        assert content == bytes(FS_BYTES // 8)

    def test_no_room_for_reserve_warns(
        self, small_fs: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        filler = fill_disk(small_fs)
        filler.write_bytes(bytes(FS_BYTES - 200 * 1024))
        with caplog.at_level(logging.WARNING, logger="agent.outbox"):
            box = Outbox(small_fs / "outbox.db", max_bytes=MAX_BYTES)
        box.close()
        assert not box.reserve_path.exists()
        assert "outbox.reserve_unavailable" in caplog.text

    def test_reserve_kept_across_reopen(self, small_fs: Path) -> None:
        Outbox(small_fs / "outbox.db", max_bytes=MAX_BYTES).close()
        before = os.stat(small_fs / "outbox.db.reserve").st_ino
        Outbox(small_fs / "outbox.db", max_bytes=MAX_BYTES).close()
        assert os.stat(small_fs / "outbox.db.reserve").st_ino == before


class TestOutboxFullDisk:
    def test_backlog_drains_on_full_disk(
        self, small_fs: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        clock = Clock()
        box = Outbox(small_fs / "outbox.db", max_bytes=MAX_BYTES, clock=clock)
        producer = Producer(box)
        delivered: list[int] = []
        try:
            for _ in range(40):
                producer.put(50)
            filler = fill_disk(small_fs)
            assert free_bytes(small_fs) < 4096

            with caplog.at_level(logging.WARNING, logger="agent.outbox"):
                # Intake on the full disk: the API is down, nothing leaves.
                for _ in range(20):
                    producer.put(50)
                assert box.disk_full
                # The API is back: every queued item goes out.
                batches = deliver_all(box, delivered)
                for _ in range(5):
                    producer.put(50)
                    deliver_all(box, delivered)
            released = caplog.text.count("outbox.reserve_released")

            filler.unlink()
            clock.advance(RECOVERY_INTERVAL_S + 1)
            producer.put(50)
            deliver_all(box, delivered)
            reserve_back = box.reserve_path.exists()
            full_after = box.disk_full
            stats = box.stats()
        finally:
            box.close()

        assert batches >= 2
        assert producer.rejected == 0
        assert released == 1
        assert reserve_back
        assert not full_after
        assert stats.depth == 0
        assert len(delivered) == len(set(delivered))
        assert set(delivered) <= set(producer.accepted)
        assert stats.delivered == len(delivered)
        assert stats.evicted == len(producer.accepted) - len(delivered)
        assert stats.evicted > 0
        # Readings 2000 to 2999 arrived on the full disk; the last 300 after.
        assert set(range(producer.next - 300, producer.next)) <= set(delivered)

    def test_ack_of_full_batch_with_little_space_left(self, small_fs: Path) -> None:
        """A full batch's acknowledgement needs more WAL than the disk has
        left, and the reserve went to earlier deliveries: the batch must
        still leave, or it blocks delivery and frees nothing."""
        box = Outbox(small_fs / "outbox.db", max_bytes=MAX_BYTES)
        box.put_many([reading(n) for n in range(BATCH)])
        leased = box.lease("measurement", BATCH)
        box.save_batch_body(leased[0].batch_key, b"[]")
        box.close()
        box = Outbox(small_fs / "outbox.db", max_bytes=MAX_BYTES)
        try:
            box.reserve_path.unlink()
            filler = fill_disk(small_fs)
            os.truncate(filler, filler.stat().st_size - SPARE_BYTES)
            box.ack([item.id for item in leased])
            stats = box.stats()
            body = box.batch_body(leased[0].batch_key)
        finally:
            box.close()

        assert len(leased) == BATCH
        assert stats.depth == 0
        assert stats.delivered == BATCH
        assert stats.evicted == 0
        assert body is None
