"""Velocity RMS by frequency-domain integration, and its ISO 20816-3 zone."""

from __future__ import annotations

from enum import Enum
from typing import Final, Literal

import numpy as np

from dsp.spectrum import Spectrum, clip_band

STANDARD_GRAVITY_M_S2: Final = 9.80665
"""Acceleration of one g in m/s² (the conventional value of the CGPM)."""

VELOCITY_BAND_HZ: Final = (10.0, 1000.0)
"""ISO 20816-3 broadband velocity range for machines above 600 r/min."""

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
        Frequency range in Hz; bins with ``low <= f <= high`` count. An
        upper edge above the Nyquist rate is lowered with a warning.

    Returns
    -------
    float
        Velocity RMS in mm/s.

    Raises
    ------
    ValueError
        On an unknown unit or a band above the Nyquist rate.

    Notes
    -----
    Each bin is divided by ``2 pi f`` (integration), then Parseval's
    theorem on the windowed one-sided spectrum gives the mean square:
    ``v_rms**2 = 2 / (n * sum(w**2)) * sum(|X[k]|**2 / (2 pi f_k)**2)``.
    The ``sum(w**2)`` term is the window's noise-power correction, so a
    sine of acceleration amplitude ``A`` at ``f`` in the band gives
    ``A / (2 pi f) / sqrt(2)``.
    """
    scale = acceleration_scale_m_s2(unit)
    low_hz, high_hz = clip_band(band_hz, spectrum.fs_hz, what="velocity")
    df = spectrum.resolution_hz
    first = max(int(np.ceil(low_hz / df - 1e-9)), 1)
    last = min(int(np.floor(high_hz / df + 1e-9)), spectrum.bins.size - 1)
    if last < first:
        return 0.0

    lobe = spectrum.bins[first : last + 1]
    omega = (2.0 * np.pi * df) * np.arange(first, last + 1, dtype=np.float64)
    power = (lobe.real**2 + lobe.imag**2) / (omega * omega)
    mean_square = 2.0 * float(power.sum()) / (spectrum.n_samples * spectrum.power_gain)
    return float(np.sqrt(mean_square)) * scale * 1000.0


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
