"""Envelope analysis in the frequency domain, at a reduced sample rate.

The band is taken from the one shared rfft, shifted to baseband and
inverse-transformed at a length just large enough for the band: the
result is the analytic signal of the band, at a lower rate, with no
full-length Hilbert transform. Its magnitude is the envelope and its
spectrum shows the repetition rates of bearing impacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from dsp.spectrum import Spectrum, hann_window

KURTOGRAM_SEGMENT: Final = 64
"""Segment length of the short-time FFT behind the spectral kurtosis."""

KURTOGRAM_MAX_SAMPLES: Final = 32768
"""Samples used for the spectral kurtosis; more adds cost, not choice."""

KURTOGRAM_WIDTHS: Final = (4, 6, 8, 12)
"""Candidate band widths, in short-time FFT bins of ``fs / 64`` each."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Band:
    """Envelope band in Hz and how it was chosen.

    ``spectral_kurtosis`` is the mean spectral kurtosis over the band
    (0 for Gaussian noise), None when the band was configured.
    """

    low_hz: float
    high_hz: float
    source: str
    spectral_kurtosis: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """Envelope of the Hann-windowed waveform in one band.

    ``magnitude[m]`` is ``|z(t_m)|`` at ``t_m = m / fs_hz``, where ``z``
    is the analytic signal of the band of ``w * x``. It therefore carries
    the analysis window: ``magnitude / window`` is the envelope of ``x``
    itself wherever ``window`` is not close to zero.
    """

    fs_hz: float
    band: Band
    magnitude: NDArray[np.float64] = field(repr=False)
    window: NDArray[np.float64] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeSpectrum:
    """Single-sided amplitude spectrum of an envelope, from 0 Hz.

    ``amplitude[k]`` is at ``k * resolution_hz``, in the waveform's unit;
    a sinusoidal modulation of the envelope with amplitude ``a`` reads
    ``a``. It stops at ``max_hz``.
    """

    resolution_hz: float
    amplitude: NDArray[np.float64] = field(repr=False)

    @property
    def max_hz(self) -> float:
        """Highest frequency held, in Hz."""
        return (self.amplitude.size - 1) * self.resolution_hz


def spectral_kurtosis(
    centred: NDArray[np.float64], fs_hz: float
) -> tuple[NDArray[np.float64], float]:
    """Estimate the spectral kurtosis with a short-time FFT.

    Parameters
    ----------
    centred : ndarray, shape (n,)
        Mean-removed waveform.
    fs_hz : float
        Sample rate in Hz.

    Returns
    -------
    sk : ndarray, shape (KURTOGRAM_SEGMENT // 2 + 1,)
        Spectral kurtosis per short-time bin.
    resolution_hz : float
        Bin spacing of ``sk``.

    Notes
    -----
    With ``X(t, f)`` the Hann-windowed FFT of non-overlapping segments,
    ``SK(f) = <|X|**4> / <|X|**2>**2 - 2`` averaged over segments, which
    is 0 for stationary Gaussian noise and grows with impulsiveness
    (J. Antoni, "The spectral kurtosis: a useful tool for characterising
    non-stationary signals", Mech. Syst. Signal Process. 20 (2006) 282-307).
    Only the first ``KURTOGRAM_MAX_SAMPLES`` samples are used.
    """
    length = KURTOGRAM_SEGMENT
    usable = min(centred.size, KURTOGRAM_MAX_SAMPLES) // length * length
    segments = centred[:usable].reshape(-1, length) * hann_window(length)
    bins = scipy.fft.rfft(segments, axis=1)
    power = bins.real**2 + bins.imag**2
    mean_power = power.mean(axis=0)
    mean_square = (power * power).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sk = np.where(mean_power > 0, mean_square / mean_power**2 - 2.0, 0.0)
    return sk, fs_hz / length


def choose_band(
    sk: NDArray[np.float64],
    step_hz: float,
    fs_hz: float,
    *,
    min_low_hz: float,
    min_width_hz: float,
) -> Band | None:
    """Choose the envelope band with the largest mean spectral kurtosis.

    Parameters
    ----------
    sk : ndarray, shape (m,)
        Spectral kurtosis per short-time bin, from ``spectral_kurtosis``.
    step_hz : float
        Bin spacing of ``sk`` in Hz.
    fs_hz : float
        Sample rate in Hz.
    min_low_hz : float
        Lowest allowed lower edge: the band must lie above the shaft
        harmonics and the modulation frequencies it is meant to reveal.
    min_width_hz : float
        Narrowest allowed band: the band must hold the sidebands of the
        highest envelope line analysed.

    Returns
    -------
    Band or None
        None when no candidate fits below the Nyquist rate.

    Notes
    -----
    A kurtogram on a fixed grid: every run of ``KURTOGRAM_WIDTHS``
    adjacent short-time bins is a candidate, scored by its mean spectral
    kurtosis (one cumulative sum per width).
    """
    nyquist = fs_hz / 2.0
    cumulative = np.concatenate(([0.0], np.cumsum(sk)))
    best: Band | None = None
    for width in KURTOGRAM_WIDTHS:
        if width * step_hz < min_width_hz or width > sk.size:
            continue
        starts = np.arange(sk.size - width + 1)
        lows = (starts - 0.5) * step_hz
        highs = (starts + width - 0.5) * step_hz
        scores = (cumulative[starts + width] - cumulative[starts]) / width
        allowed = (lows >= min_low_hz) & (highs <= nyquist)
        if not allowed.any():
            continue
        pick = int(np.argmax(np.where(allowed, scores, -np.inf)))
        if best is None or scores[pick] > (best.spectral_kurtosis or 0.0):
            best = Band(
                low_hz=float(lows[pick]),
                high_hz=float(highs[pick]),
                source="kurtogram",
                spectral_kurtosis=float(scores[pick]),
            )
    return best


def band_envelope(
    spectrum: Spectrum, band: Band, *, min_rate_hz: float = 0.0
) -> Envelope:
    """Form the envelope of one band from the shared spectrum.

    Parameters
    ----------
    spectrum : Spectrum
        Hann-windowed spectrum of the waveform.
    band : Band
        Band in Hz; it must lie below the Nyquist rate.
    min_rate_hz : float
        Lowest sample rate wanted for the envelope; the inverse FFT is
        zero-padded to reach it.

    Returns
    -------
    Envelope

    Notes
    -----
    The bins ``k1..k2`` of the band are moved to ``0..k2-k1``, doubled
    (the analytic signal has no negative frequencies) and inverse
    transformed at length ``m = next_fast_len(max(k2 - k1 + 1, ...))``.
    Scaling by ``m / n`` restores the amplitude of a length-``n`` inverse,
    so a sine of amplitude ``A`` in the band gives ``w(t) * A``. The
    envelope rate is ``fs * m / n``.
    """
    df = spectrum.resolution_hz
    first = max(int(np.ceil(band.low_hz / df)), 1)
    last = min(int(np.floor(band.high_hz / df)), spectrum.bins.size - 1)
    if last < first:
        raise ValueError(
            f"envelope band {band.low_hz:g}-{band.high_hz:g} Hz contains no "
            f"bin of a spectrum with {df:g} Hz resolution"
        )
    wanted = max(last - first + 1, int(np.ceil(min_rate_hz / df)))
    length = scipy.fft.next_fast_len(wanted)
    analytic = scipy.fft.ifft(spectrum.bins[first : last + 1], n=length)
    magnitude = np.abs(analytic)
    magnitude *= 2.0 * length / spectrum.n_samples
    return Envelope(
        fs_hz=length * df,
        band=band,
        magnitude=magnitude,
        window=hann_window(length),
    )


def envelope_spectrum(env: Envelope, *, max_hz: float) -> EnvelopeSpectrum:
    """Compute the amplitude spectrum of an envelope up to ``max_hz``.

    Notes
    -----
    The envelope already carries the Hann window of the analysis, so its
    plain FFT is a Hann-windowed spectrum: amplitude ``2 |E[k]| / sum(w)``
    with ``sum(w) = m / 2`` for the periodic window of length ``m``.
    """
    length = env.magnitude.size
    resolution = env.fs_hz / length
    count = min(int(max_hz / resolution) + 1, length // 2 + 1)
    bins = scipy.fft.rfft(env.magnitude)[:count]
    return EnvelopeSpectrum(
        resolution_hz=resolution, amplitude=np.abs(bins) * (4.0 / length)
    )
