"""The uplink client against the real sandbox API on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.errors import ConfigError, UplinkError
from agent.outbox import Outbox, OutboxItem, Priority
from agent.settings import UplinkEndpointSettings, UplinkSettings
from agent.uplink._http import parse_retry_after
from agent.uplink.client import Uplink, UplinkState
from agent.uplink.sandbox import RequestRecord, SandboxApi
from agent.uplink.token import TokenProvider, write_secret_file

TOKEN = "sandbox-token-6b1f0c52a9e34d7f"
START = datetime(2026, 3, 1, tzinfo=UTC)
MEASUREMENTS = "/api/v1/measurements"


def stamp(n: int) -> str:
    return (START + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")


def reading(
    n: int,
    *,
    asset: str = "pump-1",
    name: str = "velocity_rms",
    priority: Priority = Priority.INDICATOR,
    quality: str = "good",
) -> OutboxItem:
    return OutboxItem(
        kind="measurement",
        priority=priority,
        payload={
            "asset": asset,
            "name": name,
            "value": n / 10,
            "unit": "mm/s",
            "timestamp": stamp(n),
            "quality": quality,
        },
    )


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxApi]:
    api = SandboxApi(tmp_path / "sandbox.db", tokens=TOKEN, seed_assets=1200)
    await api.start("127.0.0.1", 0)
    yield api
    await api.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "uplink-token"
    write_secret_file(path, TOKEN)
    return path


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    box = Outbox(tmp_path / "outbox.db", max_bytes=50_000_000)
    yield box
    box.close()


def make_settings(
    sandbox: SandboxApi, token_file: Path, *, retry_max: float = 0.2
) -> UplinkSettings:
    return UplinkSettings(
        sandbox=UplinkEndpointSettings(
            base_url=sandbox.base_url, token_file=token_file
        ),
        max_requests_per_s=1000,
        retry_max=retry_max,
        request_timeout=5,
    )


def make_uplink(
    sandbox: SandboxApi,
    token_file: Path,
    outbox: Outbox,
    *,
    retry_max: float = 0.2,
    **kwargs: float,
) -> Uplink:
    settings = make_settings(sandbox, token_file, retry_max=retry_max)
    provider = TokenProvider(settings, environ={})
    tags = {"pump-1": "PUMP-0001", "pump-2": "PUMP-0002", "fan-9": "PUMP-1200"}
    return Uplink(settings, outbox, tags, provider, idle_poll_s=0.05, **kwargs)


def stored(sandbox: SandboxApi) -> list[dict]:
    rows, cursor = [], 0
    while True:
        page, last = sandbox.store.measurement_page(None, cursor, 500)
        rows.extend(page)
        if last is None:
            return rows
        cursor = last


def capped_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.getMessage().startswith("uplink.retry_after_capped")
    ]


async def drain(uplink: Uplink, outbox: Outbox, timeout_s: float = 20) -> None:
    """Run the delivery loop until the outbox is empty."""
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while outbox.stats().depth:
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task


class TestUplinkDelivery:
    async def test_delivers_every_reading_once(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        outbox.put_many([reading(n) for n in range(1200)])
        outbox.put_many([reading(n, asset="pump-2") for n in range(10)])
        uplink = make_uplink(sandbox, token_file, outbox)
        assert await uplink.flush(20)
        await uplink.close()
        rows = stored(sandbox)
        pump1 = [r for r in rows if r["asset_id"] == "ast-000001"]
        assert len(rows) == 1210
        assert [r["value"] for r in pump1] == [n / 10 for n in range(1200)]
        assert uplink.delivered_count == 1210
        assert uplink.delivered_by_kind == {"measurement": 1210}
        assert outbox.stats().delivered == 1210
        assert uplink.last_delivery is not None

    async def test_maps_tag_on_last_asset_page(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        sandbox.total_count = "never"
        outbox.put_many([reading(1, asset="fan-9")])
        uplink = make_uplink(sandbox, token_file, outbox)
        assert await uplink.flush(10)
        await uplink.close()
        assert [r["asset_id"] for r in stored(sandbox)] == ["ast-001200"]
        assert sandbox.count_requests("/api/v1/assets") == 3

    async def test_sends_quality_status_only(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        outbox.put_many([reading(1, quality="bad/comm_error")])
        uplink = make_uplink(sandbox, token_file, outbox)
        await uplink.flush(10)
        await uplink.close()
        assert [r["quality"] for r in stored(sandbox)] == ["bad"]

    async def test_idle_loop_wakes_on_stored_items(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        # An idle poll of 60 s: without the wake-up, nothing would be
        # delivered within the 10 s the test waits.
        settings = make_settings(sandbox, token_file)
        provider = TokenProvider(settings, environ={})
        tags = {"pump-1": "PUMP-0001"}
        uplink = Uplink(settings, outbox, tags, provider, idle_poll_s=60)
        stop = asyncio.Event()
        task = asyncio.create_task(uplink.run(stop))
        try:
            await asyncio.sleep(0.5)
            outbox.put_many([reading(1)])
            uplink.notify_stored()
            async with asyncio.timeout(10):
                while outbox.stats().depth:
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
        assert len(stored(sandbox)) == 1

    async def test_unexpected_error_does_not_end_loop(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # No real input is known to raise here any more, so a defect is
        # simulated: the first delivery step raises a RuntimeError.
        uplink = make_uplink(sandbox, token_file, outbox)
        step = uplink._step
        calls = 0

        async def failing_once() -> float | None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("defect")
            return await step()

        monkeypatch.setattr(uplink, "_step", failing_once)
        outbox.put_many([reading(n) for n in range(5)])
        with caplog.at_level(logging.ERROR, logger="agent.uplink.client"):
            await drain(uplink, outbox)
        failures = [r for r in caplog.records if r.getMessage() == "uplink.step_failed"]
        assert len(failures) == 1
        assert failures[0].exc_info is not None
        assert len(stored(sandbox)) == 5


class TestUplinkRejections:
    async def test_rejected_item_does_not_block_others(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        items = [reading(n) for n in range(5)]
        items[2] = reading(2, quality="excellent")
        outbox.put_many(items)
        outbox.put_many([reading(n) for n in range(5, 8)])
        uplink = make_uplink(sandbox, token_file, outbox)
        assert await uplink.flush(10)
        await uplink.close()
        values = [r["value"] for r in stored(sandbox)]
        letters = outbox.dead_letters()
        assert values == [0.0, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7]
        assert len(letters) == 1
        assert letters[0].payload["quality"] == "excellent"
        assert "invalid_quality" in letters[0].reason

    async def test_unmapped_asset_is_dead_lettered(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        outbox.put_many([reading(n, asset="ghost") for n in range(3)])
        outbox.put_many([reading(n) for n in range(3)])
        uplink = make_uplink(sandbox, token_file, outbox)
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            assert await uplink.flush(10)
        await uplink.close()
        unmapped_logs = [
            r for r in caplog.records if "uplink.asset_unmapped" in r.getMessage()
        ]
        assert len(stored(sandbox)) == 3
        assert outbox.stats().dead_lettered == 3
        assert "'ghost'" in outbox.dead_letters()[0].reason
        assert len(unmapped_logs) == 1
        pages_per_walk = math.ceil(1200 / 500)
        assert sandbox.count_requests("/api/v1/assets") == 2 * pages_per_walk

    async def test_non_finite_value_is_dead_lettered(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        bad = reading(0)
        bad_payload = {**bad.payload, "value": math.nan}
        outbox.put_many(
            [OutboxItem(kind="measurement", priority=bad.priority, payload=bad_payload)]
        )
        outbox.put_many([reading(1)])
        uplink = make_uplink(sandbox, token_file, outbox)
        assert await uplink.flush(10)
        await uplink.close()
        assert [r["value"] for r in stored(sandbox)] == [0.1]
        assert "not a finite number" in outbox.dead_letters()[0].reason


class TestUplinkRetries:
    @pytest.mark.parametrize("form", ["seconds", "http_date"])
    async def test_honours_retry_after(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
        form: str,
    ) -> None:
        if form == "seconds":
            sandbox.rate_limit_next(1, 1, path=MEASUREMENTS)
        else:
            # An HTTP date has whole seconds, so 2.5 s ahead waits at least 1.5 s.
            later = datetime.now(UTC) + timedelta(seconds=2.5)
            sandbox.rate_limit_next(1, later, path=MEASUREMENTS)
        outbox.put_many([reading(n) for n in range(3)])
        # A retry_max above both waits, so neither is capped.
        uplink = make_uplink(sandbox, token_file, outbox, retry_max=5.0)
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            await drain(uplink, outbox)
        posts = [r for r in sandbox.requests if r.path == MEASUREMENTS]
        assert [r.status for r in posts] == [429, 200]
        assert posts[1].at_s - posts[0].at_s >= 1.0
        assert len(stored(sandbox)) == 3
        assert capped_logs(caplog) == []

    async def test_retries_server_error_burst(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        sandbox.fail_next(2, 500, path=MEASUREMENTS)
        sandbox.fail_next(2, 503, path=MEASUREMENTS)
        outbox.put_many([reading(n) for n in range(10)])
        uplink = make_uplink(sandbox, token_file, outbox)
        await drain(uplink, outbox)
        statuses = [r.status for r in sandbox.requests if r.path == MEASUREMENTS]
        assert statuses == [500, 500, 503, 503, 200]
        assert len(stored(sandbox)) == 10
        assert uplink.state is UplinkState.OK

    @pytest.mark.parametrize("fault", ["commit_then_drop", "drop"])
    async def test_lost_answer_stores_no_duplicate(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox, fault: str
    ) -> None:
        if fault == "commit_then_drop":
            sandbox.commit_then_drop_next(1, path=MEASUREMENTS)
        else:
            sandbox.drop_next(1, path=MEASUREMENTS)
        outbox.put_many([reading(n) for n in range(20)])
        uplink = make_uplink(sandbox, token_file, outbox)
        await drain(uplink, outbox)
        rows = stored(sandbox)
        posts = [r for r in sandbox.requests if r.path == MEASUREMENTS]
        assert len(posts) == 2
        assert posts[0].status is None
        assert len(rows) == 20
        assert len({(r["asset_id"], r["timestamp"]) for r in rows}) == 20


CAP_S = 0.5
"""``retry_max`` in the capping tests: short, so that they run fast."""

JITTER_BOUND_S = 0.2
"""Largest jitter on a 429 wait of ``CAP_S``: 10 % of it, but at least 0.2 s."""

LOOPBACK_ALLOWANCE_S = 0.3
"""Time the retried request spends in the client and the sandbox after the
wait, before the sandbox records it. Loopback handling takes milliseconds,
so this is a generous margin."""


def measurement_posts(sandbox: SandboxApi) -> list[RequestRecord]:
    return [r for r in sandbox.requests if r.path == MEASUREMENTS]


class TestUplinkRetryAfterCap:
    @pytest.mark.parametrize(
        ("header", "requested_s"),
        [
            ("86400", 86400.0),
            ("1" + "0" * 30, 1e30),
            ("9" * 400, math.inf),
        ],
        ids=["one_day", "ten_to_the_30", "beyond_float"],
    )
    async def test_huge_seconds_wait_cap(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
        header: str,
        requested_s: float,
    ) -> None:
        sandbox.rate_limit_next(1, header, path=MEASUREMENTS)
        outbox.put_many([reading(n) for n in range(3)])
        uplink = make_uplink(sandbox, token_file, outbox, retry_max=CAP_S)
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            await drain(uplink, outbox)

        capped = capped_logs(caplog)
        assert len(capped) == 1
        assert capped[0].levelno == logging.WARNING
        logged_requested_s, logged_wait_s, logged_max_s = capped[0].args
        assert logged_requested_s == requested_s
        assert logged_max_s == CAP_S
        assert logged_wait_s >= CAP_S
        assert logged_wait_s <= CAP_S + JITTER_BOUND_S

        posts = measurement_posts(sandbox)
        measured_s = posts[1].at_s - posts[0].at_s
        assert [r.status for r in posts] == [429, 200]
        assert measured_s >= logged_wait_s
        assert measured_s <= CAP_S + JITTER_BOUND_S + LOOPBACK_ALLOWANCE_S

        assert posts[1].idempotency_key == posts[0].idempotency_key
        assert [r["value"] for r in stored(sandbox)] == [0.0, 0.1, 0.2]
        assert outbox.stats().delivered == 3
        assert outbox.stats().dead_lettered == 0
        assert uplink.state is UplinkState.OK

    async def test_distant_http_date_waits_cap(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        distant = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
        sandbox.rate_limit_next(1, distant, path=MEASUREMENTS)
        outbox.put_many([reading(n) for n in range(3)])
        uplink = make_uplink(sandbox, token_file, outbox, retry_max=CAP_S)
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            await drain(uplink, outbox)

        expected_s = (distant - datetime.now(UTC)).total_seconds()
        capped = capped_logs(caplog)
        assert len(capped) == 1
        logged_requested_s, logged_wait_s, _ = capped[0].args
        assert logged_requested_s == pytest.approx(expected_s, abs=60)
        assert logged_wait_s >= CAP_S
        assert logged_wait_s <= CAP_S + JITTER_BOUND_S

        posts = measurement_posts(sandbox)
        measured_s = posts[1].at_s - posts[0].at_s
        assert [r.status for r in posts] == [429, 200]
        assert measured_s >= CAP_S
        assert measured_s <= CAP_S + JITTER_BOUND_S + LOOPBACK_ALLOWANCE_S
        assert posts[1].idempotency_key == posts[0].idempotency_key
        assert len(stored(sandbox)) == 3

    async def test_wait_within_cap_not_capped(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        sandbox.rate_limit_next(1, "1", path=MEASUREMENTS)
        outbox.put_many([reading(0)])
        uplink = make_uplink(sandbox, token_file, outbox, retry_max=1.0)
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            await drain(uplink, outbox)
        posts = measurement_posts(sandbox)
        assert [r.status for r in posts] == [429, 200]
        assert posts[1].at_s - posts[0].at_s >= 1.0
        assert capped_logs(caplog) == []

    @pytest.mark.parametrize(
        "header",
        [
            "-5",
            "soon",
            "1e30",
            "1.5",
            "²",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        ],
        ids=[
            "negative",
            "garbage",
            "exponent",
            "fraction",
            "superscript_digit",
            "past_date",
            "year_too_large",
        ],
    )
    async def test_unusable_value_waits_bounded(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
        header: str,
    ) -> None:
        # A past date waits only the jitter. The other values are unreadable
        # and wait the backoff, which retry_max also caps.
        sandbox.rate_limit_next(1, header, path=MEASUREMENTS)
        outbox.put_many([reading(n) for n in range(3)])
        uplink = make_uplink(sandbox, token_file, outbox, retry_max=CAP_S)
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            await drain(uplink, outbox)

        posts = measurement_posts(sandbox)
        measured_s = posts[1].at_s - posts[0].at_s
        assert [r.status for r in posts] == [429, 200]
        assert measured_s <= CAP_S + JITTER_BOUND_S + LOOPBACK_ALLOWANCE_S
        assert posts[1].idempotency_key == posts[0].idempotency_key
        assert len(stored(sandbox)) == 3
        assert capped_logs(caplog) == []
        assert uplink.state is UplinkState.OK


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected_s"),
        [("120", 120.0), (" 7 ", 7.0), ("0", 0.0), ("007", 7.0)],
    )
    def test_reads_whole_seconds(self, value: str, expected_s: float) -> None:
        assert parse_retry_after(value, now=START) == expected_s

    @pytest.mark.parametrize(
        "value",
        [
            "Sun, 01 Mar 2026 00:01:30 GMT",
            "Sun, 01 Mar 2026 01:01:30 +0100",
            "Sun, 01 Mar 2026 00:01:30 -0000",
        ],
        ids=["gmt", "offset", "no_zone"],
    )
    def test_reads_http_date(self, value: str) -> None:
        # START is 2026-03-01 00:00:00 UTC, so each date is 90 s later.
        assert parse_retry_after(value, now=START) == 90.0

    @pytest.mark.parametrize(
        "value",
        ["Thu, 01 Jan 1970 00:00:00 GMT", "Sat, 28 Feb 2026 23:59:59 GMT"],
        ids=["epoch", "one_second_ago"],
    )
    def test_past_date_is_zero(self, value: str) -> None:
        assert parse_retry_after(value, now=START) == 0.0

    def test_reads_last_representable_date(self) -> None:
        days = date(9999, 12, 31).toordinal() - date(2026, 3, 1).toordinal()
        expected_s = days * 86400.0 + 86399.0
        value = "Fri, 31 Dec 9999 23:59:59 GMT"
        assert parse_retry_after(value, now=START) == expected_s

    def test_reads_ten_to_the_30(self) -> None:
        assert parse_retry_after("1" + "0" * 30, now=START) == 1e30

    def test_number_beyond_float_is_inf(self) -> None:
        assert parse_retry_after("9" * 400, now=START) == math.inf

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "",
            "-5",
            "+5",
            "soon",
            "1.5",
            "1e30",
            "nan",
            "²",
            "Mon, 01 Jan 10000 00:00:00 GMT",
            "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
            "Sun, 01 Mar 2026 25:00:00 GMT",
            "Sun, 01 Mar 2026 00:00:00 +9999",
        ],
    )
    def test_unreadable_value_is_none(self, value: str | None) -> None:
        assert parse_retry_after(value, now=START) is None


class TestUplinkTokenRevocation:
    async def test_revoked_token_pauses_then_resumes(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        outbox.put_many([reading(n) for n in range(5)])
        uplink = make_uplink(sandbox, token_file, outbox, token_poll_s=0.1)
        assert await uplink.flush(10)
        sandbox.revoke_token(TOKEN)
        outbox.put_many([reading(n) for n in range(5, 15)])
        before = len(sandbox.requests)

        stop = asyncio.Event()
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            task = asyncio.create_task(uplink.run(stop))
            await asyncio.sleep(1.0)
        while_revoked = len(sandbox.requests) - before
        state_revoked = uplink.state
        reauth_logs = [
            r for r in caplog.records if "uplink.reauth_required" in r.getMessage()
        ]

        new_token = sandbox.issue_token()
        write_secret_file(token_file, new_token)
        assert uplink.reload_token()
        async with asyncio.timeout(10):
            while outbox.stats().depth:
                await asyncio.sleep(0.02)
        stop.set()
        await task

        assert state_revoked is UplinkState.REAUTH_REQUIRED
        assert while_revoked <= 2
        assert len(reauth_logs) == 1
        assert len(stored(sandbox)) == 15
        assert uplink.state is UplinkState.OK

    async def test_new_token_file_is_picked_up(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        sandbox.revoke_token(TOKEN)
        outbox.put_many([reading(n) for n in range(3)])
        uplink = make_uplink(sandbox, token_file, outbox, token_poll_s=0.1)
        stop = asyncio.Event()
        task = asyncio.create_task(uplink.run(stop))
        async with asyncio.timeout(5):
            while uplink.state is not UplinkState.REAUTH_REQUIRED:
                await asyncio.sleep(0.02)
        write_secret_file(token_file, sandbox.issue_token())
        async with asyncio.timeout(10):
            while outbox.stats().depth:
                await asyncio.sleep(0.02)
        stop.set()
        await task
        assert len(stored(sandbox)) == 3

    async def test_token_never_leaks(
        self,
        sandbox: SandboxApi,
        token_file: Path,
        outbox: Outbox,
        caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        sandbox.fail_next(1, 503, path=MEASUREMENTS)
        sandbox.rate_limit_next(1, 1, path=MEASUREMENTS)
        outbox.put_many([reading(n) for n in range(3)])
        outbox.put_many([reading(1, quality="excellent")])
        uplink = make_uplink(sandbox, token_file, outbox, token_poll_s=0.1)
        errors: list[str] = []
        with caplog.at_level(logging.DEBUG):
            await drain(uplink, outbox)
            sandbox.revoke_token(TOKEN)
            outbox.put_many([reading(n) for n in range(10, 12)])
            await uplink.flush(5)
            token_file.chmod(0o644)
            try:
                uplink.token_provider.load()
            except ConfigError as exc:
                errors.append(str(exc))
            try:
                from agent.uplink._http import exchange

                await exchange(
                    uplink._http(),
                    "GET",
                    sandbox.base_url + "/api/v1/assets",
                    SecretStr(TOKEN),
                )
            except UplinkError as exc:
                errors.append(str(exc))
                errors.append(repr(exc))
            await uplink.close()
        settings = UplinkSettings(token=SecretStr(TOKEN))
        captured = capsys.readouterr()
        texts = [
            caplog.text,
            captured.out,
            captured.err,
            repr(uplink),
            repr(uplink.token_provider),
            repr(settings),
            str(settings),
            repr(sandbox),
            *errors,
        ]
        assert len(errors) == 3
        assert "chmod 600" in errors[0]
        assert caplog.records
        for text in texts:
            assert TOKEN not in text


class TestUplinkMaintenanceRequests:
    def request(self, event: str, title: str = "Outer race defect") -> OutboxItem:
        return OutboxItem(
            kind="maintenance_request",
            priority=Priority.ALARM,
            payload={
                "asset": "pump-1",
                "priority": "high",
                "title": title,
                "description": "BPFO harmonics 12 dB over the noise floor",
                "source_event_id": event,
            },
        )

    async def test_one_request_per_episode(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        outbox.put_many([self.request("alarm-7")])
        outbox.put_many([self.request("alarm-7")])
        outbox.put_many([self.request("alarm-8")])
        uplink = make_uplink(sandbox, token_file, outbox)
        assert await uplink.flush(10)
        await uplink.close()
        rows, _ = sandbox.store.request_page(0, 100)
        assert [r["source_event_id"] for r in rows] == ["alarm-7", "alarm-8"]
        assert rows[0]["asset_id"] == "ast-000001"
        assert outbox.stats().delivered == 3
        assert uplink.delivered_by_kind == {"maintenance_request": 3}

    async def test_invalid_request_is_dead_lettered(
        self, sandbox: SandboxApi, token_file: Path, outbox: Outbox
    ) -> None:
        outbox.put_many([self.request("alarm-9", title="x" * 121)])
        uplink = make_uplink(sandbox, token_file, outbox)
        assert await uplink.flush(10)
        await uplink.close()
        assert outbox.stats().dead_lettered == 1
        assert "invalid_title" in outbox.dead_letters()[0].reason


class TestUplinkOutage:
    async def test_backlog_drains_by_priority(
        self, sandbox: SandboxApi, token_file: Path, tmp_path: Path
    ) -> None:
        per_item = len(json.dumps(reading(0).payload, separators=(",", ":")))
        box = Outbox(tmp_path / "capped.db", max_bytes=400 * (per_item + 64))
        sandbox.fail_next(1_000_000, 503, path=MEASUREMENTS)
        uplink = make_uplink(sandbox, token_file, box)
        produced = 0
        names = {
            Priority.SUMMARY: "summary",
            Priority.INDICATOR: "indicator",
            Priority.ALARM: "alarm",
        }
        for hour in range(30):
            batch = [
                reading(hour * 100 + n, priority=p, name=names[p])
                for n in range(20)
                for p in Priority
            ]
            box.put_many(batch)
            produced += len(batch)
            await uplink.flush(5)
        sandbox.clear_faults()
        held = box.stats()
        await drain(uplink, box)
        stats = box.stats()
        rows = stored(sandbox)
        box.close()

        assert held.evicted > 0
        assert stats.delivered + stats.evicted == produced
        assert stats.dead_lettered == 0
        assert len(rows) == stats.delivered
        ranks = {v: int(k) for k, v in names.items()}
        first_batch = 3 * 20  # leased in the first hour, before any eviction
        later = [ranks[r["name"]] for r in rows[first_batch:]]
        assert later == sorted(later, reverse=True)
