"""Time-domain vibration indicators of one waveform."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeDomain:
    """Statistics of the mean-removed waveform, in its unit.

    ``kurtosis`` is Pearson's (the fourth standardised moment, 3 for a
    Gaussian signal, 1.5 for a sine), not the excess kurtosis.
    ``crest_factor``, ``kurtosis`` and ``skewness`` are None for a
    constant waveform, whose standard deviation is zero.
    """

    mean: float
    rms: float
    peak: float
    peak_to_peak: float
    crest_factor: float | None
    kurtosis: float | None
    skewness: float | None


def time_domain_indicators(centred: NDArray[np.float64], mean: float) -> TimeDomain:
    """Compute RMS, peak, peak-to-peak, crest factor, kurtosis and skewness.

    Parameters
    ----------
    centred : ndarray, shape (n,)
        Waveform with its mean already removed. The mean (an
        accelerometer's DC offset or gravity) is no vibration, so every
        indicator is computed about it.
    mean : float
        The removed mean, reported as it is.

    Returns
    -------
    TimeDomain

    Notes
    -----
    With central moments ``m_k = mean(x**k)``: RMS ``sqrt(m_2)``, peak
    ``max |x|``, crest factor ``peak / rms``, skewness ``m_3 / m_2**1.5``
    and kurtosis ``m_4 / m_2**2`` (biased estimators, as is usual for
    long vibration blocks).
    """
    n = centred.size
    m2 = float(centred @ centred) / n
    high = float(centred.max())
    low = float(centred.min())
    peak = max(high, -low)
    rms = float(np.sqrt(m2))

    # A constant waveform, after its mean is removed, is all rounding
    # noise; its shape statistics would be noise divided by noise.
    if rms <= 1e-12 * max(abs(mean), 1.0):
        return TimeDomain(
            mean=mean,
            rms=0.0,
            peak=0.0,
            peak_to_peak=0.0,
            crest_factor=None,
            kurtosis=None,
            skewness=None,
        )

    squares = centred * centred
    m3 = float(squares @ centred) / n
    m4 = float(squares @ squares) / n
    return TimeDomain(
        mean=mean,
        rms=rms,
        peak=peak,
        peak_to_peak=high - low,
        crest_factor=peak / rms,
        kurtosis=m4 / (m2 * m2),
        skewness=m3 / m2**1.5,
    )
