"""Velocity RMS by frequency-domain integration, and its ISO 20816-3 zone."""

from __future__ import annotations

import math
import warnings
from enum import Enum
from typing import Final, Literal

import numpy as np

from dsp.spectrum import Spectrum, clip_band

STANDARD_GRAVITY_M_S2: Final = 9.80665
"""Acceleration of one g in m/s² (the conventional value of the CGPM)."""

VELOCITY_BAND_HZ: Final = (10.0, 1000.0)
"""ISO 20816-3 broadband velocity range for machines above 600 r/min."""

LOW_SPEED_VELOCITY_BAND_HZ: Final = (2.0, 1000.0)
"""ISO 20816-3 broadband velocity range for machines from 120 r/min up to
and including 600 r/min."""

LOW_SPEED_MAX_RPM: Final = 600.0
"""Highest shaft speed in r/min measured in ``LOW_SPEED_VELOCITY_BAND_HZ``."""

ISO_MIN_RPM: Final = 120.0
"""Lowest shaft speed in r/min within the scope of ISO 20816-3."""

_BIN_TOLERANCE: Final = 1e-9
"""Relative slack that keeps a band edge on a bin from rounding past it."""

Foundation = Literal["rigid", "flexible"]
IsoGroup = Literal[1, 2]


class IsoZone(Enum):
    """ISO 20816-3 evaluation zone, from newly commissioned (A) to damaging (D)."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"


# Zone boundaries A/B, B/C and C/D in mm/s r.m.s., from ISO 20816-3:2022
# Annex A, Table A.1, which keeps the values of ISO 10816-3:2009 Table A.1.
# Group 1: large machines, 300 kW to 50 MW, or electrical machines with a
# shaft height of 315 mm and above. Group 2: medium machines, 15 kW to
# 300 kW, or shaft heights from 160 mm to 315 mm.
ZONE_BOUNDARIES_MM_S: Final[dict[tuple[int, str], tuple[float, float, float]]] = {
    (1, "rigid"): (2.3, 4.5, 7.1),
    (1, "flexible"): (3.5, 7.1, 11.0),
    (2, "rigid"): (1.4, 2.8, 4.5),
    (2, "flexible"): (2.3, 4.5, 7.1),
}

_METRES_PER_S2: Final = {"g": STANDARD_GRAVITY_M_S2, "m/s2": 1.0}


def acceleration_scale_m_s2(unit: str) -> float:
    """Return the factor that converts ``unit`` to m/s².

    Raises
    ------
    ValueError
        If ``unit`` is neither ``"g"`` nor ``"m/s2"``.
    """
    try:
        return _METRES_PER_S2[unit]
    except KeyError:
        raise ValueError(
            f"acceleration unit must be one of {sorted(_METRES_PER_S2)}, found {unit!r}"
        ) from None


def velocity_band_hz(rpm: float | None) -> tuple[float, float]:
    """Select the ISO 20816-3 broadband velocity range for a shaft speed.

    Machines running above 600 r/min are measured from 10 Hz to 1000 Hz,
    and machines running from 120 r/min up to and including 600 r/min from
    2 Hz to 1000 Hz, so 600 r/min itself takes the 2 Hz band.

    Parameters
    ----------
    rpm : float or None
        Shaft speed in revolutions per minute. None (speed unknown)
        selects the 10-1000 Hz band, so a slow machine of unknown speed
        reads without its content from 2 Hz to 10 Hz.

    Returns
    -------
    (float, float)
        Lower and upper band edge in Hz.

    Warns
    -----
    UserWarning
        Below 120 r/min, the lower limit of the standard's scope. The band
        stays 2-1000 Hz, but the ISO 20816-3 zone limits do not apply.

    Raises
    ------
    ValueError
        If ``rpm`` is not a positive finite number.
    """
    if rpm is None:
        return VELOCITY_BAND_HZ
    if not math.isfinite(rpm) or rpm <= 0:
        raise ValueError(f"rpm must be a positive number, found {rpm!r}")
    if rpm > LOW_SPEED_MAX_RPM:
        return VELOCITY_BAND_HZ
    if rpm < ISO_MIN_RPM:
        low_hz, high_hz = LOW_SPEED_VELOCITY_BAND_HZ
        warnings.warn(
            f"shaft speed {rpm:g} r/min is below {ISO_MIN_RPM:g} r/min, the "
            "lower limit of ISO 20816-3. The velocity RMS keeps the "
            f"{low_hz:g}-{high_hz:g} Hz band of machines from "
            f"{ISO_MIN_RPM:g} to {LOW_SPEED_MAX_RPM:g} r/min, but the zone "
            "limits do not apply",
            stacklevel=2,
        )
    return LOW_SPEED_VELOCITY_BAND_HZ


def fit_velocity_band(
    spectrum: Spectrum, band_hz: tuple[float, float]
) -> tuple[float, float]:
    """Fit a velocity band to the bins of one spectrum.

    Parameters
    ----------
    spectrum : Spectrum
        Spectrum the band will be integrated over.
    band_hz : (float, float)
        Requested lower and upper edge in Hz.

    Returns
    -------
    (float, float)
        The band that ``velocity_rms_mm_s`` integrates, which counts the
        same bins as the request. Its upper edge is at most the Nyquist
        rate. Its lower edge is at least the bin spacing, because the DC
        bin cannot be integrated (its ``2 pi f`` is 0).

    Warns
    -----
    UserWarning
        When an edge moves: the upper edge lowered to the Nyquist rate, or
        the lower edge raised to the first bin above DC because the block
        is too short to resolve it. Each warning shows the old and the
        new edge.

    Raises
    ------
    ValueError
        If the band is empty, lies above the Nyquist rate, or contains no
        bin of the spectrum.
    """
    low_hz, high_hz = clip_band(band_hz, spectrum.fs_hz, what="velocity")
    df = spectrum.resolution_hz
    first, last = _band_bins(spectrum, low_hz, high_hz)
    if last < first:
        raise ValueError(
            f"velocity band {band_hz!r} Hz contains no bin of a spectrum "
            f"with bins {df:g} Hz apart ({spectrum.n_samples} samples at "
            f"{spectrum.fs_hz:g} Hz). Expected a longer block"
        )

    # NOTE: this warns only when no bin reaches the lower edge. A tone a
    # few bins above DC still reads high (5 Hz with 2 Hz bins, 12 %
    # measured), so a slow machine needs bins far below its speed.
    if low_hz < df * (1.0 - _BIN_TOLERANCE):
        warnings.warn(_raised_edge_message(spectrum, low_hz), stacklevel=3)
        low_hz = df
    return low_hz, high_hz


def _raised_edge_message(spectrum: Spectrum, low_hz: float) -> str:
    df = spectrum.resolution_hz
    message = (
        f"velocity band lower edge raised from {low_hz:g} Hz to {df:.4g} Hz, "
        f"the first bin above DC of {spectrum.n_samples} samples at "
        f"{spectrum.fs_hz:g} Hz"
    )
    if low_hz <= 0:
        return message
    needed = math.ceil(spectrum.fs_hz / low_hz * (1.0 - _BIN_TOLERANCE))
    return (
        f"{message}. A block of at least {needed} samples puts a bin at "
        f"or below {low_hz:g} Hz"
    )


def _band_bins(spectrum: Spectrum, low_hz: float, high_hz: float) -> tuple[int, int]:
    """Return the first and last bin with ``low_hz <= f <= high_hz``, not DC."""
    df = spectrum.resolution_hz
    first = max(math.ceil(low_hz / df - _BIN_TOLERANCE), 1)
    last = min(math.floor(high_hz / df + _BIN_TOLERANCE), spectrum.bins.size - 1)
    return first, last


def velocity_rms_mm_s(
    spectrum: Spectrum,
    *,
    unit: str = "g",
    band_hz: tuple[float, float] = VELOCITY_BAND_HZ,
) -> float:
    """Integrate an acceleration spectrum to broadband velocity RMS.

    Parameters
    ----------
    spectrum : Spectrum
        Hann-windowed spectrum of an acceleration waveform.
    unit : {"g", "m/s2"}
        Unit of the acceleration samples.
    band_hz : (float, float)
        Frequency range in Hz; bins with ``low <= f <= high`` count, and
        the DC bin never does. ``velocity_band_hz`` returns the ISO
        20816-3 range for a shaft speed.

    Returns
    -------
    float
        Velocity RMS in mm/s.

    Warns
    -----
    UserWarning
        When ``fit_velocity_band`` moves an edge: an upper edge above the
        Nyquist rate, or a lower edge below the first bin above DC.

    Raises
    ------
    ValueError
        On an unknown unit, a band above the Nyquist rate, or a band that
        contains no bin of the spectrum.

    Notes
    -----
    Each bin is divided by ``2 pi f`` (integration), then Parseval's
    theorem on the windowed one-sided spectrum gives the mean square:
    ``v_rms**2 = 2 / (n * sum(w**2)) * sum(|X[k]|**2 / (2 pi f_k)**2)``.
    The ``sum(w**2)`` term is the window's noise-power correction, so a
    sine of acceleration amplitude ``A`` at ``f`` in the band gives
    ``A / (2 pi f) / sqrt(2)``.

    The formula is accurate while the Hann main lobe, two bins on each
    side of the tone, lies in the band. A tone closer to an edge is only
    partly counted, and within about two bins of DC it cannot be
    distinguished from the block mean. The ``1 / f**2`` weight also varies
    across the lobe, which reads an estimated ``(df / f)**2 / 2`` high
    (0.5 % measured for a tone ten bins above DC). Bin 1 is counted
    without the window's leakage of the residual DC term, as if the
    window-weighted mean had been removed.
    """
    scale = acceleration_scale_m_s2(unit)
    low_hz, high_hz = fit_velocity_band(spectrum, band_hz)
    first, last = _band_bins(spectrum, low_hz, high_hz)

    df = spectrum.resolution_hz
    lobe = spectrum.bins[first : last + 1]
    if first == 1:
        lobe = lobe.copy()
        lobe[0] += _dc_leakage_correction(spectrum)
    omega = (2.0 * np.pi * df) * np.arange(first, last + 1, dtype=np.float64)
    power = (lobe.real**2 + lobe.imag**2) / (omega * omega)
    mean_square = 2.0 * float(power.sum()) / (spectrum.n_samples * spectrum.power_gain)
    return float(np.sqrt(mean_square)) * scale * 1000.0


def _dc_leakage_correction(spectrum: Spectrum) -> complex:
    """Return what cancels the DC term's leakage into bin 1.

    Removing the plain mean before windowing leaves a windowed DC term
    ``X[0]``, which the periodic Hann window spreads into bin 1 as
    ``-X[0] * (n / 4) / sum(w)``. Integrated with the largest ``1 / f**2``
    weight, that leakage makes a tone half a bin off a bin centre read
    about 3 % high, wherever the tone lies (measured at 34.5 and 200.5
    bins). Adding the correction to bin 1 is the same as removing the
    window-weighted mean.
    """
    dc_term = complex(spectrum.bins[0])
    return dc_term * (spectrum.n_samples / 4.0) / spectrum.coherent_gain


def iso_zone(
    velocity_rms_mm_s: float, *, group: int = 2, foundation: str = "rigid"
) -> IsoZone:
    """Classify a velocity RMS into its ISO 20816-3 zone.

    A value equal to a boundary belongs to the lower zone: 2.3 mm/s for
    group 1 on a rigid foundation is zone A, anything above it is B.

    Raises
    ------
    ValueError
        If the group is not 1 or 2, the foundation is neither ``"rigid"``
        nor ``"flexible"``, or the velocity is negative or not finite.
    """
    key = (group, foundation)
    if key not in ZONE_BOUNDARIES_MM_S:
        raise ValueError(
            "ISO 20816-3 machine class must be group 1 or 2 on a 'rigid' or "
            f"'flexible' foundation, found group={group!r}, "
            f"foundation={foundation!r}"
        )
    if not np.isfinite(velocity_rms_mm_s) or velocity_rms_mm_s < 0:
        raise ValueError(
            "velocity RMS must be a finite value >= 0 mm/s, "
            f"found {velocity_rms_mm_s!r}"
        )
    ab, bc, cd = ZONE_BOUNDARIES_MM_S[key]
    if velocity_rms_mm_s <= ab:
        return IsoZone.A
    if velocity_rms_mm_s <= bc:
        return IsoZone.B
    if velocity_rms_mm_s <= cd:
        return IsoZone.C
    return IsoZone.D
