"""The uplink client against an API peer that responds with garbage.

The peer is a real aiohttp server on loopback whose response to
``POST /api/v1/measurements`` each test chooses. A malformed 2xx response
is retried with the same idempotency key (the API may have stored the
batch), never acknowledged and never dead-lettered, so no item is lost:
outbox depth + delivered + dead-lettered = produced at every point.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import UplinkUnavailableError
from agent.outbox import Outbox, OutboxItem, Priority
from agent.settings import UplinkEndpointSettings, UplinkSettings
from agent.uplink._http import MAX_REPLY_BYTES, Reply, parse_retry_after
from agent.uplink.client import Uplink, UplinkState, _rejected_indices
from agent.uplink.token import TokenProvider, write_secret_file

BATCH = 5
Handler = Callable[[web.Request, list[Any]], Awaitable[web.StreamResponse]]


def json_reply(body: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body), status=status, content_type="application/json"
    )


async def cut_chunked(request: web.Request, items: list[Any]) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "application/json"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"accepted": ')
    assert request.transport is not None
    request.transport.close()
    return response


async def huge(request: web.Request, items: list[Any]) -> web.StreamResponse:
    padding = " " * (10 * 1024 * 1024)
    text = json.dumps({"accepted": len(items), "rejected": []}) + padding
    return web.Response(text=text, content_type="application/json")


def fixed(make: Callable[[list[Any]], web.Response]) -> Handler:
    async def handler(request: web.Request, items: list[Any]) -> web.Response:
        return make(items)

    return handler


MALFORMED: dict[str, Handler] = {
    "wrong_json": fixed(lambda items: json_reply({"ok": True})),
    "json_array": fixed(lambda items: json_reply([len(items)])),
    "truncated": fixed(
        lambda items: web.Response(
            text='{"accepted": 5, "rej', content_type="application/json"
        )
    ),
    "html": fixed(
        lambda items: web.Response(
            text="<html><body>Sign in</body></html>", content_type="text/html"
        )
    ),
    "missing_accepted": fixed(lambda items: json_reply({"rejected": []})),
    "accepted_as_text": fixed(
        lambda items: json_reply({"accepted": str(len(items)), "rejected": []})
    ),
    "accepted_as_bool": fixed(lambda items: json_reply({"accepted": True})),
    "count_mismatch": fixed(
        lambda items: json_reply({"accepted": len(items) + 3, "rejected": []})
    ),
    "index_out_of_range": fixed(
        lambda items: json_reply(
            {
                "accepted": len(items) - 1,
                "rejected": [{"index": len(items) + 5, "error": {"code": "x"}}],
            },
            status=207,
        )
    ),
    "negative_index": fixed(
        lambda items: json_reply(
            {"accepted": len(items) - 1, "rejected": [{"index": -1}]}, status=207
        )
    ),
    "rejected_not_list": fixed(
        lambda items: json_reply({"accepted": 0, "rejected": 5}, status=207)
    ),
    "rejected_entry_not_object": fixed(
        lambda items: json_reply(
            {"accepted": len(items) - 1, "rejected": ["0"]}, status=207
        )
    ),
    "huge_body": huge,
    "chunked_cut": cut_chunked,
}


async def well_formed(request: web.Request, items: list[Any]) -> web.Response:
    return json_reply({"accepted": len(items), "rejected": []})


class FakeCmmsApi:
    """The peer: assets and measurements with a switchable response."""

    def __init__(self) -> None:
        self.respond: Handler = well_formed
        self.posts = 0
        self.keys: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/api/v1/assets", self.assets)
        self.app.router.add_post("/api/v1/measurements", self.measurements)

    async def assets(self, request: web.Request) -> web.Response:
        return json_reply(
            {"data": [{"id": "a-1", "tag": "pump-1"}], "next_cursor": None}
        )

    async def measurements(self, request: web.Request) -> web.StreamResponse:
        self.posts += 1
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        items = (await request.json())["items"]
        return await self.respond(request, items)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeCmmsApi, str]]:
    peer = FakeCmmsApi()
    runner = web.AppRunner(peer.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield peer, f"http://{host}:{port}"
    await runner.cleanup()


def make_uplink(base_url: str, tmp_path: Path, outbox: Outbox) -> Uplink:
    token_file = tmp_path / "uplink-token"
    write_secret_file(token_file, "test-token-for-the-peer")
    settings = UplinkSettings(
        sandbox=UplinkEndpointSettings(base_url=base_url, token_file=token_file),
        max_requests_per_s=1000,
        retry_max=0.05,
        request_timeout=5,
    )
    provider = TokenProvider(settings, environ={})
    return Uplink(settings, outbox, {}, provider, idle_poll_s=0.02)


def measurements(count: int) -> list[OutboxItem]:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        OutboxItem(
            kind="measurement",
            priority=Priority.INDICATOR,
            payload={
                "asset": "pump-1",
                "name": "rms",
                "value": n / 10,
                "unit": "g",
                "timestamp": (start + timedelta(seconds=n)).isoformat(),
                "quality": "good",
            },
        )
        for n in range(count)
    ]


def accounted(outbox: Outbox) -> int:
    stats = outbox.stats()
    return stats.depth + stats.delivered + stats.dead_lettered


async def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class TestUplinkMalformedAnswers:
    @pytest.mark.parametrize("mode", sorted(MALFORMED))
    async def test_malformed_response_retried_then_delivered(
        self, api: tuple[FakeCmmsApi, str], tmp_path: Path, mode: str
    ) -> None:
        peer, base_url = api
        outbox = Outbox(tmp_path / "outbox.db", max_bytes=10_000_000)
        outbox.put_many(measurements(BATCH))
        uplink = make_uplink(base_url, tmp_path, outbox)
        peer.respond = MALFORMED[mode]
        stop = asyncio.Event()
        task = asyncio.create_task(uplink.run(stop))
        try:
            await wait_for(lambda: peer.posts >= 3)
            assert not task.done()
            assert uplink.state is UplinkState.RETRYING
            assert outbox.stats().delivered == 0
            assert outbox.stats().dead_lettered == 0
            assert accounted(outbox) == BATCH

            peer.respond = well_formed
            await wait_for(lambda: outbox.stats().depth == 0)
        finally:
            stop.set()
            await task
            outbox.close()

        assert uplink.state is UplinkState.OK
        assert len(set(peer.keys)) == 1
        assert uplink.delivered_count == BATCH

    async def test_partial_rejection_dead_letters_named_items(
        self, api: tuple[FakeCmmsApi, str], tmp_path: Path
    ) -> None:
        peer, base_url = api
        outbox = Outbox(tmp_path / "outbox.db", max_bytes=10_000_000)
        outbox.put_many(measurements(BATCH))
        uplink = make_uplink(base_url, tmp_path, outbox)
        peer.respond = fixed(
            lambda items: json_reply(
                {
                    "accepted": len(items) - 2,
                    "rejected": [
                        {"index": 1, "error": {"code": "invalid", "message": "m"}},
                        {"index": 3, "error": "too old"},
                    ],
                },
                status=207,
            )
        )

        await uplink.flush(10)
        await uplink.close()

        stats = outbox.stats()
        outbox.close()
        assert stats.delivered == BATCH - 2
        assert stats.dead_lettered == 2
        assert stats.depth == 0

    async def test_text_plain_json_accepted(
        self, api: tuple[FakeCmmsApi, str], tmp_path: Path
    ) -> None:
        peer, base_url = api
        outbox = Outbox(tmp_path / "outbox.db", max_bytes=10_000_000)
        outbox.put_many(measurements(BATCH))
        uplink = make_uplink(base_url, tmp_path, outbox)
        peer.respond = fixed(
            lambda items: web.Response(
                text=json.dumps({"accepted": len(items), "rejected": []}),
                content_type="text/plain",
            )
        )

        delivered = await uplink.flush(10)
        await uplink.close()

        assert delivered
        assert outbox.stats().delivered == BATCH
        outbox.close()


documents = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["accepted", "rejected", "index", "error", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


class TestRejectedIndices:
    @settings(max_examples=300, deadline=None)
    @given(
        document=documents,
        status=st.sampled_from([200, 201, 207]),
        size=st.integers(1, 8),
    )
    def test_valid_response_or_unavailable_error(
        self, document: object, status: int, size: int
    ) -> None:
        try:
            rejected = _rejected_indices(Reply(status=status, document=document), size)
        except UplinkUnavailableError as exc:
            assert exc.status == status
            assert "expected" in str(exc)
            return

        assert isinstance(document, dict)
        assert all(0 <= index < size for index in rejected)
        assert document["accepted"] + len(rejected) == size
        assert status != 200 or not rejected

    def test_reply_cap_above_largest_response(self) -> None:
        # The largest well-formed response rejects all 500 items of a batch.
        entry = {"index": 499, "error": {"code": "invalid", "message": "m" * 200}}
        body = json.dumps({"accepted": 0, "rejected": [entry] * 500})

        assert len(body) < MAX_REPLY_BYTES


date_tokens = st.sampled_from(
    [
        "Sun,",
        "Mon,",
        "01",
        "31",
        "Mar",
        "Dec",
        "1970",
        "2026",
        "9999",
        "10000",
        "99999999999999999999",
        "-1",
        "00:00:00",
        "23:59:59",
        "24:61:61",
        "GMT",
        "UT",
        "EST",
        "+0100",
        "-0000",
        "+9999",
        "1e30",
        "²",
    ]
)
retry_after_values = (
    st.text(max_size=40)
    | st.lists(date_tokens, min_size=1, max_size=7).map(" ".join)
    | st.integers(-(10**40), 10**400).map(str)
)


class TestParseRetryAfter:
    @settings(max_examples=2000, deadline=None)
    @given(value=retry_after_values)
    def test_none_or_non_negative_seconds(self, value: str) -> None:
        wait_s = parse_retry_after(value, now=datetime(2026, 3, 1, tzinfo=UTC))

        if wait_s is not None:
            assert not math.isnan(wait_s)
            assert wait_s >= 0.0

    @given(seconds=st.integers(0, 2**53))
    def test_whole_seconds_read_exactly(self, seconds: int) -> None:
        assert parse_retry_after(str(seconds)) == seconds
