"""Decoding the blocks the Modbus driver reads into readings.

A :class:`BlockDecoder` is built once per planned request. It sorts the
request's points into groups of one numeric type and precomputes, for each
group, where every value's bytes sit in the block, in big-endian order.
A poll then decodes a whole group with one NumPy gather, whatever the byte
and word orders, scales it in one step and checks the results together.
Points outside those groups (bits, strings, bool flags in registers) and
every value that fails a check go through :func:`decode_point`, which also
writes the quality detail.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import numpy as np
from numpy.typing import NDArray

from drivers.base import GOOD, Quality, QualityReason, Reading, ScalarValue
from drivers.codec import (
    BIG_ENDIAN_DTYPE,
    STRUCT_FORMAT,
    apply_scale,
    decode_scalar,
    decode_string,
)
from drivers.errors import DriverDecodeError
from drivers.planner import BIT_TABLES, ReadRequest, point_slice
from drivers.spec import REGISTER_COUNT, DataType, Endian, ModbusPointSpec

_GROUPED_TYPES: Final = frozenset(BIG_ENDIAN_DTYPE) - {DataType.INT64, DataType.UINT64}
"""Types decoded by group. 64-bit integers are decoded one by one, so that
their range check compares exact integers, not float64 approximations."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Group:
    """Points of one numeric type, and either all scaled or all unscaled."""

    members: tuple[int, ...]
    """Indexes of the points in the request."""
    byte_index: NDArray[np.intp]
    """Shape (points, bytes per value): block byte positions, big-endian."""
    dtype: np.dtype[np.generic]
    scale: NDArray[np.float64] | None
    offset: NDArray[np.float64] | None
    low: NDArray[np.float64]
    high: NDArray[np.float64]
    checks_range: bool


def value_byte_index(point: ModbusPointSpec, first: int) -> list[int]:
    """Return the block byte positions of a value, most significant first.

    ``first`` is the point's first register in the block.
    """
    width = REGISTER_COUNT[point.data_type]
    words = range(width)
    if point.word_order is Endian.LITTLE:
        words = range(width - 1, -1, -1)
    index = []
    for word in words:
        high = 2 * (first + word)
        pair = [high, high + 1]
        if point.byte_order is Endian.LITTLE:
            pair.reverse()
        index.extend(pair)
    return index


def _is_scaled(point: ModbusPointSpec) -> bool:
    return point.scale != 1.0 or point.offset != 0.0


class BlockDecoder:
    """Turns the registers or bits of one request into one reading per point.

    Args:
        request: the planned read.
        source: the device id written into every reading.
    """

    def __init__(self, request: ReadRequest, *, source: str) -> None:
        self.request = request
        self.source = source
        self._slices = [point_slice(request, p) for p in request.points]
        self._groups: list[_Group] = []
        self._others: list[int] = []
        if request.table in BIT_TABLES:
            self._others = list(range(len(request.points)))
            return

        keyed: dict[tuple[DataType, bool], list[int]] = {}
        for i, point in enumerate(request.points):
            if point.data_type in _GROUPED_TYPES:
                key = (point.data_type, _is_scaled(point))
                keyed.setdefault(key, []).append(i)
            else:
                self._others.append(i)
        for (data_type, scaled), members in keyed.items():
            self._groups.append(self._group(data_type, scaled, members))

    def _group(self, data_type: DataType, scaled: bool, members: list[int]) -> _Group:
        points = [self.request.points[i] for i in members]
        starts = [self._slices[i].start for i in members]
        byte_index = np.array(
            [
                value_byte_index(p, start)
                for p, start in zip(points, starts, strict=True)
            ],
            dtype=np.intp,
        )
        ranges = [p.valid_range or (-math.inf, math.inf) for p in points]
        return _Group(
            members=tuple(members),
            byte_index=byte_index,
            dtype=np.dtype(BIG_ENDIAN_DTYPE[data_type]),
            scale=np.array([p.scale for p in points]) if scaled else None,
            offset=np.array([p.offset for p in points]) if scaled else None,
            low=np.array([r[0] for r in ranges], dtype=np.float64),
            high=np.array([r[1] for r in ranges], dtype=np.float64),
            checks_range=any(p.valid_range is not None for p in points),
        )

    def decode(
        self, values: Sequence[int] | Sequence[bool], timestamp: datetime
    ) -> list[Reading]:
        """Decode one block read at ``timestamp``, in the request's point order."""
        points = self.request.points
        decoded: list[tuple[ScalarValue, Quality]] = [(None, GOOD)] * len(points)
        if self._groups:
            packed = struct.pack(f">{len(values)}H", *values)
            block = np.frombuffer(packed, dtype=np.uint8)
            for group in self._groups:
                self._decode_group(group, block, values, decoded)
        for i in self._others:
            decoded[i] = decode_point(points[i], values[self._slices[i]])

        source = self.source
        return [
            Reading(
                asset=point.asset,
                point=point.name,
                timestamp=timestamp,
                value=value,
                unit=point.unit,
                quality=quality,
                source=source,
            )
            for point, (value, quality) in zip(points, decoded, strict=True)
        ]

    def _decode_group(
        self,
        group: _Group,
        block: NDArray[np.uint8],
        values: Sequence[int] | Sequence[bool],
        decoded: list[tuple[ScalarValue, Quality]],
    ) -> None:
        raw = block[group.byte_index].view(group.dtype).ravel()
        if group.scale is not None and group.offset is not None:
            numbers = raw.astype(np.float64) * group.scale + group.offset
        else:
            # Unscaled integers stay integers, as apply_scale keeps them.
            numbers = raw.astype(np.float64) if raw.dtype.kind == "f" else raw
        checked = numbers.astype(np.float64, copy=False)
        failing = ~np.isfinite(checked)
        if group.checks_range:
            failing |= (checked < group.low) | (checked > group.high)

        for i, number in zip(group.members, numbers.tolist(), strict=True):
            decoded[i] = (number, GOOD)
        # A failing value is rare: decode it again the slow way, which
        # writes the quality detail.
        points = self.request.points
        for k in np.flatnonzero(failing).tolist():
            i = group.members[k]
            decoded[i] = decode_point(points[i], values[self._slices[i]])


def decode_point(
    point: ModbusPointSpec,
    raw: Sequence[int] | Sequence[bool],
    packed: bytes = b"",
    offset: int = 0,
) -> tuple[ScalarValue, Quality]:
    """Decode one point's registers or bits into its value and quality.

    ``packed`` is optionally the whole block as big-endian bytes and
    ``offset`` the point's first register in it, for the fast path.
    A NaN or infinite float is bad/decode_error with no value; a value
    outside ``valid_range`` is bad/out_of_range and keeps its value.
    """
    try:
        fast = STRUCT_FORMAT.get(point.data_type) if packed else None
        if fast and point.byte_order is point.word_order is Endian.BIG:
            number = struct.unpack_from(fast, packed, 2 * offset)[0]
            value = apply_scale(number, point.scale, point.offset)
        else:
            value = _decode_raw(point, raw)
    except DriverDecodeError as exc:
        return None, Quality.bad(QualityReason.DECODE_ERROR, f"{_where(point)}: {exc}")

    if isinstance(value, float) and not math.isfinite(value):
        detail = (
            f"{_where(point)}: expected a finite {point.data_type.value}, found {value}"
        )
        return None, Quality.bad(QualityReason.DECODE_ERROR, detail)
    if point.valid_range is not None and isinstance(value, int | float):
        low, high = point.valid_range
        if not low <= value <= high:
            detail = f"{_where(point)}: expected {low}..{high}, found {value!r}"
            return value, Quality.bad(QualityReason.OUT_OF_RANGE, detail)
    return value, GOOD


def _where(point: ModbusPointSpec) -> str:
    return f"point {point.name!r} at {point.table.value} address {point.address}"


def _decode_raw(
    point: ModbusPointSpec, raw: Sequence[int] | Sequence[bool]
) -> ScalarValue:
    if point.table in BIT_TABLES:
        return bool(raw[0])
    registers = [int(r) for r in raw]
    if point.data_type is DataType.BOOL:
        return bool((registers[0] >> (point.bit or 0)) & 1)
    if point.data_type is DataType.STRING:
        return decode_string(registers, point.byte_order)
    number = decode_scalar(
        registers, point.data_type, point.byte_order, point.word_order
    )
    return apply_scale(number, point.scale, point.offset)
