"""HTTP exchange with the integration API and the mapping of its answers
onto the ``UplinkError`` tree."""

from __future__ import annotations

import json
import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp
from pydantic import SecretStr

from agent.errors import (
    UplinkAuthError,
    UplinkRateLimitedError,
    UplinkRejectedError,
    UplinkUnavailableError,
)
from agent.settings import UplinkSettings

MAX_REPLY_BYTES: Final = 1 << 20
"""Longest response body read; the API's responses are a few kilobytes."""

_DELAY_SECONDS: Final = re.compile(r"[0-9]+")
"""``delay-seconds`` of RFC 9110. ``str.isdigit`` would also accept
digits such as ``"²"`` that ``float`` rejects."""


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes | None:
    """Return the body, or None when it exceeds ``MAX_REPLY_BYTES``."""
    if (resp.content_length or 0) > MAX_REPLY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A successful answer: 200, 201 or 207, with its JSON document."""

    status: int
    document: Any


def parse_retry_after(
    value: str | None, *, now: datetime | None = None
) -> float | None:
    """Return the seconds to wait for a ``Retry-After`` header value.

    Both forms of RFC 9110 are accepted: a whole number of seconds, or an
    HTTP date (a date in the past means 0). The result is never negative
    and has no upper bound: a number too large for a float returns
    ``math.inf``, so the caller must cap the wait. Returns None for a
    missing or unreadable value, such as a negative or fractional number,
    and never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError):
        # OverflowError comes from a year too large for a C integer.
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def ssl_context(settings: UplinkSettings) -> ssl.SSLContext:
    """Build the TLS context: system CAs or ``ca_file``, verification on
    unless ``verify_tls`` is false."""
    ca_file = str(settings.ca_file) if settings.ca_file else None
    context = ssl.create_default_context(cafile=ca_file)
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_error(document: Any, status: int) -> str:
    """Return ``code: message (field)`` from an error body, or the status."""
    error = document.get("error") if isinstance(document, Mapping) else None
    if not isinstance(error, Mapping):
        return f"HTTP {status}"
    text = f"{error.get('code', 'error')}: {error.get('message', '')}"
    if error.get("field"):
        text += f" (field {error['field']})"
    return text


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: SecretStr,
    *,
    body: bytes | None = None,
    idempotency_key: str | None = None,
) -> Reply:
    """Send one request and return its answer.

    Raises:
        UplinkAuthError: 401 or 403.
        UplinkRateLimitedError: 429, with the uncapped wait from
            ``Retry-After``, or NaN when it is missing or unreadable.
        UplinkRejectedError: 400, 409 or 422; retrying cannot help.
        UplinkUnavailableError: a network failure, a timeout, 5xx or any
            other status, since those may clear up.
    """
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    where = f"{method} {url}"
    try:
        async with session.request(method, url, data=body, headers=headers) as resp:
            raw = await _read_capped(resp)
            status, retry_after = resp.status, resp.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        cause = type(exc).__name__
        raise UplinkUnavailableError(f"{where} failed: {cause}") from None
    if raw is None:
        raise UplinkUnavailableError(
            f"{where} failed: expected a response of at most {MAX_REPLY_BYTES} "
            "bytes, found a longer one"
        )

    try:
        document = json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        document = None
    if status in (200, 201, 207):
        return Reply(status=status, document=document)

    detail = describe_error(document, status)
    message = f"{where} returned {status}: {detail}"
    if status in (401, 403):
        raise UplinkAuthError(message, status=status)
    if status == 429:
        wait_s = parse_retry_after(retry_after)
        raise UplinkRateLimitedError(
            message, retry_after_s=math.nan if wait_s is None else wait_s
        )
    if status in (400, 409, 422):
        raise UplinkRejectedError(message, status=status)
    raise UplinkUnavailableError(message, status=status)
