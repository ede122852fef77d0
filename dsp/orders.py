"""Running-speed orders (1x, 2x, 3x) read from the shared spectrum."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from dsp.spectrum import Spectrum

SPEED_TOLERANCE: Final = 0.02
"""Relative uncertainty of the given shaft speed searched around each order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """One running-speed order: where it was expected, found, and how big."""

    order: int
    expected_hz: float
    found_hz: float
    amplitude: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Orders:
    """Amplitudes of the first three orders, in the waveform's unit.

    ``ratio_2x_1x`` is None when the 1x amplitude is zero.
    """

    shaft_hz: float
    orders: tuple[Order, ...]
    ratio_2x_1x: float | None


def order_amplitudes(
    spectrum: Spectrum,
    shaft_hz: float,
    *,
    count: int = 3,
    tolerance: float = SPEED_TOLERANCE,
) -> Orders:
    """Measure the amplitude of the first ``count`` shaft orders.

    Parameters
    ----------
    spectrum : Spectrum
        Spectrum of the waveform.
    shaft_hz : float
        Shaft speed in Hz (rpm / 60).
    count : int
        Number of orders, from 1x.
    tolerance : float
        Relative speed uncertainty: order ``k`` is searched within
        ``k * shaft_hz * (1 +/- tolerance)``, at least one bin each side.

    Returns
    -------
    Orders
        Orders above the Nyquist rate are left out.

    Notes
    -----
    The largest bin in the search window locates the order; its
    amplitude is the main-lobe energy estimate of
    ``Spectrum.band_amplitude``, which does not depend on where the line
    falls between bins.
    """
    if not np.isfinite(shaft_hz) or shaft_hz <= 0:
        raise ValueError(f"shaft speed must be > 0 Hz, found {shaft_hz!r}")
    df = spectrum.resolution_hz
    found: list[Order] = []
    for k in range(1, count + 1):
        expected = k * shaft_hz
        if expected >= spectrum.fs_hz / 2:
            break
        reach = max(1, round(expected * tolerance / df))
        centre = spectrum.bin_index(expected)
        low = max(centre - reach, 1)
        window = spectrum.bins[low : centre + reach + 1]
        peak = low + int(np.argmax(window.real**2 + window.imag**2))
        found.append(
            Order(
                order=k,
                expected_hz=expected,
                found_hz=peak * df,
                amplitude=spectrum.band_amplitude(peak),
            )
        )

    ratio = None
    if len(found) >= 2 and found[0].amplitude > 0:
        ratio = found[1].amplitude / found[0].amplitude
    return Orders(shaft_hz=shaft_hz, orders=tuple(found), ratio_2x_1x=ratio)
