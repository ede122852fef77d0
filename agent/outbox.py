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
and the WAL.

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
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from agent.errors import OutboxError

logger = logging.getLogger(__name__)

ROW_OVERHEAD_BYTES: Final = 64
"""Bytes charged per item on top of its JSON payload, for the byte cap."""

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    available_at REAL NOT NULL DEFAULT 0,
    batch_id INTEGER REFERENCES batches(id)
);
CREATE INDEX IF NOT EXISTS items_queue
    ON items (kind, priority DESC, id) WHERE batch_id IS NULL;
CREATE INDEX IF NOT EXISTS items_eviction
    ON items (priority, id) WHERE batch_id IS NULL;
CREATE INDEX IF NOT EXISTS items_batch ON items (batch_id);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    available_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    body BLOB
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    failed_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value)
    VALUES ('delivered', 0), ('evicted', 0), ('dead_lettered', 0);
"""


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
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = _open_checked(self.path)
        with self._transaction() as conn:
            # Leases of a previous process: its requests may have reached
            # the API, so the same batches go out again first, at once.
            conn.execute("UPDATE batches SET available_at = 0")
        row = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM items")
        self._bytes: int = row.fetchone()[0]

    def __repr__(self) -> str:
        return f"Outbox(path={str(self.path)!r}, max_bytes={self.max_bytes})"

    # --- writing ---------------------------------------------------------

    def put_many(self, items: Sequence[OutboxItem]) -> int:
        """Store ``items`` in one transaction, then evict down to the cap.

        Returns:
            The number of items stored (evictions are counted in ``stats``).

        Raises:
            OutboxError: the write failed (disk full, I/O error); nothing of
                this call is stored and the outbox stays usable.
        """
        now = self._clock()
        rows = []
        for item in items:
            text = json.dumps(item.payload, separators=(",", ":"))
            size = len(text.encode()) + ROW_OVERHEAD_BYTES
            rows.append((item.kind, int(item.priority), text, size, now))
        added = sum(row[3] for row in rows)

        with self._transaction(f"storing {len(rows)} items") as conn:
            conn.executemany(
                "INSERT INTO items (kind, priority, payload, size, created)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            freed = self._evict(conn, self._bytes + added - self.max_bytes)
        self._bytes += added - freed
        return len(rows)

    def _evict(self, conn: sqlite3.Connection, excess: int) -> int:
        """Delete the lowest-priority, oldest idle items until ``excess``
        bytes are freed; items in a batch are in flight and stay."""
        if excess <= 0:
            return 0
        freed = 0
        doomed: list[int] = []
        after = (-1, 0)
        while freed < excess:
            rows = conn.execute(
                "SELECT id, size, priority FROM items WHERE batch_id IS NULL"
                " AND (priority, id) > (?, ?) ORDER BY priority, id LIMIT 1000",
                (after[0], after[1]),
            ).fetchall()
            if not rows:
                break
            for item_id, size, priority in rows:
                if freed >= excess:
                    break
                doomed.append(item_id)
                freed += size
                after = (priority, item_id)
        conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in doomed])
        _bump(conn, "evicted", len(doomed))
        if doomed:
            logger.warning(
                "outbox.evicted count=%d freed_bytes=%d max_bytes=%d",
                len(doomed),
                freed,
                self.max_bytes,
            )
        return freed

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
        with self._transaction("leasing a batch") as conn:
            batch = conn.execute(
                "SELECT id, key, available_at, attempts FROM batches"
                " WHERE kind = ? ORDER BY id LIMIT 1",
                (kind,),
            ).fetchone()
            if batch is not None and batch[2] > now:
                return []
            if batch is None:
                batch = self._form_batch(conn, kind, limit, now)
                if batch is None:
                    return []
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
        with self._transaction("saving a batch body") as conn:
            conn.execute("UPDATE batches SET body = ? WHERE key = ?", (body, batch_key))

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
        """
        with self._transaction(f"acknowledging {len(ids)} items") as conn:
            freed = self._delete(conn, ids)
            _bump(conn, "delivered", len(freed))
        self._bytes -= sum(freed)

    def retry(self, ids: Sequence[int], delay_s: float) -> None:
        """Make items available again after ``delay_s`` seconds.

        Items in a batch keep their batch and key, because the API may have
        committed the request whose answer was lost.
        """
        due = self._clock() + delay_s
        with self._transaction(f"scheduling a retry of {len(ids)} items") as conn:
            for chunk in _chunks(ids):
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

    def dead_letter(self, id: int, reason: str) -> None:
        """Move an item the API rejected to the dead-letter table."""
        self.dead_letter_many([(id, reason)])

    def dead_letter_many(self, rejected: Sequence[tuple[int, str]]) -> None:
        """Move several rejected items, each with its reason, at once."""
        now = self._clock()
        with self._transaction(f"dead-lettering {len(rejected)} items") as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO dead_letters"
                " (id, kind, priority, payload, created, failed_at, reason)"
                " SELECT id, kind, priority, payload, created, ?, ?"
                " FROM items WHERE id = ?",
                [(now, reason, item_id) for item_id, reason in rejected],
            )
            freed = self._delete(conn, [item_id for item_id, _ in rejected])
            _bump(conn, "dead_lettered", len(freed))
        self._bytes -= sum(freed)

    def _delete(self, conn: sqlite3.Connection, ids: Sequence[int]) -> list[int]:
        """Delete items, dissolve the batches they leave partly filled and
        drop the emptied ones; return the sizes of the deleted items."""
        sizes: list[int] = []
        batch_ids: set[int] = set()
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT size, batch_id FROM items WHERE id IN ({marks})", chunk
            ).fetchall()
            sizes.extend(size for size, _ in rows)
            batch_ids.update(batch for _, batch in rows if batch is not None)
            conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
        for batch_id in batch_ids:
            conn.execute(
                "UPDATE items SET batch_id = NULL WHERE batch_id = ?", (batch_id,)
            )
            conn.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
        return sizes

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
        """Checkpoint the WAL and close the database."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                logger.warning("outbox.checkpoint_failed cause=%s", exc)
            self._conn.close()

    @contextmanager
    def _transaction(self, action: str = "writing") -> Iterator[sqlite3.Connection]:
        """Run one write transaction under the lock, translating SQLite
        errors into ``OutboxError`` after rolling back."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise OutboxError(
                    f"outbox {self.path}: {action} failed: {exc}; nothing of"
                    " this call was stored"
                ) from exc
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (by, name))


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


# --- opening ------------------------------------------------------------


class _CorruptDatabaseError(Exception):
    """The file is not an SQLite database, or fails the integrity check."""


_CORRUPT_CODES: Final = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def _open_checked(path: Path) -> sqlite3.Connection:
    """Open the database, moving a corrupt file aside for a fresh one.

    Only damage moves the file: a missing directory or a permission
    problem is an ``OutboxError``, because a fresh file cannot fix it.
    """
    try:
        return _open(path)
    except _CorruptDatabaseError as exc:
        aside = _move_aside(path)
        logger.error(
            "outbox.corrupt path=%s moved_to=%s cause=%s; starting with an"
            " empty outbox",
            path,
            aside,
            exc,
        )
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open outbox database {path}: {exc}") from exc
    try:
        return _open(path)
    except (sqlite3.Error, _CorruptDatabaseError) as exc:
        raise OutboxError(f"cannot create outbox database {path}: {exc}") from exc


def _open(path: Path) -> sqlite3.Connection:
    """Open, configure and check the database; create the schema.

    Raises:
        _CorruptDatabaseError: the file is not a database or is damaged.
        sqlite3.Error: any other failure to open or configure it.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _check_integrity(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA foreign_keys=OFF")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise _CorruptDatabaseError(
                f"schema version {version}, expected 0 or {SCHEMA_VERSION}"
            )
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_integrity(conn: sqlite3.Connection) -> None:
    try:
        found = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if (exc.sqlite_errorcode & 0xFF) in _CORRUPT_CODES:
            raise _CorruptDatabaseError(str(exc)) from exc
        raise
    if found != "ok":
        raise _CorruptDatabaseError(f"quick_check returned {found!r}")


def _move_aside(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside
