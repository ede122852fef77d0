"""Oil condition: ISO 4406 cleanliness codes, water saturation, trends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

# Upper limits, in particles per millilitre, of ISO 4406:2021 Table 1
# scale numbers 0 to 28 ("more than" the previous limit, "up to and
# including" this one). The published values are rounded, so they are
# used literally rather than computed as powers of two.
ISO4406_UPPER_LIMITS: Final[tuple[float, ...]] = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.3, 2.5, 5.0,
    10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1_300.0, 2_500.0,
    5_000.0, 10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0,
    320_000.0, 640_000.0, 1_300_000.0, 2_500_000.0,
)  # fmt: skip

MAX_SCALE_NUMBER: Final = len(ISO4406_UPPER_LIMITS) - 1

SECONDS_PER_DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleNumber:
    """One ISO 4406 scale number.

    ``above_table`` marks a count over 2 500 000 per mL, which the
    standard's table does not cover; it prints as ``28+``.
    """

    value: int
    above_table: bool = False

    def __str__(self) -> str:
        return f"{self.value}+" if self.above_table else str(self.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanlinessCode:
    """ISO 4406 code for particles > 4, > 6 and > 14 µm(c), e.g. 18/16/13."""

    ge4um: ScaleNumber
    ge6um: ScaleNumber
    ge14um: ScaleNumber

    def __str__(self) -> str:
        return f"{self.ge4um}/{self.ge6um}/{self.ge14um}"


def scale_number(count_per_ml: float) -> ScaleNumber:
    """Return the ISO 4406 scale number of a particle count per mL.

    A count equal to a table limit takes the lower number: 80 per mL is
    13 (more than 40, up to and including 80), 80.01 is 14.

    Raises
    ------
    ValueError
        If the count is negative, NaN or infinite.
    """
    if not math.isfinite(count_per_ml) or count_per_ml < 0:
        raise ValueError(
            "particle count must be a finite number >= 0 per mL, "
            f"found {count_per_ml!r}"
        )
    if count_per_ml > ISO4406_UPPER_LIMITS[-1]:
        return ScaleNumber(value=MAX_SCALE_NUMBER, above_table=True)
    index = int(np.searchsorted(ISO4406_UPPER_LIMITS, count_per_ml, "left"))
    return ScaleNumber(value=index)


def cleanliness_code(
    ge4um_per_ml: float, ge6um_per_ml: float, ge14um_per_ml: float
) -> CleanlinessCode:
    """Compute the three-part ISO 4406 code from cumulative counts per mL.

    Raises
    ------
    ValueError
        If a count is invalid, or the counts grow with particle size
        (a count of larger particles cannot exceed one of smaller ones).
    """
    counts = (ge4um_per_ml, ge6um_per_ml, ge14um_per_ml)
    numbers = [scale_number(count) for count in counts]
    if not ge4um_per_ml >= ge6um_per_ml >= ge14um_per_ml:
        raise ValueError(
            "cumulative counts must not grow with particle size, found "
            f">4 µm {ge4um_per_ml!r}, >6 µm {ge6um_per_ml!r}, "
            f">14 µm {ge14um_per_ml!r} per mL"
        )
    return CleanlinessCode(ge4um=numbers[0], ge6um=numbers[1], ge14um=numbers[2])


def count_range(number: int | ScaleNumber) -> tuple[float, float | None]:
    """Return the counts per mL a scale number covers: (more than, up to).

    The upper end is None for ``28+``.

    Raises
    ------
    ValueError
        If the number is outside 0 to 28.
    """
    above = isinstance(number, ScaleNumber) and number.above_table
    value = number.value if isinstance(number, ScaleNumber) else number
    if not 0 <= value <= MAX_SCALE_NUMBER:
        raise ValueError(
            f"ISO 4406 scale number must be 0 to {MAX_SCALE_NUMBER}, found {value!r}"
        )
    if above:
        return ISO4406_UPPER_LIMITS[-1], None
    low = 0.0 if value == 0 else ISO4406_UPPER_LIMITS[value - 1]
    return low, ISO4406_UPPER_LIMITS[value]


def water_saturation_percent(water_ppm: float, saturation_ppm: float) -> float:
    """Return dissolved water as a percentage of the oil's saturation level.

    ``saturation_ppm`` depends on the oil and its temperature; sensors
    that report water activity or relative humidity in oil give this
    percentage directly (100 % is free water).

    Raises
    ------
    ValueError
        If ``water_ppm`` is negative or ``saturation_ppm`` is not positive.
    """
    if not math.isfinite(water_ppm) or water_ppm < 0:
        raise ValueError(f"water content must be >= 0 ppm, found {water_ppm!r}")
    if not math.isfinite(saturation_ppm) or saturation_ppm <= 0:
        raise ValueError(f"saturation level must be > 0 ppm, found {saturation_ppm!r}")
    return 100.0 * water_ppm / saturation_ppm


def saturation_ppm(temperature_c: float, *, a: float, b: float) -> float:
    """Return the water saturation level of an oil at a temperature.

    Uses ``log10(S) = a - b / T`` with ``T`` in kelvin. The constants are
    specific to each oil and come from its supplier or the sensor maker;
    there is no generic default.
    """
    kelvin = temperature_c + 273.15
    if not math.isfinite(kelvin) or kelvin <= 0:
        raise ValueError(
            f"temperature must be above absolute zero, found {temperature_c!r} °C"
        )
    return float(10.0 ** (a - b / kelvin))


def trend_slope_per_day(
    timestamps_s: Sequence[float], values: Sequence[float]
) -> float:
    """Fit a least-squares line and return its slope in units per day.

    Parameters
    ----------
    timestamps_s : sequence of float
        POSIX times in seconds.
    values : sequence of float
        Measurements at those times, same length.

    Raises
    ------
    ValueError
        If the lengths differ, fewer than two distinct times are given, or
        any value is NaN or infinite.
    """
    t = np.asarray(timestamps_s, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError(
            f"timestamps and values must be 1-D of one length, found "
            f"shapes {t.shape} and {y.shape}"
        )
    if not (np.isfinite(t).all() and np.isfinite(y).all()):
        raise ValueError("timestamps and values must be finite numbers")
    if np.unique(t).size < 2:
        raise ValueError(
            f"a trend needs at least two distinct timestamps, found {np.unique(t).size}"
        )
    days = (t - t.mean()) / SECONDS_PER_DAY
    return float(days @ (y - y.mean()) / (days @ days))
