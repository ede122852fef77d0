"""MQTT topics and JSON payloads for live readings, health and alarms.

Topics are ``{prefix}/{gateway}/{asset}/{point}`` for readings and
``{prefix}/{gateway}/{asset}/health`` and ``…/alarm`` for indicators and
alarm state. Every payload is a JSON object with ``ts`` in ISO 8601 UTC
ending in ``Z``. JSON never carries NaN or infinity: a non-finite number is
sent as ``null``.
"""

from __future__ import annotations

import enum
import json
import math
import numbers
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from drivers.base import Quality, QualityReason, Reading

_TOPIC_LEVEL: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RESERVED_POINTS: Final = frozenset({"health", "alarm", "status", "cmd"})
"""Point names that would collide with the agent's own topics."""


def format_timestamp(timestamp: datetime) -> str:
    """Format a timezone-aware time as ISO 8601 UTC with a ``Z`` suffix.

    Raises:
        ValueError: the time is naive, so its zone is unknown.
    """
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError(
            f"expected a timezone-aware timestamp, found naive {timestamp!r}"
        )
    text = timestamp.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def check_topic_level(field: str, value: str) -> str:
    """Return ``value`` if it is safe as one MQTT topic level.

    Raises:
        ValueError: the value is empty, too long, or contains ``/``, ``+``,
            ``#`` or another character outside ``A-Za-z0-9_.-``.
    """
    if not _TOPIC_LEVEL.match(value):
        raise ValueError(
            f"{field}: expected 1-64 characters from A-Za-z0-9_.- starting "
            f"with a letter or digit, found {value!r}"
        )
    return value


def reading_topic(prefix: str, gateway: str, reading: Reading) -> str:
    """Build the topic of a live reading.

    Raises:
        ValueError: the asset or point is not a valid topic level, or the
            point is one of :data:`RESERVED_POINTS`.
    """
    asset = check_topic_level("reading.asset", reading.asset)
    point = check_topic_level("reading.point", reading.point)
    if point in RESERVED_POINTS:
        raise ValueError(
            f"reading.point: {point!r} is reserved for the agent's own "
            f"topics ({', '.join(sorted(RESERVED_POINTS))})"
        )
    return f"{prefix}/{gateway}/{asset}/{point}"


def asset_topic(prefix: str, gateway: str, asset: str, kind: str) -> str:
    """Build ``{prefix}/{gateway}/{asset}/{kind}`` for ``health`` or ``alarm``."""
    check_topic_level("asset", asset)
    return f"{prefix}/{gateway}/{asset}/{kind}"


def encode_reading(reading: Reading) -> bytes:
    """Encode a reading as JSON with ``ts``, ``value``, ``unit``, ``quality``.

    A non-finite float is sent as ``null``, and a good quality becomes
    ``bad/decode_error`` because the number cannot be trusted. An uncertain
    or bad quality is kept as it is.

    Raises:
        ValueError: the reading's timestamp is naive.
    """
    value = reading.value
    quality = reading.quality
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)
        if not math.isfinite(value):
            value = None
            if quality.is_good:
                quality = Quality.bad(QualityReason.DECODE_ERROR, "non-finite value")

    body = {
        "ts": format_timestamp(reading.timestamp),
        "value": value,
        "unit": reading.unit,
        "quality": quality.label(),
    }
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def encode_fields(fields: Mapping[str, object], *, now: datetime) -> bytes:
    """Encode health or alarm fields as a JSON object.

    ``ts`` is added from ``now`` unless the fields contain it. Non-finite
    floats anywhere in the fields become ``null``; datetimes become ISO 8601
    UTC text and enums their value.

    Raises:
        TypeError: a field contains a value JSON cannot represent.
        ValueError: a datetime in the fields is naive.
    """
    body = {"ts": format_timestamp(now), **_json_safe(fields)}
    return json.dumps(
        body, allow_nan=False, separators=(",", ":"), default=_encode_other
    ).encode()


def _json_safe(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value


def _encode_other(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, Quality):
        return value.label()
    raise TypeError(
        f"expected JSON-compatible field values, found {type(value).__name__}"
    )
