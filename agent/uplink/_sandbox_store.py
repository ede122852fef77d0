"""Storage and validation behind the sandbox integration API.

Plain synchronous SQLite: the sandbox runs each request's checks and writes
without awaiting in between, so one request's check-then-store is atomic
with respect to the others on the same event loop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

MAX_BATCH_ITEMS: Final = 500
MAX_PAGE_LIMIT: Final = 500
DEFAULT_PAGE_LIMIT: Final = 100
QUALITIES: Final = frozenset({"good", "uncertain", "bad"})
REQUEST_PRIORITIES: Final = frozenset({"low", "medium", "high", "urgent"})
READ_ONLY_REQUEST_FIELDS: Final = ("id", "status", "created_at")
REQUEST_FIELDS: Final = frozenset(
    {"asset_id", "priority", "title", "description", "source_event_id"}
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS assets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tag TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    quality TEXT NOT NULL,
    idempotency_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS measurements_asset ON measurements (asset_id, id);
CREATE TABLE IF NOT EXISTS series_last (
    asset_id TEXT NOT NULL,
    name TEXT NOT NULL,
    epoch_s REAL NOT NULL,
    PRIMARY KEY (asset_id, name)
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS maintenance_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id TEXT NOT NULL,
    priority TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    source_event_id TEXT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    sha256 TEXT PRIMARY KEY,
    revoked INTEGER NOT NULL DEFAULT 0
);
"""


class ApiProblem(Exception):
    """A request the sandbox rejects, with the contract's error fields."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredAnswer:
    """A status and JSON body, as first sent for an idempotency key."""

    status: int
    body: Mapping[str, Any]


def remote_asset_id(row_id: int) -> str:
    return f"ast-{row_id:06d}"


def _row_id(asset_id: object) -> int | None:
    if isinstance(asset_id, str) and asset_id.startswith("ast-"):
        digits = asset_id[4:]
        if digits.isdigit():
            return int(digits)
    return None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        prefix, _, number = text.partition(":")
        if prefix == "after" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiProblem(400, "invalid_cursor", "cursor is not valid", "cursor")


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_LIMIT:
        raise ApiProblem(
            400,
            "invalid_limit",
            f"limit must be an integer from 1 to {MAX_PAGE_LIMIT}, found {text!r}",
            "limit",
        )
    return int(text)


class SandboxStore:
    """The sandbox's assets, measurements, requests, keys and tokens."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    # --- tokens ----------------------------------------------------------

    def add_tokens(self, tokens: Iterable[str]) -> None:
        self._conn.executemany(
            "INSERT OR IGNORE INTO tokens (sha256) VALUES (?)",
            [(_sha256(t.encode()),) for t in tokens],
        )

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        self.add_tokens([token])
        return token

    def token_state(self, token: str) -> str:
        """Return ``ok``, ``revoked`` or ``invalid``."""
        row = self._conn.execute(
            "SELECT revoked FROM tokens WHERE sha256 = ?", (_sha256(token.encode()),)
        ).fetchone()
        if row is None:
            return "invalid"
        return "revoked" if row[0] else "ok"

    def revoke_token(self, token: str) -> None:
        self._conn.execute(
            "UPDATE tokens SET revoked = 1 WHERE sha256 = ?",
            (_sha256(token.encode()),),
        )

    # --- assets ----------------------------------------------------------

    def seed_assets(self, count: int) -> None:
        have = self._conn.execute("SELECT COUNT(*) FROM assets").fetchone()[0]
        self.add_assets(f"PUMP-{n:04d}" for n in range(have + 1, count + 1))

    def add_assets(self, tags: Iterable[str]) -> list[str]:
        tags = list(tags)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT OR IGNORE INTO assets (tag, name) VALUES (?, ?)",
                [(tag, f"Asset {tag}") for tag in tags],
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        ids = []
        for tag in tags:
            row = self._conn.execute(
                "SELECT id FROM assets WHERE tag = ?", (tag,)
            ).fetchone()
            ids.append(remote_asset_id(row[0]))
        return ids

    def set_asset_active(self, tag: str, active: bool) -> None:
        self._conn.execute(
            "UPDATE assets SET active = ? WHERE tag = ?", (int(active), tag)
        )

    def asset_page(
        self, after_id: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        rows = self._conn.execute(
            "SELECT id, tag, name, active FROM assets WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit + 1),
        ).fetchall()
        data = [
            {
                "id": remote_asset_id(row_id),
                "tag": tag,
                "name": name,
                "status": "active" if active else "inactive",
            }
            for row_id, tag, name, active in rows[:limit]
        ]
        last = rows[limit - 1][0] if len(rows) > limit else None
        return data, last

    def asset_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM assets").fetchone()[0])

    def _asset_active(self, asset_id: object) -> bool | None:
        row_id = _row_id(asset_id)
        if row_id is None:
            return None
        row = self._conn.execute(
            "SELECT active FROM assets WHERE id = ?", (row_id,)
        ).fetchone()
        return None if row is None else bool(row[0])

    # --- idempotency -----------------------------------------------------

    def replay(self, scope: str, key: str, body: bytes) -> StoredAnswer | None:
        """Return the first response stored for ``key``, or None for a new key.

        Raises:
            ApiProblem: 409, the key was used with another body.
        """
        row = self._conn.execute(
            "SELECT body_sha256, status, response FROM idempotency"
            " WHERE scope = ? AND key = ?",
            (scope, key),
        ).fetchone()
        if row is None:
            return None
        if row[0] != _sha256(body):
            raise ApiProblem(
                409,
                "idempotency_key_reused",
                "Idempotency-Key was already used with a different body",
                "Idempotency-Key",
            )
        return StoredAnswer(status=row[1], body=json.loads(row[2]))

    def _remember(
        self, scope: str, key: str, body: bytes, answer: StoredAnswer
    ) -> None:
        self._conn.execute(
            "INSERT INTO idempotency (scope, key, body_sha256, status, response)"
            " VALUES (?, ?, ?, ?, ?)",
            (scope, key, _sha256(body), answer.status, json.dumps(answer.body)),
        )

    # --- measurements ----------------------------------------------------

    def store_measurements(
        self, key: str, raw: bytes, document: object
    ) -> StoredAnswer:
        """Validate a batch, store the valid items and record the response."""
        items = _batch_items(document)
        rows: list[tuple[Any, ...]] = []
        rejected: list[dict[str, Any]] = []
        latest: dict[tuple[str, str], float] = {}

        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for index, item in enumerate(items):
                try:
                    row, epoch_s = self._check_measurement(item, index, latest)
                except ApiProblem as problem:
                    rejected.append({"index": index, "error": _item_error(problem)})
                    continue
                latest[(row[0], row[1])] = epoch_s
                rows.append((*row, key))
            self._conn.executemany(
                "INSERT INTO measurements (asset_id, name, value, unit,"
                " timestamp, quality, idempotency_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO series_last (asset_id, name, epoch_s)"
                " VALUES (?, ?, ?)",
                [(a, n, t) for (a, n), t in latest.items()],
            )
            status = 207 if rejected else 200
            answer = StoredAnswer(
                status=status, body={"accepted": len(rows), "rejected": rejected}
            )
            self._remember("measurements", key, raw, answer)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return answer

    def _check_measurement(
        self, item: object, index: int, latest: Mapping[tuple[str, str], float]
    ) -> tuple[tuple[Any, ...], float]:
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise ApiProblem(422, "invalid_item", "item is not an object", where)
        for name in ("asset_id", "name", "value", "unit", "timestamp", "quality"):
            if name not in item:
                raise ApiProblem(
                    422, "missing_field", f"{name} is required", f"{where}.{name}"
                )
        asset_id, name, value = item["asset_id"], item["name"], item["value"]
        active = self._asset_active(asset_id)
        if active is None:
            raise ApiProblem(
                422,
                "unknown_asset",
                f"asset_id {asset_id!r} does not exist",
                f"{where}.asset_id",
            )
        if not active:
            raise ApiProblem(
                422,
                "asset_inactive",
                f"asset {asset_id} is inactive",
                f"{where}.asset_id",
            )
        if not isinstance(name, str) or not name:
            raise ApiProblem(
                422, "invalid_name", "name must be a non-empty string", f"{where}.name"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiProblem(
                422,
                "invalid_value",
                f"value must be a number, found {value!r}",
                f"{where}.value",
            )
        if not math.isfinite(value):
            raise ApiProblem(
                422, "invalid_value", "value must be finite", f"{where}.value"
            )
        if not isinstance(item["unit"], str):
            raise ApiProblem(
                422, "invalid_unit", "unit must be a string", f"{where}.unit"
            )
        if item["quality"] not in QUALITIES:
            raise ApiProblem(
                422,
                "invalid_quality",
                f"quality must be one of good, uncertain, bad, found"
                f" {item['quality']!r}",
                f"{where}.quality",
            )
        epoch_s = _parse_timestamp(item["timestamp"], f"{where}.timestamp")
        previous = latest.get((asset_id, name))
        if previous is None:
            row = self._conn.execute(
                "SELECT epoch_s FROM series_last WHERE asset_id = ? AND name = ?",
                (asset_id, name),
            ).fetchone()
            previous = None if row is None else row[0]
        if previous is not None and epoch_s <= previous:
            raise ApiProblem(
                422,
                "timestamp_not_increasing",
                f"timestamp {item['timestamp']} is not after the last one stored"
                f" for asset {asset_id} and name {name!r}",
                f"{where}.timestamp",
            )
        row_values = (
            asset_id,
            name,
            float(value),
            item["unit"],
            item["timestamp"],
            item["quality"],
        )
        return row_values, epoch_s

    def measurement_page(
        self, asset_id: str | None, after_id: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        where, params = "id > ?", [after_id]
        if asset_id is not None:
            where += " AND asset_id = ?"
            params.append(asset_id)
        rows = self._conn.execute(
            "SELECT id, asset_id, name, value, unit, timestamp, quality"
            f" FROM measurements WHERE {where} ORDER BY id LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        data = [
            {
                "id": r[0],
                "asset_id": r[1],
                "name": r[2],
                "value": r[3],
                "unit": r[4],
                "timestamp": r[5],
                "quality": r[6],
            }
            for r in rows[:limit]
        ]
        return data, rows[limit - 1][0] if len(rows) > limit else None

    # --- maintenance requests -------------------------------------------

    def store_request(self, key: str, raw: bytes, document: object) -> StoredAnswer:
        """Validate and store one maintenance request."""
        fields = self._check_request(document)
        created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._conn.execute(
                "INSERT INTO maintenance_requests (asset_id, priority, title,"
                " description, source_event_id, status, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (*fields, created_at),
            )
            answer = StoredAnswer(
                status=201, body=self._request_row(cursor.lastrowid or 0)
            )
            self._remember("maintenance-requests", key, raw, answer)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return answer

    def _check_request(self, document: object) -> tuple[Any, ...]:
        if not isinstance(document, dict):
            raise ApiProblem(422, "invalid_body", "body must be a JSON object")
        for name in READ_ONLY_REQUEST_FIELDS:
            if name in document:
                raise ApiProblem(422, "read_only_field", f"{name} is read-only", name)
        for name in sorted(set(document) - REQUEST_FIELDS):
            raise ApiProblem(422, "unknown_field", f"{name} is not a field", name)
        for name in ("asset_id", "priority", "title"):
            if name not in document:
                raise ApiProblem(422, "missing_field", f"{name} is required", name)
        title = document["title"]
        if not isinstance(title, str) or not 1 <= len(title) <= 120:
            raise ApiProblem(
                422, "invalid_title", "title must be 1 to 120 characters", "title"
            )
        if document["priority"] not in REQUEST_PRIORITIES:
            raise ApiProblem(
                422,
                "invalid_priority",
                "priority must be one of low, medium, high, urgent, found"
                f" {document['priority']!r}",
                "priority",
            )
        active = self._asset_active(document["asset_id"])
        if not active:
            code = "unknown_asset" if active is None else "asset_inactive"
            raise ApiProblem(
                422, code, f"asset {document['asset_id']!r} is not active", "asset_id"
            )
        description = document.get("description", "")
        event = document.get("source_event_id")
        if not isinstance(description, str) or not isinstance(event, str | None):
            raise ApiProblem(
                422, "invalid_field", "description and source_event_id are strings"
            )
        return document["asset_id"], document["priority"], title, description, event

    def _request_row(self, row_id: int) -> dict[str, Any]:
        row = self._conn.execute(
            "SELECT id, asset_id, priority, title, description, source_event_id,"
            " status, created_at FROM maintenance_requests WHERE id = ?",
            (row_id,),
        ).fetchone()
        names = (
            "id",
            "asset_id",
            "priority",
            "title",
            "description",
            "source_event_id",
            "status",
            "created_at",
        )
        return dict(zip(names, row, strict=True))

    def request_page(
        self, after_id: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        ids = [
            r[0]
            for r in self._conn.execute(
                "SELECT id FROM maintenance_requests WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit + 1),
            )
        ]
        data = [self._request_row(i) for i in ids[:limit]]
        return data, ids[limit - 1] if len(ids) > limit else None


def _batch_items(document: object) -> Sequence[object]:
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise ApiProblem(
            422,
            "invalid_batch",
            f"body must be an object with items, a list of 1 to"
            f" {MAX_BATCH_ITEMS} measurements",
            "items",
        )
    return items


def _parse_timestamp(text: object, field: str) -> float:
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment.timestamp()
    raise ApiProblem(
        422,
        "invalid_timestamp",
        f"timestamp must be ISO 8601 with a time zone, found {text!r}",
        field,
    )


def _item_error(problem: ApiProblem) -> dict[str, Any]:
    return {"code": problem.code, "message": problem.message, "field": problem.field}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
