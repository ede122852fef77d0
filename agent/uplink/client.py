"""The uplink: delivers the outbox to the integration API.

One task runs :meth:`Uplink.run`. Each step leases one batch from the
outbox, maintenance requests before measurements, sends it and settles it:

* 200 acknowledges everything, 207 acknowledges the accepted items and
  dead-letters the rejected indices with the API's reason;
* 400, 409 and 422 dead-letter the batch, because resending cannot help;
* 401 and 403 stop delivery with everything kept (``reauth_required``)
  until a new token is loaded, so a revoked token causes no retry storm;
* 429 waits ``Retry-After``, capped at ``retry_max``, plus jitter. A
  missing or unreadable ``Retry-After``, 5xx, timeouts and network
  errors wait an exponential backoff with jitter, capped at ``retry_max``;
* a 2xx response that is not the documented JSON (HTML from a proxy, a body
  cut short or over ``MAX_REPLY_BYTES``, no integer ``accepted``, a
  rejected index outside the batch, counts that do not add up) is retried
  like a 5xx. The API may have stored the batch, and a replay with the
  same key stores nothing twice, whereas a dead letter could drop data
  the API never received.

A batch that is retried keeps its idempotency key and request body (both
stored in the outbox), so a request the API committed but never answered
is replayed, not stored twice. Outbox calls are made from the event loop
thread; each is one short SQLite transaction.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from pydantic import SecretStr

from agent.errors import (
    ConfigError,
    OutboxError,
    UplinkAuthError,
    UplinkError,
    UplinkRateLimitedError,
    UplinkRejectedError,
    UplinkUnavailableError,
)
from agent.outbox import LeasedItem, Outbox
from agent.settings import UplinkSettings
from agent.uplink._http import Reply, exchange, ssl_context
from agent.uplink.token import TokenProvider
from drivers.backoff import Backoff

logger = logging.getLogger(__name__)

MEASUREMENT: Final = "measurement"
MAINTENANCE_REQUEST: Final = "maintenance_request"
ASSET_PAGE_LIMIT: Final = 500


class UplinkState(enum.Enum):
    """State of the delivery loop."""

    OK = "ok"
    RETRYING = "retrying"
    REAUTH_REQUIRED = "reauth_required"
    DISABLED = "disabled"


class Uplink:
    """The integration API client.

    Args:
        settings: the uplink settings.
        outbox: where the items to deliver wait.
        asset_tags: local asset id to remote asset tag; an asset missing
            here is looked up under its local id.
        token_provider: where the bearer token comes from.
        token_poll_s: how often the token is read again while
            ``reauth_required``.
        idle_poll_s: how long to wait when the outbox is empty.
        rng: source of jitter; seed it for reproducible tests.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        asset_tags: Mapping[str, str],
        token_provider: TokenProvider,
        *,
        token_poll_s: float = 30.0,
        idle_poll_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.asset_tags = dict(asset_tags)
        self.token_provider = token_provider
        self.token_poll_s = token_poll_s
        self.idle_poll_s = idle_poll_s
        self.last_delivery: datetime | None = None
        self.delivered_count = 0
        self.delivered_by_kind: dict[str, int] = {}
        """Items accepted by the API, by outbox kind (``measurement``,
        ``maintenance_request``); ``delivered_count`` is their sum."""

        endpoint = getattr(settings, settings.environment)
        self.base_url: str | None = endpoint.base_url
        self._rng = rng or random.Random()
        first_retry_s = max(0.01, min(1.0, settings.retry_max))
        self._backoff = Backoff(
            first_retry_s, max(first_retry_s, settings.retry_max), rng=self._rng
        )
        self._state = UplinkState.OK
        if not settings.enabled or not self.base_url:
            self._state = UplinkState.DISABLED
        self._token: SecretStr | None = None
        self._rejected_token: SecretStr | None = None
        self._token_changed = asyncio.Event()
        self._items_stored = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._remote_ids: dict[str, str] = {}
        self._assets_loaded_at: float | None = None
        self._refreshed_for: set[str] = set()
        self._unmapped_logged: set[str] = set()
        self._next_write_at = 0.0
        self._retrying_since: float | None = None

    def __repr__(self) -> str:
        return (
            f"Uplink(base_url={self.base_url!r}, state={self._state.value!r},"
            f" delivered_count={self.delivered_count})"
        )

    @property
    def state(self) -> UplinkState:
        """``ok``, ``retrying``, ``reauth_required`` or ``disabled``."""
        return self._state

    # --- lifecycle -------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; errors never end the loop."""
        if self._state is UplinkState.DISABLED:
            logger.info("uplink.disabled base_url=%s", self.base_url)
            return
        logger.info("uplink.started base_url=%s", self.base_url)
        if not self.settings.verify_tls:
            logger.warning("uplink.tls_unverified base_url=%s", self.base_url)
        try:
            while not stop.is_set():
                if self._state is UplinkState.REAUTH_REQUIRED:
                    await self._wait_for_token(stop)
                    continue
                try:
                    wait_s = await self._step()
                except OutboxError as exc:
                    logger.error("uplink.outbox_failed cause=%s", exc)
                    wait_s = self.idle_poll_s
                except Exception:
                    # A defect in one step must not end delivery until the
                    # next restart: the batch stays leased in the outbox and
                    # is sent again, with its key, once the lease expires.
                    logger.exception("uplink.step_failed")
                    wait_s = self._backoff.next_delay()
                # Only an idle wait ends early when new items are stored; a
                # retry backoff runs its course whatever arrives meanwhile.
                idle = wait_s is None
                if wait_s is None:
                    wait_s = self.idle_poll_s
                if wait_s > 0:
                    await self._sleep(wait_s, stop, wake_on_stored=idle)
        finally:
            await self.close()
            logger.info("uplink.stopped delivered=%d", self.delivered_count)

    async def flush(self, timeout_s: float) -> bool:
        """Deliver what the outbox contains now, for at most ``timeout_s``.

        Stops at the first failure instead of waiting to retry.

        Returns:
            True when nothing deliverable is left.
        """
        if self._state in (UplinkState.DISABLED, UplinkState.REAUTH_REQUIRED):
            return False
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    wait_s = await self._step()
                    if wait_s is None:
                        return True
                    if wait_s > 0 or self._state is UplinkState.REAUTH_REQUIRED:
                        return False
        except TimeoutError:
            logger.warning("uplink.flush_timed_out timeout_s=%s", timeout_s)
            return False

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def reload_token(self) -> bool:
        """Read the token again, after SIGHUP or ``cmagent token set``.

        Delivery resumes with the new token even when it was stopped by a
        401. Returns False (and logs why) when no usable token is found.
        """
        try:
            token = self.token_provider.load()
        except ConfigError as exc:
            logger.warning("uplink.token_unavailable cause=%s", exc)
            return False
        self._token = token
        self._rejected_token = None
        if self._state is UplinkState.REAUTH_REQUIRED:
            self._state = UplinkState.OK
            logger.info("uplink.token_reloaded source=%s", self.token_provider.source)
        self._token_changed.set()
        return True

    # --- the delivery step -----------------------------------------------

    async def _step(self) -> float | None:
        """Deliver one batch.

        Returns:
            Seconds to wait before the next step (0 for none), or None
            when there was nothing to deliver.
        """
        leased: Sequence[LeasedItem] = ()
        try:
            token = self._current_token()
            if self._assets_due():
                await self._refresh_assets(token)
            for kind, limit in (
                (MAINTENANCE_REQUEST, 1),
                (MEASUREMENT, self.settings.batch_size),
            ):
                leased = self.outbox.lease(kind, limit, self._lease_s())
                if leased:
                    return await self._deliver(kind, leased, token)
            return None
        except UplinkError as exc:
            return self._schedule_retry(exc, leased)

    def _current_token(self) -> SecretStr:
        if self._token is None:
            try:
                self._token = self.token_provider.load()
            except ConfigError as exc:
                raise UplinkAuthError(f"no usable uplink token: {exc}") from None
        return self._token

    def _lease_s(self) -> float:
        return max(60.0, 3 * self.settings.request_timeout)

    async def _deliver(
        self, kind: str, leased: Sequence[LeasedItem], token: SecretStr
    ) -> float:
        if kind == MAINTENANCE_REQUEST:
            item = leased[0]
            body = self._request_body(item)
            key = str(item.payload.get("source_event_id") or item.batch_key)
            path = self.settings.maintenance_requests_path
        else:
            key = leased[0].batch_key
            path = self.settings.measurements_path
            body = self.outbox.batch_body(key)
            if body is None:
                body = await self._measurement_body(leased, token)
                if body is None:
                    return 0.0
                self.outbox.save_batch_body(key, body)

        try:
            await self._pace_writes()
            reply = await exchange(
                self._http(),
                "POST",
                self._url(path),
                token,
                body=body,
                idempotency_key=key,
            )
        except UplinkRejectedError as exc:
            self._reject_all(kind, leased, exc)
            return 0.0
        self._settle(kind, leased, reply)
        return 0.0

    def _settle(self, kind: str, leased: Sequence[LeasedItem], reply: Reply) -> None:
        """Acknowledge items and dead-letter those the response rejects.

        Raises:
            UplinkUnavailableError: the response is not the documented JSON,
                so nothing is settled and the batch is retried.
        """
        rejected: dict[int, str] = {}
        if kind == MEASUREMENT:
            rejected = _rejected_indices(reply, len(leased))
        elif not isinstance(reply.document, Mapping):
            raise UplinkUnavailableError(
                f"response to a {kind}: expected a JSON object, found "
                f"{_shape(reply.document)}",
                status=reply.status,
            )
        accepted = [i.id for n, i in enumerate(leased) if n not in rejected]
        self.outbox.ack(accepted)
        if rejected:
            self.outbox.dead_letter_many(
                [(leased[n].id, reason) for n, reason in rejected.items()]
            )
            logger.warning(
                "uplink.items_rejected kind=%s rejected=%d first_reason=%s",
                kind,
                len(rejected),
                next(iter(rejected.values())),
            )

        self.delivered_count += len(accepted)
        self.delivered_by_kind[kind] = self.delivered_by_kind.get(kind, 0) + len(
            accepted
        )
        self.last_delivery = datetime.now(UTC)
        self._backoff.reset()
        if self._retrying_since is not None:
            downtime_s = time.monotonic() - self._retrying_since
            logger.info("uplink.recovered downtime_s=%.1f", downtime_s)
            self._retrying_since = None
        self._state = UplinkState.OK
        logger.debug(
            "uplink.batch_delivered kind=%s accepted=%d rejected=%d status=%d",
            kind,
            len(accepted),
            len(rejected),
            reply.status,
        )

    def _reject_all(
        self, kind: str, leased: Sequence[LeasedItem], exc: UplinkRejectedError
    ) -> None:
        logger.error(
            "uplink.batch_rejected kind=%s items=%d status=%s cause=%s",
            kind,
            len(leased),
            exc.status,
            exc,
        )
        self.outbox.dead_letter_many([(i.id, str(exc)) for i in leased])

    def _schedule_retry(self, exc: UplinkError, leased: Sequence[LeasedItem]) -> float:
        ids = [i.id for i in leased]
        if isinstance(exc, UplinkAuthError):
            if ids:
                self.outbox.retry(ids, 0.0)
            self._enter_reauth(exc)
            return 0.0

        if isinstance(exc, UplinkRateLimitedError) and not math.isnan(
            exc.retry_after_s
        ):
            wait_s = self._rate_limit_wait(exc.retry_after_s)
        else:
            wait_s = self._backoff.next_delay()
        if ids:
            self.outbox.retry(ids, wait_s)
        if self._retrying_since is None:
            self._retrying_since = time.monotonic()
        self._state = UplinkState.RETRYING
        logger.warning(
            "uplink.retry_scheduled wait_s=%.2f status=%s items=%d cause=%s",
            wait_s,
            exc.status,
            len(ids),
            exc,
        )
        return wait_s

    def _rate_limit_wait(self, requested_s: float) -> float:
        """Compute the wait after a 429 whose ``Retry-After`` is ``requested_s``.

        A request longer than ``retry_max`` is cut to it and logged, so an API
        or proxy that requests a day cannot stop delivery for a day while the
        outbox fills. Jitter of up to 10 % of the capped wait, at least 0.2 s,
        keeps gateways from retrying in lockstep.
        """
        max_s = self.settings.retry_max
        base_s = min(requested_s, max_s)
        wait_s = base_s + self._rng.uniform(0.0, max(0.2, 0.1 * base_s))
        if requested_s > max_s:
            logger.warning(
                "uplink.retry_after_capped requested_s=%g wait_s=%.2f retry_max_s=%g",
                requested_s,
                wait_s,
                max_s,
            )
        return wait_s

    def _enter_reauth(self, exc: UplinkAuthError) -> None:
        self._rejected_token = self._token
        self._token = None
        self._token_changed.clear()
        self._state = UplinkState.REAUTH_REQUIRED
        logger.warning(
            "uplink.reauth_required status=%s cause=%s; delivery paused, items"
            " kept; store a new token with `cmagent token set` and reload",
            exc.status,
            exc,
        )

    async def _wait_for_token(self, stop: asyncio.Event) -> None:
        """Wait for ``reload_token`` or a changed token source."""
        await self._sleep(self.token_poll_s, stop)
        if self._state is not UplinkState.REAUTH_REQUIRED or stop.is_set():
            return
        try:
            token = self.token_provider.load()
        except ConfigError:
            return
        rejected = self._rejected_token
        if rejected is None or (
            token.get_secret_value() != rejected.get_secret_value()
        ):
            self._token = token
            self._rejected_token = None
            self._state = UplinkState.OK
            logger.info("uplink.token_changed source=%s", self.token_provider.source)

    def notify_stored(self) -> None:
        """Wake an idle delivery loop because new items are in the outbox.

        Call it from the event loop thread after a write to the outbox, so
        delivery latency does not wait for the idle poll.
        """
        self._items_stored.set()

    async def _sleep(
        self, seconds: float, stop: asyncio.Event, *, wake_on_stored: bool = False
    ) -> None:
        """Sleep, waking early for ``stop``, a reloaded token or, when
        ``wake_on_stored``, new items in the outbox."""
        self._items_stored.clear()
        waiters = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._token_changed.wait()),
        ]
        if wake_on_stored:
            waiters.append(asyncio.ensure_future(self._items_stored.wait()))
        try:
            await asyncio.wait(
                waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._token_changed.clear()

    async def _pace_writes(self) -> None:
        """Keep writes under ``max_requests_per_s``."""
        now = time.monotonic()
        if self._next_write_at > now:
            await asyncio.sleep(self._next_write_at - now)
        interval = 1.0 / self.settings.max_requests_per_s
        self._next_write_at = max(now, self._next_write_at) + interval

    # --- request bodies --------------------------------------------------

    async def _measurement_body(
        self, leased: Sequence[LeasedItem], token: SecretStr
    ) -> bytes | None:
        """Build the batch body; dead-letter items that cannot be sent and
        return None, so the rest forms a new batch."""
        locals_ = {self._local_asset(i) for i in leased}
        unmapped = {a for a in locals_ if self._remote_id(a) is None}
        if unmapped - self._refreshed_for:
            self._refreshed_for |= unmapped
            await self._refresh_assets(token)

        unsendable: list[tuple[int, str]] = []
        items: list[dict[str, Any]] = []
        for item in leased:
            reason = self._unsendable_reason(item)
            if reason is not None:
                unsendable.append((item.id, reason))
                continue
            items.append(self._measurement_item(item))
        if unsendable:
            self.outbox.dead_letter_many(unsendable)
            return None
        return json.dumps({"items": items}, separators=(",", ":")).encode()

    def _unsendable_reason(self, item: LeasedItem) -> str | None:
        local = self._local_asset(item)
        if self._remote_id(local) is None:
            tag = self.asset_tags.get(local, local)
            if local not in self._unmapped_logged:
                self._unmapped_logged.add(local)
                logger.warning(
                    "uplink.asset_unmapped asset=%s tag=%s; its measurements"
                    " are dead-lettered until the API lists the tag",
                    local,
                    tag,
                )
            return f"asset {local!r}: tag {tag!r} not found in the API's assets"
        value = item.payload.get("value")
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"value {value!r} is not a finite number"
        return None

    def _measurement_item(self, item: LeasedItem) -> dict[str, Any]:
        payload = item.payload
        quality = str(payload.get("quality", "good")).split("/", 1)[0]
        return {
            "asset_id": self._remote_id(self._local_asset(item)),
            "name": payload.get("name"),
            "value": payload.get("value"),
            "unit": payload.get("unit", ""),
            "timestamp": payload.get("timestamp"),
            "quality": quality,
        }

    def _request_body(self, item: LeasedItem) -> bytes:
        payload = item.payload
        local = str(payload.get("asset", ""))
        document = {
            "asset_id": self._remote_id(local) or local,
            "priority": payload.get("priority"),
            "title": payload.get("title"),
            "description": payload.get("description", ""),
            "source_event_id": payload.get("source_event_id"),
        }
        return json.dumps(document, separators=(",", ":")).encode()

    # --- assets ----------------------------------------------------------

    def _local_asset(self, item: LeasedItem) -> str:
        return str(item.payload.get("asset", ""))

    def _remote_id(self, local: str) -> str | None:
        return self._remote_ids.get(self.asset_tags.get(local, local))

    def _assets_due(self) -> bool:
        loaded = self._assets_loaded_at
        return loaded is None or (
            time.monotonic() - loaded >= self.settings.asset_refresh_interval
        )

    async def _refresh_assets(self, token: SecretStr) -> None:
        """Walk every page of the asset list and rebuild tag → remote id."""
        remote_ids: dict[str, str] = {}
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            query = f"?limit={ASSET_PAGE_LIMIT}"
            if cursor:
                query += f"&cursor={cursor}"
            reply = await exchange(
                self._http(),
                "GET",
                self._url(self.settings.assets_path) + query,
                token,
            )
            page = reply.document
            data = page.get("data") if isinstance(page, Mapping) else None
            cursor = page.get("next_cursor") if isinstance(page, Mapping) else None
            if not isinstance(data, list) or not isinstance(cursor, str | None):
                raise UplinkUnavailableError(
                    'asset page: expected {"data": [...], "next_cursor": '
                    f"string or null}}, found {_shape(page)}",
                    status=reply.status,
                )
            for asset in data:
                if not isinstance(asset, Mapping):
                    continue
                if asset.get("tag") is not None and asset.get("id") is not None:
                    remote_ids[str(asset["tag"])] = str(asset["id"])
            if not cursor:
                break
            if cursor in seen:
                raise UplinkUnavailableError(
                    f"asset pages: cursor {cursor[:40]!r} returned twice; "
                    "expected each page once",
                    status=reply.status,
                )
            seen.add(cursor)
        self._remote_ids = remote_ids
        self._assets_loaded_at = time.monotonic()
        logger.info("uplink.assets_loaded count=%d", len(remote_ids))

    # --- HTTP ------------------------------------------------------------

    def _url(self, path: str) -> str:
        assert self.base_url is not None
        return self.base_url.rstrip("/") + path

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout)
            ssl_option: Any = None
            if self.base_url and self.base_url.startswith("https:"):
                ssl_option = ssl_context(self.settings)
            connector = aiohttp.TCPConnector(ssl=ssl_option or True, limit=4)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        return self._session


def _shape(document: object) -> str:
    if document is None:
        return "no JSON"
    return f"JSON {type(document).__name__}"


def _rejected_indices(reply: Reply, size: int) -> dict[int, str]:
    """Return the rejected batch indices and reasons of a measurements response.

    Raises:
        UplinkUnavailableError: the response lacks an integer ``accepted``, a
            ``rejected`` entry is malformed or its index lies outside the
            batch, or the counts do not add up to the batch size.
    """

    def invalid(found: str) -> UplinkUnavailableError:
        return UplinkUnavailableError(
            f"response to a batch of {size} measurements: expected "
            f'{{"accepted": N, "rejected": [{{"index", "error"}}]}}, found {found}',
            status=reply.status,
        )

    document = reply.document
    if not isinstance(document, Mapping):
        raise invalid(_shape(document))
    accepted = document.get("accepted")
    entries = document.get("rejected", [])
    if not isinstance(accepted, int) or isinstance(accepted, bool):
        raise invalid(f"accepted={accepted!r}")
    if not isinstance(entries, list):
        raise invalid(f"rejected of type {type(entries).__name__}")

    rejected: dict[int, str] = {}
    for entry in entries:
        index = entry.get("index") if isinstance(entry, Mapping) else None
        if not isinstance(index, int) or not 0 <= index < size or index in rejected:
            raise invalid(f"rejected entry {entry!r}"[:200])
        rejected[index] = _reason(entry.get("error"))
    if reply.status == 200 and rejected:
        raise invalid(f"status 200 with {len(rejected)} rejected")
    if accepted + len(rejected) != size:
        raise invalid(f"accepted={accepted} and {len(rejected)} rejected")
    return rejected


def _reason(error: object) -> str:
    if isinstance(error, Mapping):
        text = f"{error.get('code', 'rejected')}: {error.get('message', '')}"
        if error.get("field"):
            text += f" (field {error['field']})"
        return text
    return str(error)
