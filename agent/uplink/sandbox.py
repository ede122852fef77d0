"""A local server that speaks the integration API, with switchable faults.

It serves the demo and the tests on loopback, stores everything in SQLite
and implements the contract the uplink client relies on: bearer tokens that
can be revoked, cursor pagination of assets, idempotent measurement batches
with per-item validation, maintenance requests, and the error body
``{"error": {"code", "type", "message", "field", "request_id"}}``.

Faults apply to the API paths (never to ``/_sandbox``), in the order they
were scheduled: status bursts (500, 503, or 429 with a ``Retry-After`` of
seconds, an HTTP date or any text), dropped connections, "commit then
drop" (the request is stored, then the connection closes without a
response) and a fixed delay before each response.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Final, Literal

from aiohttp import web

from agent.uplink._sandbox_store import (
    ApiProblem,
    SandboxStore,
    StoredAnswer,
    decode_cursor,
    encode_cursor,
    parse_limit,
)

logger = logging.getLogger(__name__)

API: Final = "/api/v1"
ADMIN: Final = "/_sandbox"
TotalCount = Literal["always", "first_page", "never"]
FaultKind = Literal["status", "drop", "commit_then_drop"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REQUEST_ID: Final = web.RequestKey("request_id", str)
_TOKEN: Final = web.RequestKey("token", str)

_ERROR_TYPES: Final = {
    400: "invalid_request",
    401: "authentication",
    404: "not_found",
    409: "conflict",
    422: "validation",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}


@dataclass(slots=True)
class _Fault:
    kind: FaultKind
    remaining: int
    path: str | None
    status: int = 503
    retry_after: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One request the sandbox received; ``status`` is None when dropped."""

    method: str
    path: str
    status: int | None
    token_state: str
    idempotency_key: str | None = None
    at_s: float = field(default_factory=time.monotonic)


class _Dropped(Exception):
    """An injected fault closes the connection without a response."""


class SandboxApi:
    """The sandbox integration API.

    Args:
        db_path: the SQLite file that keeps its state across restarts.
        tokens: bearer tokens that are valid from the start.
        seed_assets: assets ``PUMP-0001`` … created when absent.
        seed_tags: further asset tags to create, such as the demo's.
        total_count: when ``total_count`` in asset pages is a number.
    """

    def __init__(
        self,
        db_path: Path,
        *,
        tokens: Iterable[str] | str,
        seed_assets: int = 1200,
        seed_tags: Iterable[str] = (),
        total_count: TotalCount = "first_page",
    ) -> None:
        self.store = SandboxStore(db_path)
        self.store.add_tokens([tokens] if isinstance(tokens, str) else tokens)
        self.store.seed_assets(seed_assets)
        self.store.add_assets(seed_tags)
        self.total_count = total_count
        self.requests: list[RequestRecord] = []
        self.delay_s = 0.0
        self._delay_path: str | None = None
        self._faults: list[_Fault] = []
        self._request_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        return f"SandboxApi(port={self._port!r})"

    # --- lifecycle -------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host``:``port``; port 0 picks a free port."""
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        logger.info("sandbox.started host=%s port=%d", host, self._port)

    @property
    def port(self) -> int:
        """The port it listens on, once started."""
        if self._port is None:
            raise RuntimeError("the sandbox API is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop listening and close the database."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.store.close()

    # --- control for tests and the admin endpoint ------------------------

    def add_assets(self, tags: Iterable[str]) -> list[str]:
        """Create assets with these tags (existing ones are kept); return
        their remote ids."""
        return self.store.add_assets(tags)

    def issue_token(self) -> str:
        """Create a new valid token and return it."""
        return self.store.issue_token()

    def revoke_token(self, token: str) -> None:
        self.store.revoke_token(token)

    def fail_next(
        self, count: int, status: int = 503, *, path: str | None = None
    ) -> None:
        """Respond to the next ``count`` matching requests with ``status``."""
        self._faults.append(_Fault("status", count, path, status=status))

    def rate_limit_next(
        self,
        count: int,
        retry_after: float | datetime | str,
        *,
        path: str | None = None,
    ) -> None:
        """Respond 429 with ``Retry-After`` in seconds (a number, rounded up),
        as an HTTP date (a timezone-aware datetime) or as given (a string,
        which may be invalid on purpose).

        Raises:
            ValueError: the string contains a control character, which could
                end the header.
        """
        if isinstance(retry_after, str):
            if any(ord(char) < 0x20 or char == "\x7f" for char in retry_after):
                raise ValueError(
                    "Retry-After must not contain control characters, found "
                    f"{retry_after!r}"
                )
            header = retry_after
        elif isinstance(retry_after, datetime):
            header = format_datetime(retry_after, usegmt=True)
        else:
            header = str(math.ceil(retry_after))
        self._faults.append(
            _Fault("status", count, path, status=429, retry_after=header)
        )

    def drop_next(self, count: int, *, path: str | None = None) -> None:
        """Close the connection of the next requests without handling them."""
        self._faults.append(_Fault("drop", count, path))

    def commit_then_drop_next(self, count: int, *, path: str | None = None) -> None:
        """Handle and store the next requests, then close without answering."""
        self._faults.append(_Fault("commit_then_drop", count, path))

    def set_delay(self, delay_s: float, *, path: str | None = None) -> None:
        """Wait ``delay_s`` before handling each matching request."""
        self.delay_s = delay_s
        self._delay_path = path

    def clear_faults(self) -> None:
        self._faults.clear()
        self.delay_s = 0.0

    def count_requests(self, path: str | None = None, method: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (path is None or r.path.startswith(path))
            and (method is None or r.method == method)
        )

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and (
                fault.path is None or path.startswith(fault.path)
            ):
                fault.remaining -= 1
                return fault
        return None

    # --- request pipeline ------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        request_id = f"req-{next(self._request_ids):06d}"
        request[_REQUEST_ID] = request_id
        token_state = self._authorise(request)
        status: int | None = None
        try:
            if token_state != "ok":
                code = "token_revoked" if token_state == "revoked" else "invalid_token"
                raise ApiProblem(401, code, f"bearer token is {token_state}")
            response = await self._apply_faults(request, handler)
            status = response.status
            return response
        except ApiProblem as problem:
            status = problem.status
            return self._error(problem, request_id)
        except _Dropped:
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError from None
        finally:
            self.requests.append(
                RequestRecord(
                    method=request.method,
                    path=request.path,
                    status=status,
                    token_state=token_state,
                    idempotency_key=request.headers.get("Idempotency-Key"),
                )
            )

    def _authorise(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "missing"
        state = self.store.token_state(token.strip())
        request[_TOKEN] = token.strip()
        return state

    async def _apply_faults(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if request.path.startswith(ADMIN):
            return await handler(request)
        if self.delay_s and (
            self._delay_path is None or request.path.startswith(self._delay_path)
        ):
            await asyncio.sleep(self.delay_s)
        fault = self._take_fault(request.path)
        if fault is None:
            return await handler(request)
        if fault.kind == "drop":
            raise _Dropped
        if fault.kind == "commit_then_drop":
            await handler(request)
            raise _Dropped
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        problem = ApiProblem(fault.status, "injected_fault", "injected fault")
        return self._error(problem, request[_REQUEST_ID], headers)

    def _error(
        self,
        problem: ApiProblem,
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = {
            "error": {
                "code": problem.code,
                "type": _ERROR_TYPES.get(problem.status, "error"),
                "message": problem.message,
                "field": problem.field,
                "request_id": request_id,
            }
        }
        return web.json_response(body, status=problem.status, headers=headers)

    # --- routes ----------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{API}/assets", self._list_assets),
            web.post(f"{API}/measurements", self._post_measurements),
            web.get(f"{API}/measurements", self._list_measurements),
            web.post(f"{API}/maintenance-requests", self._post_request),
            web.get(f"{API}/maintenance-requests", self._list_requests),
            web.get(f"{API}/connection", self._connection),
            web.post(f"{API}/connection/disconnect", self._disconnect),
            web.post(f"{API}/connection/tokens", self._new_token),
            web.post(f"{ADMIN}/faults", self._admin_faults),
            web.post(f"{ADMIN}/assets", self._admin_assets),
        ]

    async def _list_assets(self, request: web.Request) -> web.Response:
        limit = parse_limit(request.query.get("limit"))
        cursor = request.query.get("cursor")
        after = decode_cursor(cursor) if cursor else 0
        data, last = self.store.asset_page(after, limit)
        count: int | None = self.store.asset_count()
        if self.total_count == "never" or (self.total_count == "first_page" and cursor):
            count = None
        next_cursor = encode_cursor(last) if last is not None else None
        return web.json_response(
            {"data": data, "next_cursor": next_cursor, "total_count": count}
        )

    async def _post_measurements(self, request: web.Request) -> web.Response:
        key, raw, document = await self._idempotent_body(request)
        answer = self.store.replay("measurements", key, raw)
        if answer is None:
            answer = self.store.store_measurements(key, raw, document)
        return _answer(answer)

    async def _post_request(self, request: web.Request) -> web.Response:
        key, raw, document = await self._idempotent_body(request)
        answer = self.store.replay("maintenance-requests", key, raw)
        if answer is None:
            answer = self.store.store_request(key, raw, document)
        return _answer(answer)

    async def _idempotent_body(self, request: web.Request) -> tuple[str, bytes, Any]:
        key = request.headers.get("Idempotency-Key", "")
        if not 1 <= len(key) <= 255:
            raise ApiProblem(
                400,
                "missing_idempotency_key",
                "Idempotency-Key header of 1 to 255 characters is required",
                "Idempotency-Key",
            )
        raw = await request.read()
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiProblem(400, "invalid_json", f"body is not JSON: {exc}") from None
        return key, raw, document

    async def _list_measurements(self, request: web.Request) -> web.Response:
        limit = parse_limit(request.query.get("limit"))
        cursor = request.query.get("cursor")
        after = decode_cursor(cursor) if cursor else 0
        data, last = self.store.measurement_page(
            request.query.get("asset_id"), after, limit
        )
        next_cursor = encode_cursor(last) if last is not None else None
        return web.json_response({"data": data, "next_cursor": next_cursor})

    async def _list_requests(self, request: web.Request) -> web.Response:
        limit = parse_limit(request.query.get("limit"))
        cursor = request.query.get("cursor")
        after = decode_cursor(cursor) if cursor else 0
        data, last = self.store.request_page(after, limit)
        next_cursor = encode_cursor(last) if last is not None else None
        return web.json_response({"data": data, "next_cursor": next_cursor})

    async def _connection(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "connected", "environment": "sandbox"})

    async def _disconnect(self, request: web.Request) -> web.Response:
        self.store.revoke_token(request[_TOKEN])
        return web.json_response({"status": "disconnected"})

    async def _new_token(self, request: web.Request) -> web.Response:
        return web.json_response({"token": self.issue_token()}, status=201)

    async def _admin_faults(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            kind, count = spec["kind"], int(spec.get("count", 1))
            path = spec.get("path")
            if kind == "status":
                self.fail_next(count, int(spec.get("status", 503)), path=path)
            elif kind == "rate_limit":
                self.rate_limit_next(count, _retry_after(spec), path=path)
            elif kind == "drop":
                self.drop_next(count, path=path)
            elif kind == "commit_then_drop":
                self.commit_then_drop_next(count, path=path)
            elif kind == "delay":
                self.set_delay(float(spec["delay_s"]), path=path)
            elif kind == "clear":
                self.clear_faults()
            else:
                raise ValueError(f"unknown fault kind {kind!r}")
        except (
            KeyError,
            TypeError,
            ValueError,
            OverflowError,
            json.JSONDecodeError,
        ) as exc:
            raise ApiProblem(
                400,
                "invalid_fault",
                "expected {kind: status|rate_limit|drop|commit_then_drop|delay"
                f"|clear, count, ...}}: {exc}",
            ) from None
        return web.json_response({"scheduled": kind})

    async def _admin_assets(self, request: web.Request) -> web.Response:
        spec = await request.json()
        tags = spec.get("tags") if isinstance(spec, dict) else None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ApiProblem(
                422, "invalid_tags", "tags must be a list of strings", "tags"
            )
        return web.json_response({"ids": self.add_assets(tags)}, status=201)


def _retry_after(spec: dict[str, Any]) -> float | str:
    """Return the ``Retry-After`` of a rate-limit fault: ``retry_after``
    is text sent verbatim, ``retry_after_s`` a number of seconds."""
    if "retry_after" not in spec:
        return float(spec["retry_after_s"])
    header = spec["retry_after"]
    if not isinstance(header, str):
        raise TypeError(f"retry_after must be a string, found {header!r}")
    return header


def _answer(answer: StoredAnswer) -> web.Response:
    return web.json_response(dict(answer.body), status=answer.status)
