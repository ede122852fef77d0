"""Merging the points of one device into as few Modbus reads as possible.

Reading ten neighbouring registers in one request costs about as much as
reading one, so the planner merges points of the same table into blocks.
A block may include unused registers between points (up to a maximum gap),
and never exceeds the protocol limit of 125 registers (2000 bits for coils
and discrete inputs) or the device's own maximum. All functions here are
pure: no I/O, no state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from drivers.errors import DriverConfigError
from drivers.spec import REGISTER_COUNT, DataType, ModbusPointSpec, RegisterTable

MAX_REGISTERS_PER_READ: Final = 125
"""Modbus limit for function codes 3 and 4 (Modbus Application Protocol 1.1b3)."""

MAX_BITS_PER_READ: Final = 2000
"""Modbus limit for function codes 1 and 2."""

FUNCTION_CODE: Final[dict[RegisterTable, int]] = {
    RegisterTable.COIL: 1,
    RegisterTable.DISCRETE_INPUT: 2,
    RegisterTable.HOLDING: 3,
    RegisterTable.INPUT: 4,
}

BIT_TABLES: Final = frozenset({RegisterTable.COIL, RegisterTable.DISCRETE_INPUT})


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    """One read of ``count`` registers (or bits) from ``address`` in ``table``.

    ``points`` are the points whose registers lie inside the block, in
    address order.
    """

    table: RegisterTable
    address: int
    count: int
    points: tuple[ModbusPointSpec, ...]

    @property
    def function_code(self) -> int:
        return FUNCTION_CODE[self.table]

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.address + self.count


def point_width(point: ModbusPointSpec) -> int:
    """Return the registers (bits in a bit table) a point occupies.

    Raises:
        DriverConfigError: a string point without a register count.
    """
    if point.table in BIT_TABLES:
        return 1
    if point.data_type is DataType.STRING:
        if point.count < 1:
            raise DriverConfigError(
                f"point {point.name!r}: a string needs a register count of 1 "
                f"or more, found {point.count!r}"
            )
        return point.count
    return REGISTER_COUNT[point.data_type]


def request_limit(table: RegisterTable, max_registers: int) -> int:
    """Return the largest block for ``table`` under a device maximum.

    The device maximum counts registers; a bit table has the protocol's
    own limit of 2000 bits, reduced by the same proportion.
    """
    if table in BIT_TABLES:
        return max(1, MAX_BITS_PER_READ * max_registers // MAX_REGISTERS_PER_READ)
    return max_registers


def plan_reads(
    points: Iterable[ModbusPointSpec],
    *,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_gap: int = 10,
) -> list[ReadRequest]:
    """Group points into the fewest reads that respect every limit.

    Points are grouped per table, sorted by address, and merged greedily:
    a point joins the current block when the unused registers between the
    block and the point are at most ``max_gap`` (counted in bits for a bit
    table, scaled by 16) and the block stays within the limit. Overlapping
    points share registers.

    Args:
        points: the device's points, in any order.
        max_registers: the device's maximum registers per request (1..125).
        max_gap: unused registers a block may span to merge two points.

    Raises:
        DriverConfigError: a limit is out of range, or one point is wider
            than the limit.
    """
    if not 1 <= max_registers <= MAX_REGISTERS_PER_READ:
        raise DriverConfigError(
            f"max_registers_per_request: expected 1..{MAX_REGISTERS_PER_READ}, "
            f"found {max_registers!r}"
        )
    if max_gap < 0:
        raise DriverConfigError(
            f"max_gap_registers: expected 0 or more, found {max_gap!r}"
        )

    by_table: dict[RegisterTable, list[ModbusPointSpec]] = {}
    for point in points:
        by_table.setdefault(point.table, []).append(point)

    requests: list[ReadRequest] = []
    for table in RegisterTable:
        table_points = by_table.get(table)
        if table_points:
            requests.extend(_plan_table(table, table_points, max_registers, max_gap))
    return requests


def _plan_table(
    table: RegisterTable,
    points: list[ModbusPointSpec],
    max_registers: int,
    max_gap: int,
) -> list[ReadRequest]:
    limit = request_limit(table, max_registers)
    gap = max_gap * 16 if table in BIT_TABLES else max_gap
    ordered = sorted(points, key=lambda p: (p.address, p.name))

    requests: list[ReadRequest] = []
    members: list[ModbusPointSpec] = []
    start = end = 0
    for point in ordered:
        width = point_width(point)
        if width > limit:
            raise DriverConfigError(
                f"point {point.name!r} at {table.value} address {point.address} "
                f"takes {width} registers: expected at most {limit} per request"
            )
        point_end = point.address + width
        fits = (
            members
            and point.address - end <= gap
            and max(end, point_end) - start <= limit
        )
        if fits:
            members.append(point)
            end = max(end, point_end)
            continue
        if members:
            requests.append(_request(table, start, end, members))
        members, start, end = [point], point.address, point_end
    if members:
        requests.append(_request(table, start, end, members))
    return requests


def _request(
    table: RegisterTable, start: int, end: int, members: Sequence[ModbusPointSpec]
) -> ReadRequest:
    return ReadRequest(
        table=table, address=start, count=end - start, points=tuple(members)
    )


def point_slice(request: ReadRequest, point: ModbusPointSpec) -> slice:
    """Return where ``point`` sits in the values read for ``request``."""
    offset = point.address - request.address
    return slice(offset, offset + point_width(point))
