"""Core records shared by every driver and consumed by the agent.

Every value a driver produces carries a :class:`Quality`. A bad value is kept
and reported with its reason; it is never dropped or replaced by zero.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import Final, NamedTuple, Protocol, overload, runtime_checkable

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

    Unlike the other records, a reading is a named tuple: it is built for
    every point of every poll, and a named tuple is immutable and cheaper
    to construct. Built from a row of fields, as :class:`ReadingBatch`
    does, one takes 0.15 µs against 1.0 µs for a frozen dataclass
    (``timeit``, Python 3.11, the machine of ``docs/benchmarks.md``).
    """

    asset: str
    point: str
    timestamp: datetime
    value: ScalarValue
    unit: str
    quality: Quality = GOOD
    source: str = ""


_new_tuple: Final = tuple.__new__
"""Builds a reading from a row of fields without the keyword handling of
the named tuple's own constructor, which would double the cost."""


class ReadingBatch(Sequence[Reading]):
    """The readings of one poll of one device, stored as columns.

    A driver that polls many points fills a batch instead of building a
    record per point. The asset, point and unit columns are fixed for the
    device and shared by all its polls, and each poll adds a timestamp, a
    value and a quality per point. Indexing and iteration build
    :class:`Reading` records on demand, so a consumer gets an ordinary
    read-only sequence of readings, and one that needs only a column
    reads it without building any.

    The column lists are owned by the batch once it is built: the driver
    that fills them does not change them afterwards.

    Raises:
        ValueError: the columns differ in length.
    """

    __slots__ = (
        "assets",
        "points",
        "qualities",
        "source",
        "timestamps",
        "units",
        "values",
    )

    def __init__(
        self,
        *,
        assets: Sequence[str],
        points: Sequence[str],
        units: Sequence[str],
        source: str,
        timestamps: Sequence[datetime],
        values: Sequence[ScalarValue],
        qualities: Sequence[Quality],
    ) -> None:
        size = len(values)
        if not (
            len(assets)
            == len(points)
            == len(units)
            == len(timestamps)
            == len(qualities)
            == size
        ):
            lengths = {
                "assets": len(assets),
                "points": len(points),
                "units": len(units),
                "timestamps": len(timestamps),
                "values": size,
                "qualities": len(qualities),
            }
            raise ValueError(f"expected columns of one length, found {lengths}")
        self.assets = assets
        self.points = points
        self.units = units
        self.source = source
        self.timestamps = timestamps
        self.values = values
        self.qualities = qualities

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> Reading: ...

    @overload
    def __getitem__(self, index: slice) -> list[Reading]: ...

    def __getitem__(self, index: int | slice) -> Reading | list[Reading]:
        if isinstance(index, slice):
            return list(self)[index]
        return Reading(
            self.assets[index],
            self.points[index],
            self.timestamps[index],
            self.values[index],
            self.units[index],
            self.qualities[index],
            self.source,
        )

    def __iter__(self) -> Iterator[Reading]:
        rows = zip(
            self.assets,
            self.points,
            self.timestamps,
            self.values,
            self.units,
            self.qualities,
            repeat(self.source),
        )
        return map(_new_tuple, repeat(Reading), rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReadingBatch({list(self)!r})"


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
    ones included, as a list or a :class:`ReadingBatch`. It raises
    :class:`drivers.errors.DriverError` only when the device cannot be
    reached at all.
    """

    device_id: str

    async def connect(self) -> None: ...

    async def read_points(self) -> Sequence[Reading]: ...

    async def read_waveform(self, name: str) -> Waveform: ...

    async def close(self) -> None: ...
