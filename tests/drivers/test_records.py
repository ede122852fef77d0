"""The core records: readings stored as columns in a ReadingBatch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drivers.base import GOOD, Quality, QualityReason, Reading, ReadingBatch

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
T1 = T0 + timedelta(milliseconds=40)
BAD = Quality.bad(QualityReason.TIMEOUT, "no response")


def batch() -> ReadingBatch:
    return ReadingBatch(
        assets=("pump-1", "pump-1", "fan-2"),
        points=("velocity", "temperature", "velocity"),
        units=("mm/s", "degC", "mm/s"),
        source="gw-modbus",
        timestamps=[T0, T0, T1],
        values=[2.5, 41.0, None],
        qualities=[GOOD, GOOD, BAD],
    )


EXPECTED = [
    Reading("pump-1", "velocity", T0, 2.5, "mm/s", GOOD, "gw-modbus"),
    Reading("pump-1", "temperature", T0, 41.0, "degC", GOOD, "gw-modbus"),
    Reading("fan-2", "velocity", T1, None, "mm/s", BAD, "gw-modbus"),
]


class TestReadingBatch:
    def test_iterates_one_reading_per_row(self) -> None:
        assert list(batch()) == EXPECTED

    def test_length_is_row_count(self) -> None:
        assert len(batch()) == 3

    def test_index_builds_that_row(self) -> None:
        readings = batch()
        assert readings[1] == EXPECTED[1]
        assert readings[-1] == EXPECTED[2]

    def test_index_out_of_range_raises(self) -> None:
        with pytest.raises(IndexError):
            batch()[3]

    def test_slice_returns_list(self) -> None:
        assert batch()[1:] == EXPECTED[1:]
        assert batch()[::-1] == EXPECTED[::-1]

    def test_fields_readable_by_name(self) -> None:
        reading = batch()[2]
        assert reading.asset == "fan-2"
        assert reading.timestamp == T1
        assert reading.value is None
        assert reading.quality.reason is QualityReason.TIMEOUT
        assert reading.source == "gw-modbus"

    def test_equals_list_of_same_readings(self) -> None:
        expected = list(EXPECTED)
        assert batch() == expected
        # A list on the left defers to the batch's own comparison.
        assert expected == batch()
        assert batch() != expected[:2]

    def test_unpacks_like_a_sequence(self) -> None:
        first, second, third = batch()
        assert (first.point, second.point, third.point) == (
            "velocity",
            "temperature",
            "velocity",
        )

    def test_columns_readable_without_records(self) -> None:
        readings = batch()
        assert list(readings.values) == [2.5, 41.0, None]
        assert [q.is_good for q in readings.qualities] == [True, True, False]

    def test_is_not_hashable(self) -> None:
        with pytest.raises(TypeError):
            hash(batch())

    def test_rejects_columns_of_unequal_length(self) -> None:
        with pytest.raises(ValueError, match="one length") as error:
            ReadingBatch(
                assets=("a", "a"),
                points=("x", "y"),
                units=("", ""),
                source="dev",
                timestamps=[T0, T0],
                values=[1.0],
                qualities=[GOOD, GOOD],
            )
        assert "'values': 1" in str(error.value)
