"""Spectral lines near expected frequencies, with their SNR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

LINE_TOLERANCE: Final = 0.02
"""Relative search half-width around an expected line: bearing slip and an
approximate speed move real lines by one or two percent."""

MAX_SNR_DB: Final = 200.0
"""SNR reported for a line over a floor of exactly zero (synthetic data)."""

NOISE_HALF_WIDTH_HZ: Final = 10.0
"""Width of the neighbourhood on each side whose median is the floor; it
shrinks to 40 % of the lowest target so a cage line near 12 Hz fits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    """One measured line of an envelope spectrum.

    ``snr_db`` is ``20 log10(amplitude / noise_floor)``, where the floor is
    the median amplitude of the neighbourhood on both sides of the peak,
    excluding the peak's own search window. Over a zero floor it is
    ``MAX_SNR_DB``, or 0 when the line is zero too.
    """

    label: str
    expected_hz: float
    found_hz: float
    amplitude: float
    noise_floor: float
    snr_db: float


def measure_lines(
    amplitude: NDArray[np.float64],
    resolution_hz: float,
    targets: list[tuple[str, float]],
    *,
    tolerance: float = LINE_TOLERANCE,
) -> list[Line]:
    """Find the peak near each target frequency and its SNR.

    Parameters
    ----------
    amplitude : ndarray, shape (m,)
        Amplitude spectrum starting at 0 Hz.
    resolution_hz : float
        Bin spacing of ``amplitude``.
    targets : list of (label, frequency_hz)
        Lines to look for. Targets whose search window or noise
        neighbourhood would run past the spectrum are left out.
    tolerance : float
        Relative search half-width, at least two bins.

    Returns
    -------
    list of Line
        In the order of ``targets``, minus those left out.

    Notes
    -----
    All targets are measured at once with fancy indexing: a search window
    of the largest reach, masked per target, and one neighbourhood of
    fixed offsets around each peak for the median floor.
    """
    if not targets:
        return []
    labels = [label for label, _ in targets]
    expected = np.array([hz for _, hz in targets], dtype=np.float64)
    centres = np.rint(expected / resolution_hz).astype(np.intp)
    reaches = np.maximum(
        2, np.rint(expected * tolerance / resolution_hz).astype(np.intp)
    )
    reach = int(reaches.max(initial=2))
    exclusion = reach + 2
    noise_hz = min(NOISE_HALF_WIDTH_HZ, 0.4 * float(expected.min()))
    noise = max(8, round(noise_hz / resolution_hz))
    fits = (centres - reach - exclusion - noise >= 1) & (
        centres + reach + exclusion + noise < amplitude.size
    )
    if not fits.any():
        return []
    keep = np.flatnonzero(fits)
    centres, reaches = centres[keep], reaches[keep]

    # Peak search: one window per target, wider ones masked down.
    offsets = np.arange(-reach, reach + 1)
    window = amplitude[centres[:, None] + offsets]
    window = np.where(np.abs(offsets) <= reaches[:, None], window, -1.0)
    peaks = centres + offsets[np.argmax(window, axis=1)]
    peak_amplitude = amplitude[peaks]

    side = np.arange(exclusion + 1, exclusion + noise + 1)
    neighbourhood = np.concatenate((-side[::-1], side))
    floors = np.median(amplitude[peaks[:, None] + neighbourhood], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 20.0 * np.log10(peak_amplitude / floors)
    snr = np.where(floors > 0, snr, np.where(peak_amplitude > 0, MAX_SNR_DB, 0.0))
    return [
        Line(
            label=labels[k],
            expected_hz=float(expected[k]),
            found_hz=float(peaks[i] * resolution_hz),
            amplitude=float(peak_amplitude[i]),
            noise_floor=float(floors[i]),
            snr_db=float(snr[i]),
        )
        for i, k in enumerate(keep)
    ]
