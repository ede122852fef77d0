"""The durable outbox between the pipeline and the integration API.

Items wait in an SQLite database in WAL mode until the uplink has delivered
them. Delivery leases a *batch*: a fixed set of items with an idempotency
key, both stored in the database. Until the batch is acknowledged, every
lease of it (after a retry delay, an expired lease or a restart) returns
the same items with the same key, so a request the API committed but never
answered is replayed, never stored twice.

Durability: every write is a transaction with ``synchronous=FULL``, so a
committed item survives a process crash and a power loss (given a disk that
honours fsync). The byte cap counts payload bytes plus a fixed per-row
overhead, not the size of the file, which is larger by SQLite's own pages
and the WAL. ``PRAGMA max_page_count`` (``PAGE_CAP_FACTOR`` times the cap)
stops the file from growing without bound when that estimate is wrong.

A full disk: leasing, acknowledging and retrying are writes too, so on a
full filesystem the uplink could deliver nothing and free no space. Three
measures keep delivery going without help from outside:

- A reserve file (``<database>.reserve``, zeros written and fsynced, never
  sparse) holds space for deliveries. It is created at open when there is
  room (a WARNING when there is not) and released by the first delivery
  write that fails with SQLITE_FULL or ENOSPC.
- The WAL is checkpointed every ``reserve / 4`` bytes instead of SQLite's
  4 MB, so the pages a checkpoint must still add to the database file stay
  well below the reserve. After a failed write the outbox checkpoints first
  (a checkpointed WAL is reused from its start without growing) and
  retries. Intake shortens the reserve by just the pages that checkpoint
  needs. A delivery that still fails releases the whole reserve and
  retries once more.
- While the disk is full, intake must not take what delivery frees: each
  ``put_many`` first evicts idle items of the lowest priority, oldest
  first, about twice the bytes it adds, and may not grow the database
  (``max_page_count`` is held at the current page count). Those evictions
  are counted like the byte cap's. When evicting every idle item does not
  make room, ``put_many`` raises ``OutboxError`` and stores nothing.
- Acknowledging a full batch deletes hundreds of rows and their index
  entries in one transaction, which can need more WAL than the reserve
  left. When it does, the batch is acknowledged ``ACK_STEP_ITEMS`` items
  per transaction, checkpointing in between; its key and body stay until
  the last step, so a step that fails leaves a batch that a later lease
  replays unchanged.

The outbox leaves the full-disk state after a successful write, at most
every ``RECOVERY_INTERVAL_S``, once the free pages of the database plus the
free space of the filesystem exceed twice the reserve: it returns the free
pages to the filesystem (``PRAGMA incremental_vacuum``, for databases
created with ``auto_vacuum=INCREMENTAL``), truncates the WAL and writes the
reserve again.

Threads: every public method takes one lock around one connection, so the
outbox may be called from the event loop thread and from worker threads
(``asyncio.to_thread``) alike. Calls are serialised, and each one is a short
transaction. One process owns the file: leases found at start-up belong to
a previous process that ended, so they are released at once.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from agent.errors import OutboxError
from agent.outbox_store import (
    RESERVE_MIN_BYTES,
    RESERVE_SUFFIX,
    bump,
    chunks,
    delete_items,
    delete_rows,
    evict,
    free_bytes,
    is_disk_full,
    open_checked,
    reserve_size,
    write_zeros,
)

logger = logging.getLogger(__name__)

ROW_OVERHEAD_BYTES: Final = 64
"""Bytes charged per item on top of its JSON payload, for the byte cap."""

RECOVERY_INTERVAL_S: Final = 30.0
"""Minimum seconds between checks whether the disk has room again."""

PAGE_CAP_FACTOR: Final = 4
"""The database may grow to this many times ``max_bytes`` (plus
``PAGE_CAP_SLACK_PAGES``): SQLite's pages, indexes and dead letters take
more than the capped payload bytes."""

PAGE_CAP_SLACK_PAGES: Final = 1024

FULL_DISK_EVICTION_FACTOR: Final = 2
"""On a full disk, ``put_many`` first evicts this many times the bytes it
adds, because a row takes more space in its pages and indexes than its
capped size."""

ACK_STEP_ITEMS: Final = 25
"""On a full disk, a batch is acknowledged this many items per
transaction when acknowledging it whole does not fit."""

_MAX_ROOM_ATTEMPTS: Final = 6

_T = TypeVar("_T")


class Priority(enum.IntEnum):
    """Delivery priority: higher is leased first and evicted last."""

    SUMMARY = 0
    INDICATOR = 1
    ALARM = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxItem:
    """An item to store: ``kind`` is ``measurement`` or
    ``maintenance_request`` and ``payload`` must be JSON-serialisable."""

    kind: str
    priority: Priority
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class LeasedItem:
    """A stored item handed out for delivery, with its batch's key."""

    id: int
    kind: str
    priority: Priority
    payload: Mapping[str, Any]
    created: float
    batch_key: str
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxStats:
    """Depth and counters; ``bytes`` is the capped size, not the file size."""

    depth: int
    bytes: int
    max_bytes: int
    oldest_age_s: float | None
    delivered: int
    evicted: int
    dead_lettered: int
    depth_by_kind: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An item the API rejected, kept with the reason."""

    id: int
    kind: str
    payload: Mapping[str, Any]
    reason: str


class Outbox:
    """A durable, byte-capped, prioritised queue in one SQLite file.

    Args:
        path: the database file; its directory must exist.
        max_bytes: the cap on stored payload bytes (see ``ROW_OVERHEAD_BYTES``).
        clock: seconds since the epoch; tests pass an advanceable clock.

    Raises:
        OutboxError: the file cannot be opened or created.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0:
            raise OutboxError(f"outbox max_bytes must be positive, found {max_bytes!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.reserve_path = self.path.with_name(self.path.name + RESERVE_SUFFIX)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = open_checked(self.path)
        self._page_size: int = self._pragma("page_size")
        self._page_cap = PAGE_CAP_FACTOR * max_bytes // self._page_size
        self._page_cap += PAGE_CAP_SLACK_PAGES
        self._page_limit = 0
        self._set_page_limit(self._page_cap)
        self._disk_full = False
        self._next_recovery = 0.0
        self.reserve_bytes = reserve_size(self.path.parent, max_bytes)
        if self.reserve_bytes:
            pages = max(16, self.reserve_bytes // 4 // self._page_size)
            self._conn.execute(f"PRAGMA wal_autocheckpoint={min(pages, 1000)}")
            self._create_reserve(at_open=True)

        def release_leases(conn: sqlite3.Connection) -> None:
            # Leases of a previous process: its requests may have reached
            # the API, so the same batches go out again first, at once.
            conn.execute("UPDATE batches SET available_at = 0")

        self._write("releasing old leases", release_leases)
        row = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM items")
        self._bytes: int = row.fetchone()[0]

    def __repr__(self) -> str:
        return f"Outbox(path={str(self.path)!r}, max_bytes={self.max_bytes})"

    @property
    def disk_full(self) -> bool:
        """True from a write that found the disk full until space is back."""
        return self._disk_full

    # --- writing ---------------------------------------------------------

    def put_many(self, items: Sequence[OutboxItem]) -> int:
        """Store ``items`` in one transaction, then evict down to the cap.

        On a full disk, idle items of the lowest priority, oldest first,
        are evicted to make room (see the module docstring).

        Returns:
            The number of items stored (evictions are counted in ``stats``).

        Raises:
            OutboxError: the write failed (disk full with nothing left to
                evict, I/O error); nothing of this call is stored and the
                outbox stays usable.
        """
        now = self._clock()
        rows = []
        for item in items:
            text = json.dumps(item.payload, separators=(",", ":"))
            size = len(text.encode()) + ROW_OVERHEAD_BYTES
            rows.append((item.kind, int(item.priority), text, size, now))
        added = sum(row[3] for row in rows)

        def store(conn: sqlite3.Connection) -> tuple[int, int]:
            conn.executemany(
                "INSERT INTO items (kind, priority, payload, size, created)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            return evict(conn, self._bytes + added - self.max_bytes)

        def make_room(conn: sqlite3.Connection, attempt: int) -> tuple[int, int]:
            target = max(added, self._page_size) * FULL_DISK_EVICTION_FACTOR
            return evict(conn, target << (attempt - 1))

        evicted, freed = self._write(
            f"storing {len(rows)} items", store, make_room=make_room
        )
        self._bytes += added - freed
        if evicted:
            logger.warning(
                "outbox.evicted count=%d freed_bytes=%d max_bytes=%d disk_full=%s",
                evicted,
                freed,
                self.max_bytes,
                self._disk_full,
            )
        return len(rows)

    # --- delivery --------------------------------------------------------

    def lease(self, kind: str, limit: int, lease_s: float = 60) -> list[LeasedItem]:
        """Hand out the next batch of ``kind`` for ``lease_s`` seconds.

        A batch that exists already (its lease expired or its retry is due)
        is handed out again whole, with its key, even if it holds more than
        ``limit`` items. While such a batch waits for its retry, no new
        batch of that kind is formed, so items go out in order. Otherwise a
        new batch takes up to ``limit`` items, highest priority first, then
        oldest first.

        Returns:
            The batch's items in id order, or an empty list.
        """
        if limit < 1:
            raise ValueError(f"lease limit must be at least 1, found {limit!r}")
        now = self._clock()

        def take(conn: sqlite3.Connection) -> tuple[str, int, list[Any]] | None:
            batch = conn.execute(
                "SELECT id, key, available_at, attempts FROM batches"
                " WHERE kind = ? ORDER BY id LIMIT 1",
                (kind,),
            ).fetchone()
            if batch is not None and batch[2] > now:
                return None
            if batch is None:
                batch = self._form_batch(conn, kind, limit, now)
                if batch is None:
                    return None
            batch_id, key, _, attempts = batch
            conn.execute(
                "UPDATE batches SET available_at = ? WHERE id = ?",
                (now + lease_s, batch_id),
            )
            rows = conn.execute(
                "SELECT id, priority, payload, created FROM items"
                " WHERE batch_id = ? ORDER BY id",
                (batch_id,),
            ).fetchall()
            return key, attempts, rows

        batch = self._write("leasing a batch", take)
        if batch is None:
            return []
        key, attempts, rows = batch
        return [
            LeasedItem(
                id=item_id,
                kind=kind,
                priority=Priority(priority),
                payload=json.loads(payload),
                created=created,
                batch_key=key,
                attempts=attempts,
            )
            for item_id, priority, payload, created in rows
        ]

    def _form_batch(
        self, conn: sqlite3.Connection, kind: str, limit: int, now: float
    ) -> tuple[int, str, float, int] | None:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM items WHERE kind = ? AND batch_id IS NULL"
                " AND available_at <= ? ORDER BY priority DESC, id LIMIT ?",
                (kind, now, limit),
            )
        ]
        if not ids:
            return None
        key = str(uuid.uuid4())
        cursor = conn.execute(
            "INSERT INTO batches (kind, key, created, available_at)"
            " VALUES (?, ?, ?, ?)",
            (kind, key, now, now),
        )
        batch_id = cursor.lastrowid
        assert batch_id is not None
        conn.executemany(
            "UPDATE items SET batch_id = ? WHERE id = ?",
            [(batch_id, i) for i in ids],
        )
        return batch_id, key, now, 0

    def save_batch_body(self, batch_key: str, body: bytes) -> None:
        """Store the request body sent for a batch, so a retry of the batch
        sends the same bytes even if the data behind it (an asset map)
        changed meanwhile."""

        def save(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE batches SET body = ? WHERE key = ?", (body, batch_key))

        self._write("saving a batch body", save)

    def batch_body(self, batch_key: str) -> bytes | None:
        """Return the body saved for a batch, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT body FROM batches WHERE key = ?", (batch_key,)
            ).fetchone()
        return None if row is None else row[0]

    def ack(self, ids: Sequence[int]) -> None:
        """Delete delivered items and count them as delivered.

        When part of a batch remains afterwards, the batch is dissolved and
        its remaining items go back to the queue to form a new batch with
        a new key, because the old key's request body no longer matches.
        On a full disk, a batch too large to delete in one transaction is
        deleted in steps (see the module docstring).
        """

        def acknowledge(conn: sqlite3.Connection) -> list[int]:
            freed = delete_items(conn, ids)
            bump(conn, "delivered", len(freed))
            return freed

        try:
            freed = self._write(f"acknowledging {len(ids)} items", acknowledge)
        except OutboxError as exc:
            if len(ids) <= ACK_STEP_ITEMS or not is_disk_full(exc.__cause__):
                raise
            self._ack_in_steps(ids)
            return
        self._bytes -= sum(freed)

    def _ack_in_steps(self, ids: Sequence[int]) -> None:
        """Acknowledge on a full disk, ``ACK_STEP_ITEMS`` per transaction.

        Deleting a whole batch at once can need more WAL than the disk
        has left, and a batch that is never acknowledged frees nothing.
        The batch and its key stay until its last items go: should a step
        fail, a later lease replays the same key and body, and the API
        answers from what it stored.
        """
        batch_ids: set[int] = set()
        steps = list(chunks(ids, ACK_STEP_ITEMS))
        for number, step in enumerate(steps, start=1):
            last = number == len(steps)

            def acknowledge(
                conn: sqlite3.Connection, step: list[int] = step, last: bool = last
            ) -> list[int]:
                if last:
                    freed = delete_items(conn, step, batch_ids)
                else:
                    freed, touched = delete_rows(conn, step)
                    batch_ids.update(touched)
                bump(conn, "delivered", len(freed))
                return freed

            freed = self._write(
                f"acknowledging {len(step)} of {len(ids)} items on a full disk",
                acknowledge,
            )
            self._bytes -= sum(freed)

    def retry(self, ids: Sequence[int], delay_s: float) -> None:
        """Make items available again after ``delay_s`` seconds.

        Items in a batch keep their batch and key, because the API may have
        committed the request whose answer was lost.
        """
        due = self._clock() + delay_s

        def postpone(conn: sqlite3.Connection) -> None:
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    "UPDATE batches SET available_at = ?, attempts = attempts + 1"
                    " WHERE id IN (SELECT batch_id FROM items"
                    f" WHERE id IN ({marks}))",
                    (due, *chunk),
                )
                conn.execute(
                    "UPDATE items SET available_at = ?"
                    f" WHERE id IN ({marks}) AND batch_id IS NULL",
                    (due, *chunk),
                )

        self._write(f"scheduling a retry of {len(ids)} items", postpone)

    def dead_letter(self, id: int, reason: str) -> None:
        """Move an item the API rejected to the dead-letter table."""
        self.dead_letter_many([(id, reason)])

    def dead_letter_many(self, rejected: Sequence[tuple[int, str]]) -> None:
        """Move several rejected items, each with its reason, at once."""
        now = self._clock()

        def move(conn: sqlite3.Connection) -> list[int]:
            conn.executemany(
                "INSERT OR REPLACE INTO dead_letters"
                " (id, kind, priority, payload, created, failed_at, reason)"
                " SELECT id, kind, priority, payload, created, ?, ?"
                " FROM items WHERE id = ?",
                [(now, reason, item_id) for item_id, reason in rejected],
            )
            freed = delete_items(conn, [item_id for item_id, _ in rejected])
            bump(conn, "dead_lettered", len(freed))
            return freed

        freed = self._write(f"dead-lettering {len(rejected)} items", move)
        self._bytes -= sum(freed)

    # --- inspection ------------------------------------------------------

    def stats(self) -> OutboxStats:
        """Return the depth, byte use, age of the oldest item and counters."""
        with self._lock:
            conn = self._conn
            by_kind = dict(
                conn.execute("SELECT kind, COUNT(*) FROM items GROUP BY kind")
            )
            oldest = conn.execute("SELECT MIN(created) FROM items").fetchone()[0]
            counters = dict(conn.execute("SELECT name, value FROM counters"))
        return OutboxStats(
            depth=sum(by_kind.values()),
            bytes=self._bytes,
            max_bytes=self.max_bytes,
            oldest_age_s=None if oldest is None else self._clock() - oldest,
            delivered=counters["delivered"],
            evicted=counters["evicted"],
            dead_lettered=counters["dead_lettered"],
            depth_by_kind=by_kind,
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return the most recent dead letters, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, kind, payload, reason FROM dead_letters"
                " ORDER BY failed_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            DeadLetter(id=i, kind=k, payload=json.loads(p), reason=r)
            for i, k, p, r in rows
        ]

    def close(self) -> None:
        """Checkpoint the WAL and close the database; the reserve stays."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                logger.warning("outbox.checkpoint_failed cause=%s", exc)
            self._conn.close()

    # --- transactions and the full disk ------------------------------------

    def _write(
        self,
        action: str,
        work: Callable[[sqlite3.Connection], _T],
        *,
        make_room: Callable[[sqlite3.Connection, int], tuple[int, int]] | None = None,
    ) -> _T:
        """Run ``work`` as one write transaction under the lock.

        ``make_room`` marks intake: on a full disk it runs before ``work``
        in the same transaction, with attempt numbers 1, 2, ... Without it
        the write is a delivery, which may release the reserve.

        Raises:
            OutboxError: the transaction failed and was rolled back.
        """
        with self._lock:
            intake = make_room is not None
            try:
                if intake and self._disk_full:
                    result = self._write_room(action, work, make_room)
                else:
                    self._set_page_limit(self._page_cap)
                    result = self._attempt(work)
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise self._failure(action, exc) from exc
                self._enter_disk_full(exc)
                if make_room is not None:
                    result = self._write_room(action, work, make_room)
                else:
                    result = self._write_delivery(action, work)
            self._after_write()
            return result

    def _attempt(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return result

    def _write_delivery(
        self, action: str, work: Callable[[sqlite3.Connection], _T]
    ) -> _T:
        """Retry a delivery write after a checkpoint, then after releasing
        the reserve."""
        self._checkpoint()
        try:
            return self._attempt(work)
        except sqlite3.Error as exc:
            if not is_disk_full(exc) or not self._release_reserve():
                raise self._failure(action, exc) from exc
        self._checkpoint()
        try:
            return self._attempt(work)
        except sqlite3.Error as exc:
            raise self._failure(action, exc) from exc

    def _write_room(
        self,
        action: str,
        work: Callable[[sqlite3.Connection], _T],
        make_room: Callable[[sqlite3.Connection, int], tuple[int, int]],
    ) -> _T:
        """Run an intake write on a full disk: evict first, never grow the
        database, and evict more on each attempt that does not fit."""
        if not self._checkpoint():
            self._trim_reserve()
            self._checkpoint()
        idle = self._conn.execute(
            "SELECT COUNT(*) FROM items WHERE batch_id IS NULL"
        ).fetchone()[0]
        cause: sqlite3.Error | None = None
        for attempt in range(1, _MAX_ROOM_ATTEMPTS + 1):
            self._set_page_limit(self._pragma("page_count"))
            evicted = 0

            def evict_then_work(conn: sqlite3.Connection, attempt: int = attempt) -> _T:
                nonlocal evicted
                evicted = make_room(conn, attempt)[0]
                return work(conn)

            try:
                return self._attempt(evict_then_work)
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise self._failure(action, exc) from exc
                cause = exc
            if evicted >= idle:
                break
        raise OutboxError(
            f"outbox {self.path}: {action} failed: {cause}; the disk is full"
            f" and evicting up to {evicted} of {idle} queued items did not make"
            " room; nothing of this call was stored"
        ) from cause

    def _failure(self, action: str, exc: sqlite3.Error) -> OutboxError:
        return OutboxError(
            f"outbox {self.path}: {action} failed: {exc}; nothing of"
            " this call was stored"
        )

    def _enter_disk_full(self, exc: sqlite3.Error) -> None:
        if not self._disk_full:
            logger.warning(
                "outbox.disk_full path=%s cause=%s; intake now evicts to make"
                " room and deliveries may use the reserve",
                self.path,
                exc,
            )
        self._disk_full = True
        self._next_recovery = self._clock() + RECOVERY_INTERVAL_S

    def _after_write(self) -> None:
        """Keep the WAL from growing while the disk is full, and check,
        at most every ``RECOVERY_INTERVAL_S``, whether space is back."""
        if self._disk_full:
            self._checkpoint()
        reserve_missing = self.reserve_bytes > 0 and not self._reserve_whole()
        if not (self._disk_full or reserve_missing):
            return
        now = self._clock()
        if now < self._next_recovery:
            return
        self._next_recovery = now + RECOVERY_INTERVAL_S
        try:
            self._recover()
        except (OSError, sqlite3.Error) as exc:
            logger.warning("outbox.recovery_failed path=%s cause=%s", self.path, exc)

    def _recover(self) -> None:
        """Return free pages to the filesystem and write the reserve again
        when the filesystem then has room for twice the reserve."""
        needed = 2 * max(self.reserve_bytes, RESERVE_MIN_BYTES)
        free_pages = self._pragma("freelist_count") * self._page_size
        if free_bytes(self.path.parent) + free_pages < needed:
            return
        if free_pages:
            self._conn.execute("PRAGMA incremental_vacuum").fetchall()
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        if free_bytes(self.path.parent) < needed:
            return
        if self.reserve_bytes and not self._create_reserve(at_open=False):
            return
        if self._disk_full:
            self._disk_full = False
            self._set_page_limit(self._page_cap)
            logger.warning(
                "outbox.disk_space_back path=%s free_bytes=%d reserve_bytes=%d",
                self.path,
                free_bytes(self.path.parent),
                self.reserve_bytes,
            )

    def _checkpoint(self) -> bool:
        """Copy the WAL into the database so the next write reuses the WAL
        from its start instead of growing it; False when that failed."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            logger.debug("outbox.checkpoint_failed cause=%s", exc)
            return False
        return True

    def _set_page_limit(self, pages: int) -> None:
        if pages != self._page_limit:
            self._conn.execute(f"PRAGMA max_page_count={int(pages)}").fetchall()
            self._page_limit = pages

    def _pragma(self, name: str) -> int:
        return int(self._conn.execute(f"PRAGMA {name}").fetchone()[0])

    def _create_reserve(self, *, at_open: bool) -> bool:
        """Write the reserve file with real zeros; False when there is no
        room for it."""
        path = self.reserve_path
        try:
            if path.exists() and path.stat().st_size == self.reserve_bytes:
                return True
            write_zeros(path, self.reserve_bytes)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if at_open:
                logger.warning(
                    "outbox.reserve_unavailable path=%s size_bytes=%d cause=%s;"
                    " on a full disk deliveries will have only the free pages"
                    " of the database",
                    path,
                    self.reserve_bytes,
                    exc,
                )
            return False
        logger.info(
            "outbox.reserve_created path=%s size_bytes=%d", path, self.reserve_bytes
        )
        return True

    def _reserve_whole(self) -> bool:
        try:
            return self.reserve_path.stat().st_size == self.reserve_bytes
        except FileNotFoundError:
            return False

    def _trim_reserve(self) -> None:
        """Shorten the reserve by the pages a checkpoint must add to the
        database file, so intake can go on while the rest stays for
        delivery. The WAL autocheckpoint keeps that under a quarter of the
        reserve; later intake never grows the database again."""
        file_pages = self.path.stat().st_size // self._page_size
        missing = self._pragma("page_count") - file_pages + 4
        try:
            size = self.reserve_path.stat().st_size
            trimmed = max(0, size - missing * self._page_size)
            os.truncate(self.reserve_path, trimmed)
        except OSError as exc:
            logger.debug("outbox.reserve_trim_failed cause=%s", exc)
            return
        logger.warning(
            "outbox.reserve_trimmed path=%s size_bytes=%d; the disk is full and"
            " intake needs %d pages for a checkpoint",
            self.reserve_path,
            trimmed,
            missing,
        )

    def _release_reserve(self) -> bool:
        """Delete the reserve; False when there was none to release."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.error(
                "outbox.reserve_release_failed path=%s cause=%s", self.reserve_path, exc
            )
            return False
        logger.warning(
            "outbox.reserve_released path=%s size_bytes=%d; the disk is full",
            self.reserve_path,
            self.reserve_bytes,
        )
        return True
