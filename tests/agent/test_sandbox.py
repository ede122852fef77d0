"""The sandbox integration API, spoken to over HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.uplink.sandbox import SandboxApi

TOKEN = "sandbox-test-token-91c3"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxApi]:
    api = SandboxApi(tmp_path / "sandbox.db", tokens=TOKEN, seed_assets=1200)
    await api.start("127.0.0.1", 0)
    yield api
    await api.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    sandbox: SandboxApi,
    method: str,
    path: str,
    *,
    body: Any = None,
    key: str | None = None,
    token: str = TOKEN,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    data = None if body is None else json.dumps(body).encode()
    async with http.request(
        method, sandbox.base_url + path, data=data, headers=headers
    ) as response:
        return response.status, await response.json()


def measurement(asset_id: str = "ast-000001", second: int = 0, **changes: Any) -> dict:
    item = {
        "asset_id": asset_id,
        "name": "velocity_rms",
        "value": 2.5,
        "unit": "mm/s",
        "timestamp": f"2026-03-01T00:00:{second:02d}Z",
        "quality": "good",
    }
    item.update(changes)
    return item


class TestSandboxAssets:
    async def test_walks_all_pages_once(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        tags: list[str] = []
        cursor = None
        pages = 0
        while True:
            query = "?limit=500" + (f"&cursor={cursor}" if cursor else "")
            status, page = await call(http, sandbox, "GET", "/api/v1/assets" + query)
            assert status == 200
            tags.extend(asset["tag"] for asset in page["data"])
            pages += 1
            if pages == 1:
                assert page["total_count"] == 1200
                sandbox.add_assets(["LATE-0001"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert len(tags) == len(set(tags)) == 1201
        assert tags[0] == "PUMP-0001"
        assert tags[-1] == "LATE-0001"

    async def test_default_limit_is_100(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        _, page = await call(http, sandbox, "GET", "/api/v1/assets")
        assert len(page["data"]) == 100

    @pytest.mark.parametrize("limit", ["0", "501", "ten"])
    async def test_rejects_bad_limit(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession, limit: str
    ) -> None:
        status, body = await call(http, sandbox, "GET", f"/api/v1/assets?limit={limit}")
        assert status == 400
        assert body["error"]["field"] == "limit"
        assert body["error"]["request_id"].startswith("req-")

    async def test_rejects_forged_cursor(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        status, body = await call(http, sandbox, "GET", "/api/v1/assets?cursor=abc")
        assert status == 400
        assert body["error"]["code"] == "invalid_cursor"


class TestSandboxMeasurements:
    async def test_accepts_and_reads_back(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        items = [measurement(second=s) for s in range(3)]
        status, body = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/measurements",
            body={"items": items},
            key="k1",
        )
        _, page = await call(
            http, sandbox, "GET", "/api/v1/measurements?asset_id=ast-000001"
        )
        assert status == 200
        assert body == {"accepted": 3, "rejected": []}
        assert [row["timestamp"] for row in page["data"]] == [
            i["timestamp"] for i in items
        ]

    async def test_requires_idempotency_key(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        status, body = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/measurements",
            body={"items": [measurement()]},
        )
        assert status == 400
        assert body["error"]["code"] == "missing_idempotency_key"

    async def test_replay_stores_nothing_twice(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        body = {"items": [measurement(), measurement("ast-999999")]}
        first = await call(
            http, sandbox, "POST", "/api/v1/measurements", body=body, key="k"
        )
        second = await call(
            http, sandbox, "POST", "/api/v1/measurements", body=body, key="k"
        )
        rows, _ = sandbox.store.measurement_page(None, 0, 100)
        assert first == second
        assert first[0] == 207
        assert len(rows) == 1

    async def test_same_key_other_body_conflicts(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        await call(
            http,
            sandbox,
            "POST",
            "/api/v1/measurements",
            body={"items": [measurement()]},
            key="k",
        )
        status, body = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/measurements",
            body={"items": [measurement(second=5)]},
            key="k",
        )
        assert status == 409
        assert body["error"]["code"] == "idempotency_key_reused"

    @pytest.mark.parametrize(
        ("item", "code", "field"),
        [
            (measurement("ast-999999"), "unknown_asset", "items[1].asset_id"),
            (measurement(value=True), "invalid_value", "items[1].value"),
            (measurement(quality="fine"), "invalid_quality", "items[1].quality"),
            (
                measurement(timestamp="2026-03-01T00:00:09"),
                "invalid_timestamp",
                "items[1].timestamp",
            ),
            (measurement(second=0), "timestamp_not_increasing", "items[1].timestamp"),
            ({"asset_id": "ast-000001"}, "missing_field", "items[1].name"),
        ],
    )
    async def test_rejects_invalid_item(
        self,
        sandbox: SandboxApi,
        http: aiohttp.ClientSession,
        item: dict,
        code: str,
        field: str,
    ) -> None:
        items = [measurement(second=0), item, measurement(second=2)]
        status, body = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/measurements",
            body={"items": items},
            key="k",
        )
        assert status == 207
        assert body["accepted"] == 2
        assert body["rejected"][0]["index"] == 1
        assert body["rejected"][0]["error"]["code"] == code
        assert body["rejected"][0]["error"]["field"] == field

    async def test_non_finite_value_is_rejected(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        raw = b'{"items": [{"asset_id": "ast-000001", "name": "x", "value": NaN,'
        raw += b' "unit": "", "timestamp": "2026-03-01T00:00:00Z", "quality": "bad"}]}'
        headers = {**AUTH, "Idempotency-Key": "nan"}
        async with http.post(
            sandbox.base_url + "/api/v1/measurements", data=raw, headers=headers
        ) as response:
            body = await response.json()
        assert response.status == 207
        assert body["rejected"][0]["error"]["code"] == "invalid_value"

    @pytest.mark.parametrize("count", [0, 501])
    async def test_rejects_batch_size(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession, count: int
    ) -> None:
        items = [measurement(second=0)] * count
        status, body = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/measurements",
            body={"items": items},
            key="k",
        )
        assert status == 422
        assert body["error"]["field"] == "items"


class TestSandboxMaintenanceRequests:
    def request(self, **changes: Any) -> dict:
        body = {
            "asset_id": "ast-000002",
            "priority": "urgent",
            "title": "Inner race defect on PUMP-0002",
            "description": "BPFI and 1x sidebands",
            "source_event_id": "ev-1",
        }
        body.update(changes)
        return body

    async def test_creates_once_per_key(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        first = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/maintenance-requests",
            body=self.request(),
            key="ev-1",
        )
        again = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/maintenance-requests",
            body=self.request(),
            key="ev-1",
        )
        _, listed = await call(http, sandbox, "GET", "/api/v1/maintenance-requests")
        assert first == again
        assert first[0] == 201
        assert first[1]["status"] == "open"
        assert len(listed["data"]) == 1

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"status": "closed"}, "status"),
            ({"id": 5}, "id"),
            ({"created_at": "2026-01-01T00:00:00Z"}, "created_at"),
            ({"title": ""}, "title"),
            ({"title": "t" * 121}, "title"),
            ({"priority": "critical"}, "priority"),
        ],
    )
    async def test_rejects_invalid_field(
        self,
        sandbox: SandboxApi,
        http: aiohttp.ClientSession,
        changes: dict,
        field: str,
    ) -> None:
        status, body = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/maintenance-requests",
            body=self.request(**changes),
            key="k",
        )
        assert status == 422
        assert body["error"]["field"] == field

    async def test_rejects_inactive_asset(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        sandbox.store.set_asset_active("PUMP-0002", False)
        status, body = await call(
            http,
            sandbox,
            "POST",
            "/api/v1/maintenance-requests",
            body=self.request(),
            key="k",
        )
        assert status == 422
        assert body["error"]["code"] == "asset_inactive"


class TestSandboxConnection:
    async def test_disconnect_revokes_token(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        status, _ = await call(http, sandbox, "POST", "/api/v1/connection/disconnect")
        after, body = await call(http, sandbox, "GET", "/api/v1/connection")
        assert status == 200
        assert after == 401
        assert body["error"]["code"] == "token_revoked"

    async def test_issued_token_works(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        status, body = await call(http, sandbox, "POST", "/api/v1/connection/tokens")
        new = body["token"]
        sandbox.revoke_token(TOKEN)
        ok, _ = await call(http, sandbox, "GET", "/api/v1/connection", token=new)
        assert status == 201
        assert ok == 200

    async def test_unknown_token_is_401(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        status, body = await call(
            http, sandbox, "GET", "/api/v1/assets", token="not-a-token"
        )
        assert status == 401
        assert body["error"]["code"] == "invalid_token"


class TestSandboxFaults:
    async def test_admin_endpoint_schedules_fault(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        scheduled, _ = await call(
            http,
            sandbox,
            "POST",
            "/_sandbox/faults",
            body={"kind": "rate_limit", "count": 1, "retry_after_s": 7},
        )
        async with http.get(sandbox.base_url + "/api/v1/assets", headers=AUTH) as r:
            limited, retry_after = r.status, r.headers["Retry-After"]
        recovered, _ = await call(http, sandbox, "GET", "/api/v1/assets")
        assert scheduled == 200
        assert limited == 429
        assert retry_after == "7"
        assert recovered == 200

    async def test_admin_endpoint_sends_text_verbatim(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        text = "Fri, 31 Dec 9999 23:59:59 GMT"
        scheduled, _ = await call(
            http,
            sandbox,
            "POST",
            "/_sandbox/faults",
            body={"kind": "rate_limit", "retry_after": text},
        )
        async with http.get(sandbox.base_url + "/api/v1/assets", headers=AUTH) as r:
            limited, retry_after = r.status, r.headers["Retry-After"]
        assert scheduled == 200
        assert limited == 429
        assert retry_after == text

    @pytest.mark.parametrize(
        "spec",
        [
            {"kind": "rate_limit", "retry_after": 7},
            {"kind": "rate_limit", "retry_after": "7\r\nX-Injected: 1"},
            {"kind": "rate_limit", "retry_after_s": "inf"},
            {"kind": "rate_limit"},
        ],
        ids=["number_as_text", "line_break", "infinite_seconds", "missing"],
    )
    async def test_admin_endpoint_rejects_invalid_retry_after(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession, spec: dict[str, object]
    ) -> None:
        status, body = await call(http, sandbox, "POST", "/_sandbox/faults", body=spec)
        recovered, _ = await call(http, sandbox, "GET", "/api/v1/assets")
        assert status == 400
        assert body["error"]["code"] == "invalid_fault"
        assert recovered == 200

    @pytest.mark.parametrize("text", ["7\n", "7\r", "\x00", "7\x7f"])
    def test_rate_limit_rejects_control_character(
        self, sandbox: SandboxApi, text: str
    ) -> None:
        with pytest.raises(ValueError, match="control characters"):
            sandbox.rate_limit_next(1, text)

    async def test_records_idempotency_key(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        body = {"items": [measurement()]}
        await call(http, sandbox, "POST", "/api/v1/measurements", body=body, key="k-1")
        await call(http, sandbox, "GET", "/api/v1/assets")
        assert sandbox.requests[-2].idempotency_key == "k-1"
        assert sandbox.requests[-1].idempotency_key is None

    async def test_admin_endpoint_needs_token(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        status, _ = await call(
            http,
            sandbox,
            "POST",
            "/_sandbox/faults",
            body={"kind": "clear"},
            token="wrong",
        )
        assert status == 401

    async def test_dropped_request_gets_no_answer(
        self, sandbox: SandboxApi, http: aiohttp.ClientSession
    ) -> None:
        sandbox.drop_next(1)
        body = {"items": [measurement()]}
        # A POST, because aiohttp resends an idempotent GET once by itself.
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await call(
                http, sandbox, "POST", "/api/v1/measurements", body=body, key="k"
            )
        status, _ = await call(
            http, sandbox, "POST", "/api/v1/measurements", body=body, key="k"
        )
        rows, _ = sandbox.store.measurement_page(None, 0, 10)
        assert status == 200
        assert len(rows) == 1
