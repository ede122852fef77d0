from __future__ import annotations

import pytest

from drivers.errors import DriverConfigError
from drivers.planner import plan_reads, point_slice
from drivers.spec import DataType, ModbusPointSpec, RegisterTable

H, IR, C = RegisterTable.HOLDING, RegisterTable.INPUT, RegisterTable.COIL


def point(
    name: str,
    address: int,
    data_type: DataType = DataType.UINT16,
    table: RegisterTable = H,
    count: int = 1,
) -> ModbusPointSpec:
    return ModbusPointSpec(
        name=name,
        asset="a",
        table=table,
        address=address,
        data_type=data_type,
        count=count,
    )


class TestPlanReads:
    @pytest.mark.parametrize(
        ("points", "max_registers", "max_gap", "expected"),
        [
            # Adjacent points merge into one block.
            ([point("a", 0), point("b", 1), point("c", 2)], 125, 0, [(H, 0, 3)]),
            # A gap of 5 merges with max_gap 5 but not with 4.
            ([point("a", 0), point("b", 6)], 125, 5, [(H, 0, 7)]),
            ([point("a", 0), point("b", 6)], 125, 4, [(H, 0, 1), (H, 6, 1)]),
            # float32 at 0 ends at 2; the next point at 2 touches it.
            ([point("f", 0, DataType.FLOAT32), point("g", 2)], 125, 0, [(H, 0, 3)]),
            # The device maximum splits a long run: 10 points, max 4.
            (
                [point(f"p{i}", i) for i in range(10)],
                4,
                10,
                [(H, 0, 4), (H, 4, 4), (H, 8, 2)],
            ),
            # A float64 at 123 does not fit after 0..122 under 125.
            (
                [point("a", 0), point("d", 123, DataType.FLOAT64)],
                125,
                200,
                [(H, 0, 1), (H, 123, 4)],
            ),
            # Tables never merge; order is coil, discrete, input, holding.
            (
                [point("h", 0), point("i", 0, table=IR)],
                125,
                10,
                [(IR, 0, 1), (H, 0, 1)],
            ),
            # Overlapping points share registers.
            ([point("w", 10, DataType.UINT32), point("lo", 11)], 125, 0, [(H, 10, 2)]),
            # Unsorted input is sorted.
            ([point("b", 50), point("a", 48)], 125, 2, [(H, 48, 3)]),
        ],
    )
    def test_table(
        self,
        points: list[ModbusPointSpec],
        max_registers: int,
        max_gap: int,
        expected: list[tuple[RegisterTable, int, int]],
    ) -> None:
        requests = plan_reads(points, max_registers=max_registers, max_gap=max_gap)
        assert [(r.table, r.address, r.count) for r in requests] == expected

    def test_coils_merge_up_to_2000_bits(self) -> None:
        coils = [point(f"c{i}", i * 100, table=C) for i in range(30)]
        requests = plan_reads(coils, max_gap=10)
        assert [(r.address, r.count) for r in requests] == [(0, 1901), (2000, 901)]
        assert requests[0].function_code == 1

    def test_every_point_lands_in_exactly_one_request(self) -> None:
        points = [point(f"p{i}", (i * 37) % 400, DataType.FLOAT32) for i in range(60)]
        requests = plan_reads(points, max_registers=50, max_gap=3)
        placed = [p.name for r in requests for p in r.points]
        assert sorted(placed) == sorted(p.name for p in points)
        for request in requests:
            assert request.count <= 50
            for member in request.points:
                window = point_slice(request, member)
                assert 0 <= window.start < window.stop <= request.count

    def test_rejects_point_wider_than_limit(self) -> None:
        text = point("serial", 0, DataType.STRING, count=20)
        with pytest.raises(DriverConfigError, match="takes 20 registers"):
            plan_reads([text], max_registers=16)

    def test_rejects_limit_above_protocol_maximum(self) -> None:
        with pytest.raises(DriverConfigError, match=r"1\.\.125, found 126"):
            plan_reads([point("a", 0)], max_registers=126)


class TestPointSlice:
    def test_offset_inside_block(self) -> None:
        points = [point("a", 100), point("b", 104, DataType.FLOAT32)]
        (request,) = plan_reads(points, max_gap=5)
        assert point_slice(request, points[1]) == slice(4, 6)
