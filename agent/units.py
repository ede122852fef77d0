"""Parsing of human-written durations and sizes used in configuration."""

from __future__ import annotations

import math
import re
from typing import Annotated, Final

from pydantic import BeforeValidator

_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS: Final = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_NUMBER_UNIT: Final = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def describe_boolean(value: bool) -> str:
    """Return ``a boolean (true)``: how messages show a TOML boolean."""
    return f"a boolean ({'true' if value else 'false'})"


def parse_duration_s(value: object) -> float:
    """Return seconds for ``"30s"``, ``"5m"``, ``"250ms"``, ``"1h"`` or a number.

    A bare number is seconds.

    Raises:
        ValueError: the value is not a finite, non-negative number or a
            number with a known unit. TOML's ``nan`` and ``inf`` are
            rejected.
    """
    if isinstance(value, bool):
        raise ValueError(
            "expected a duration such as '30s' or '5m', found "
            + describe_boolean(value)
        )
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite duration, found {value!r}")
        if value < 0:
            raise ValueError(f"expected a duration of 0 or more, found {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if match and match.group(2).lower() in {*_DURATION_UNITS, ""}:
            unit = match.group(2).lower() or "s"
            return float(match.group(1)) * _DURATION_UNITS[unit]
    raise ValueError(
        f"expected a duration such as '30s', '5m', '250ms' or '1h', found {value!r}"
    )


def parse_positive_duration_s(value: object) -> float:
    """Return seconds like :func:`parse_duration_s`, rejecting a zero duration.

    Raises:
        ValueError: the value is not a duration, or it is zero.
    """
    seconds = parse_duration_s(value)
    if seconds == 0:
        raise ValueError(f"expected a duration greater than 0, found {value!r}")
    return seconds


def parse_size_bytes(value: object) -> int:
    """Return bytes for ``"200MB"``, ``"1GiB"``, ``"512kB"`` or a number of bytes.

    Raises:
        ValueError: the text is not a non-negative number with a known unit.
    """
    if isinstance(value, bool):
        raise ValueError(
            f"expected a size such as '200MB', found {describe_boolean(value)}"
        )
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value)
        if match and match.group(2).lower() in {*_SIZE_UNITS, ""}:
            unit = match.group(2).lower() or "b"
            return int(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(
        f"expected a size such as '200MB', '1GiB' or a number of bytes, found {value!r}"
    )


DurationS = Annotated[float, BeforeValidator(parse_duration_s)]
"""A duration in seconds, written as ``"30s"``, ``"5m"`` or a number."""

PositiveDurationS = Annotated[float, BeforeValidator(parse_positive_duration_s)]
"""A duration in seconds that must be greater than zero, such as an interval
that is waited out in a loop or a timeout."""

SizeBytes = Annotated[int, BeforeValidator(parse_size_bytes)]
"""A size in bytes, written as ``"200MB"``, ``"1GiB"`` or a number."""
