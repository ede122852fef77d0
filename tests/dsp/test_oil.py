from __future__ import annotations

import math

import pytest

from dsp import (
    ScaleNumber,
    cleanliness_code,
    count_range,
    saturation_ppm,
    scale_number,
    trend_slope_per_day,
    water_saturation_percent,
)

# Rows of the ISO 4406 scale-number table: (number, more than, up to and
# including), in particles per mL, as published.
PUBLISHED_ROWS = [
    (0, 0.0, 0.01),
    (1, 0.01, 0.02),
    (7, 0.64, 1.3),
    (8, 1.3, 2.5),
    (13, 40.0, 80.0),
    (16, 320.0, 640.0),
    (17, 640.0, 1300.0),
    (18, 1300.0, 2500.0),
    (21, 10_000.0, 20_000.0),
    (28, 1_300_000.0, 2_500_000.0),
]


class TestScaleNumber:
    @pytest.mark.parametrize(("number", "low", "high"), PUBLISHED_ROWS)
    def test_boundaries_match_published_table(
        self, number: int, low: float, high: float
    ) -> None:
        assert scale_number(high).value == number
        assert scale_number(math.nextafter(high, math.inf)).value == number + (
            1 if number < 28 else 0
        )
        if number > 0:
            assert scale_number(math.nextafter(low, math.inf)).value == number

    def test_zero_count_is_code_zero(self) -> None:
        assert scale_number(0.0).value == 0

    def test_above_table_prints_plus(self) -> None:
        number = scale_number(3_000_000.0)
        assert number.above_table
        assert str(number) == "28+"

    def test_rejects_negative_count(self) -> None:
        with pytest.raises(ValueError, match="-1"):
            scale_number(-1.0)

    def test_rejects_nan_count(self) -> None:
        with pytest.raises(ValueError, match="nan"):
            scale_number(float("nan"))


class TestCountRange:
    @pytest.mark.parametrize(("number", "low", "high"), PUBLISHED_ROWS)
    def test_range_matches_published_table(
        self, number: int, low: float, high: float
    ) -> None:
        assert count_range(number) == (low, high)

    def test_above_table_has_open_upper_end(self) -> None:
        assert count_range(ScaleNumber(value=28, above_table=True)) == (
            2_500_000.0,
            None,
        )

    def test_rejects_number_outside_table(self) -> None:
        with pytest.raises(ValueError, match="29"):
            count_range(29)


class TestCleanlinessCode:
    def test_three_part_code(self) -> None:
        # 2000 > 1300 -> 18; 500 in (320, 640] -> 16; 60 in (40, 80] -> 13.
        assert str(cleanliness_code(2000.0, 500.0, 60.0)) == "18/16/13"

    def test_rejects_counts_growing_with_size(self) -> None:
        with pytest.raises(ValueError, match="must not grow"):
            cleanliness_code(100.0, 200.0, 10.0)


class TestWater:
    def test_saturation_percent(self) -> None:
        assert water_saturation_percent(150.0, 600.0) == pytest.approx(25.0)

    def test_rejects_zero_saturation_level(self) -> None:
        with pytest.raises(ValueError, match="saturation level"):
            water_saturation_percent(150.0, 0.0)

    def test_saturation_level_from_constants(self) -> None:
        # log10(S) = 7 - 1500 / 300 K = 2, so S = 100 ppm at 26.85 °C.
        assert saturation_ppm(26.85, a=7.0, b=1500.0) == pytest.approx(100.0)


class TestTrendSlope:
    def test_linear_rise_per_day(self) -> None:
        days = [0.0, 1.0, 2.5, 4.0]
        values = [10.0 + 3.0 * d for d in days]
        stamps = [1.7e9 + d * 86_400 for d in days]
        assert trend_slope_per_day(stamps, values) == pytest.approx(3.0)

    def test_rejects_single_timestamp(self) -> None:
        with pytest.raises(ValueError, match="two distinct"):
            trend_slope_per_day([5.0, 5.0], [1.0, 2.0])

    def test_rejects_length_mismatch(self) -> None:
        with pytest.raises(ValueError, match="shapes"):
            trend_slope_per_day([1.0, 2.0], [1.0])
