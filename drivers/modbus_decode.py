"""Decoding the blocks the Modbus driver reads into readings.

Decoding runs for every point on every poll, so a :class:`BlockDecoder`,
built once per planned request, prepares all it can in advance:

* one precompiled :class:`struct.Struct` unpacks every numeric value of the
  block in one call. When all values are in ABCD order and do not overlap,
  it reads them in place and skips unused registers as pad bytes. Otherwise
  a NumPy gather first copies each value's bytes into big-endian order,
  whatever its byte and word order;
* scaling and range checks visit only the points that have them, and one
  sum over the block's values detects a NaN or an infinity in the common
  case where there is none;
* the values and qualities are appended to the poll's columns, from which
  a :class:`drivers.base.ReadingBatch` builds readings on demand.

Points of other types (bits, strings, bool flags in registers) and every
value that fails a check go through :func:`decode_point`, which also writes
the quality detail.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from drivers.base import GOOD, Quality, QualityReason, ScalarValue
from drivers.codec import STRUCT_FORMAT, apply_scale, decode_scalar, decode_string
from drivers.errors import DriverDecodeError
from drivers.planner import BIT_TABLES, ReadRequest, point_slice
from drivers.spec import REGISTER_COUNT, DataType, Endian, ModbusPointSpec

_FLOAT_TYPES: Final = frozenset({DataType.FLOAT32, DataType.FLOAT64})

Number = float | int


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


def _in_place_format(indexes: list[list[int]], codes: list[str]) -> str | None:
    """Return a struct format reading the values where they lie, or None.

    That works when every value's bytes are ascending and consecutive
    (ABCD order) and each value starts after the previous one ends.
    """
    parts = [">"]
    cursor = 0
    for index, code in zip(indexes, codes, strict=True):
        first = index[0]
        if index != list(range(first, first + len(index))) or first < cursor:
            return None
        if first > cursor:
            parts.append(f"{first - cursor}x")
        parts.append(code)
        cursor = index[-1] + 1
    return "".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class _NumericLayout:
    """How to unpack, scale and check the numeric values of one block."""

    unpack: Callable[[bytes], tuple[Number, ...]]
    gather: NDArray[np.intp] | None
    """Block byte positions in big-endian order, or None to read in place."""
    scaled: tuple[tuple[int, float, float], ...]
    """(position, scale, offset) of each scaled value."""
    ranged: tuple[tuple[int, float, float], ...]
    """(position, low, high) of each value with a valid range."""
    checks_finite: bool
    """Whether any value is a float, which may be NaN or infinite."""

    @classmethod
    def build(
        cls, points: Sequence[ModbusPointSpec], starts: Sequence[int]
    ) -> _NumericLayout:
        indexes = [
            value_byte_index(p, start) for p, start in zip(points, starts, strict=True)
        ]
        codes = [STRUCT_FORMAT[p.data_type][1:] for p in points]
        in_place = _in_place_format(indexes, codes)
        if in_place is not None:
            unpack = struct.Struct(in_place).unpack_from
            gather = None
        else:
            unpack = struct.Struct(">" + "".join(codes)).unpack
            gather = np.array([i for index in indexes for i in index], dtype=np.intp)
        scaled = tuple(
            (k, p.scale, p.offset)
            for k, p in enumerate(points)
            if p.scale != 1.0 or p.offset != 0.0
        )
        return cls(
            unpack=unpack,
            gather=gather,
            scaled=scaled,
            ranged=tuple(
                (k, *p.valid_range)
                for k, p in enumerate(points)
                if p.valid_range is not None
            ),
            checks_finite=bool(scaled)
            or any(p.data_type in _FLOAT_TYPES for p in points),
        )

    def values(self, packed: bytes) -> list[Number] | tuple[Number, ...]:
        """Unpack and scale the values from the block's big-endian bytes."""
        if self.gather is None:
            numbers = self.unpack(packed)
        else:
            block = np.frombuffer(packed, dtype=np.uint8)
            numbers = self.unpack(block[self.gather].tobytes())
        if not self.scaled:
            return numbers
        scaled = list(numbers)
        for k, scale, offset in self.scaled:
            scaled[k] = apply_scale(scaled[k], scale, offset)
        return scaled

    def failing(self, numbers: Sequence[Number]) -> list[int]:
        """Return the positions of values that are not finite or out of range."""
        # A NaN or an infinity makes the sum non-finite. A finite sum that
        # overflows only costs the value-by-value check.
        if self.checks_finite and not math.isfinite(sum(numbers)):
            failing = {k for k, x in enumerate(numbers) if not math.isfinite(x)}
            failing.update(self._out_of_range(numbers))
            return sorted(failing)
        if not self.ranged:
            return []
        return self._out_of_range(numbers)

    def _out_of_range(self, numbers: Sequence[Number]) -> list[int]:
        return [k for k, low, high in self.ranged if not low <= numbers[k] <= high]


class BlockDecoder:
    """Turns the registers or bits of one request into a value and a
    quality per point, in the request's point order.

    Args:
        request: the planned read.
    """

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        points = request.points
        self._slices = [point_slice(request, p) for p in points]
        self._all_good = (GOOD,) * len(points)

        numeric: list[int] = []
        if request.table not in BIT_TABLES:
            numeric = [i for i, p in enumerate(points) if p.data_type in STRUCT_FORMAT]
        self._numeric = numeric
        self._others = sorted(set(range(len(points))) - set(numeric))
        self._layout: _NumericLayout | None = None
        if numeric:
            self._layout = _NumericLayout.build(
                [points[i] for i in numeric], [self._slices[i].start for i in numeric]
            )
        self._pack = struct.Struct(f">{request.count}H").pack

    def decode_into(
        self,
        raw: Sequence[int] | Sequence[bool],
        values: list[ScalarValue],
        qualities: list[Quality],
    ) -> None:
        """Decode one block and append a value and a quality per point.

        ``raw`` contains the request's ``count`` registers (or bits).
        """
        numbers: Sequence[Number] = ()
        failing: list[int] = []
        layout = self._layout
        if layout is not None:
            numbers = layout.values(self._pack(*raw))
            failing = layout.failing(numbers)

        if self._others or failing:
            decoded, checked = self._merge(raw, numbers, failing)
            values.extend(decoded)
            qualities.extend(checked)
            return
        values.extend(numbers)
        qualities.extend(self._all_good)

    def _merge(
        self,
        raw: Sequence[int] | Sequence[bool],
        numbers: Sequence[Number],
        failing: list[int],
    ) -> tuple[list[ScalarValue], list[Quality]]:
        points = self.request.points
        decoded: list[ScalarValue] = [None] * len(points)
        qualities = list(self._all_good)
        for i, number in zip(self._numeric, numbers, strict=True):
            decoded[i] = number
        # Decoding a failing value again the slow way writes the quality
        # detail; such values are rare.
        slow = [self._numeric[k] for k in failing] + self._others
        for i in slow:
            decoded[i], qualities[i] = decode_point(points[i], raw[self._slices[i]])
        return decoded, qualities


def decode_point(
    point: ModbusPointSpec, raw: Sequence[int] | Sequence[bool]
) -> tuple[ScalarValue, Quality]:
    """Decode one point's registers or bits into its value and quality.

    A NaN or infinite float is bad/decode_error with no value; a value
    outside ``valid_range`` is bad/out_of_range and keeps its value.
    """
    try:
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
