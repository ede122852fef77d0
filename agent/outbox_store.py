"""SQLite schema, opening and row operations of the outbox.

``agent.outbox`` contains the queue logic. This module contains what
touches the file directly: the schema, opening with an integrity check
that moves a corrupt file aside, deleting and evicting rows, and the
reserve file's sizing on the filesystem.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from agent.errors import OutboxError

logger = logging.getLogger("agent.outbox")

SCHEMA_VERSION: Final = 1

RESERVE_SUFFIX: Final = ".reserve"
RESERVE_MAX_BYTES: Final = 4 * 1024 * 1024
RESERVE_MIN_BYTES: Final = 64 * 1024
"""A reserve smaller than this is not created: the cap or the filesystem is
too small for one to help."""

SCHEMA: Final = """
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


def evict(conn: sqlite3.Connection, excess: int) -> tuple[int, int]:
    """Delete the lowest-priority, oldest idle items until ``excess``
    bytes are freed; items in a batch are in flight and stay.

    Returns:
        The number of items deleted and the bytes they were charged.
    """
    if excess <= 0:
        return 0, 0
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
    bump(conn, "evicted", len(doomed))
    return len(doomed), freed


def delete_items(
    conn: sqlite3.Connection, ids: Sequence[int], batch_ids: Iterable[int] = ()
) -> list[int]:
    """Delete items, dissolve the batches they leave partly filled and
    drop the emptied ones; return the sizes of the deleted items.

    ``batch_ids`` names more batches to settle the same way: those of
    items deleted earlier by ``delete_rows``.
    """
    sizes, touched = delete_rows(conn, ids)
    for batch_id in touched | set(batch_ids):
        conn.execute("UPDATE items SET batch_id = NULL WHERE batch_id = ?", (batch_id,))
        conn.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
    return sizes


def delete_rows(
    conn: sqlite3.Connection, ids: Sequence[int]
) -> tuple[list[int], set[int]]:
    """Delete items and leave their batches alone; return the sizes of the
    deleted items and the ids of the batches they were in."""
    sizes: list[int] = []
    batch_ids: set[int] = set()
    for chunk in chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT size, batch_id FROM items WHERE id IN ({marks})", chunk
        ).fetchall()
        sizes.extend(size for size, _ in rows)
        batch_ids.update(batch for _, batch in rows if batch is not None)
        conn.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
    return sizes, batch_ids


def is_disk_full(exc: BaseException) -> bool:
    """Return whether an error is SQLITE_FULL ("database or disk is full")
    or ENOSPC."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
            return True
        return "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem."""
    found = os.statvfs(directory)
    return found.f_bavail * found.f_frsize


def reserve_size(directory: Path, max_bytes: int) -> int:
    """Return the reserve size, ``min(4 MiB, max_bytes / 16, filesystem
    size / 8)`` in whole 4 KiB blocks, or 0 when that is below
    ``RESERVE_MIN_BYTES``."""
    try:
        found = os.statvfs(directory)
    except OSError:
        return 0
    total = found.f_blocks * found.f_frsize
    size = min(RESERVE_MAX_BYTES, max_bytes // 16, total // 8) // 4096 * 4096
    return size if size >= RESERVE_MIN_BYTES else 0


def write_zeros(path: Path, size: int) -> None:
    """Write ``size`` zero bytes and fsync them, so the blocks are
    allocated (a sparse file would free nothing when deleted)."""
    block = bytes(64 * 1024)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            left -= out.write(block[: min(left, len(block))])
        out.flush()
        os.fsync(out.fileno())


def bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (by, name))


def chunks(ids: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


# --- opening ------------------------------------------------------------


class _CorruptDatabaseError(Exception):
    """The file is not an SQLite database, or fails the integrity check."""


_CORRUPT_CODES: Final = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def open_checked(path: Path) -> sqlite3.Connection:
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
        # Takes effect only in a new file, before its first table: it lets
        # the outbox return free pages to the filesystem after a full disk.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA foreign_keys=OFF")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise _CorruptDatabaseError(
                f"schema version {version}, expected 0 or {SCHEMA_VERSION}"
            )
        conn.executescript(SCHEMA)
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
