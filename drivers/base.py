"""Core records shared by every driver and consumed by the agent.

Every value a driver produces carries a :class:`Quality`. A bad value is kept
and reported with its reason; it is never dropped or replaced by zero.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, NamedTuple, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


class QualityStatus(enum.Enum):
    """OPC-style quality of one value."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class QualityReason(enum.Enum):
    """Reason a value is not good."""

    COMM_ERROR = "comm_error"
    TIMEOUT = "timeout"
    DECODE_ERROR = "decode_error"
    OUT_OF_RANGE = "out_of_range"
    STALE = "stale"
    SENSOR_FAULT = "sensor_fault"


@dataclass(frozen=True, slots=True, kw_only=True)
class Quality:
    """Quality of a value: a status, and for non-good values a reason and detail."""

    status: QualityStatus
    reason: QualityReason | None = None
    detail: str = ""

    @property
    def is_good(self) -> bool:
        return self.status is QualityStatus.GOOD

    @classmethod
    def bad(cls, reason: QualityReason, detail: str = "") -> Quality:
        return cls(status=QualityStatus.BAD, reason=reason, detail=detail)

    def label(self) -> str:
        """Return ``good`` or ``status/reason``, the form used in payloads."""
        if self.reason is None:
            return self.status.value
        return f"{self.status.value}/{self.reason.value}"


GOOD: Final = Quality(status=QualityStatus.GOOD)

ScalarValue = float | int | bool | str | None


class Reading(NamedTuple):
    """One scalar value of one point of one asset.

    ``timestamp`` is timezone-aware UTC. ``value`` is None only when the
    quality is bad and no value could be decoded at all.

    Unlike the other records, a reading is a named tuple: a driver builds
    one per point on every poll, and a named tuple is immutable and
    cheaper to construct. Built from a row of fields, as the Modbus
    decoder does, one takes 0.15 µs against 1.0 µs for a frozen dataclass
    (``timeit``, Python 3.11, the machine of ``docs/benchmarks.md``).
    """

    asset: str
    point: str
    timestamp: datetime
    value: ScalarValue
    unit: str
    quality: Quality = GOOD
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Waveform:
    """One captured block of vibration samples in engineering units.

    ``samples`` is a 1-D float64 array in ``unit`` (``g`` or ``m/s2``),
    sampled at ``fs_hz``. ``rpm`` is the shaft speed at capture time when the
    sensor reports it, else None. ``sequence`` is the sensor's capture
    counter when it has one.
    """

    asset: str
    point: str
    timestamp: datetime
    fs_hz: float
    samples: NDArray[np.float64] = field(repr=False)
    unit: str = "g"
    rpm: float | None = None
    quality: Quality = GOOD
    source: str = ""
    sequence: int | None = None


@runtime_checkable
class Driver(Protocol):
    """Interface the agent needs from a device driver.

    ``read_points`` returns one :class:`Reading` per configured point, bad
    ones included, and raises :class:`drivers.errors.DriverError` only when
    the device cannot be reached at all.
    """

    device_id: str

    async def connect(self) -> None: ...

    async def read_points(self) -> list[Reading]: ...

    async def read_waveform(self, name: str) -> Waveform: ...

    async def close(self) -> None: ...
