"""One Hann-windowed real FFT of a waveform, shared by every indicator.

Scaling used throughout ``dsp``: ``Spectrum.amplitude()`` is the
single-sided peak amplitude. A sine of amplitude ``A`` whose frequency
falls on a bin reads ``A`` at that bin, because the magnitude is doubled
for the one-sided view and divided by the window's coherent gain
``sum(w)``. The DC and Nyquist bins are not doubled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

import numpy as np
import scipy.fft
from numpy.typing import NDArray

MIN_SAMPLES: Final = 256
"""Shortest waveform analysed: shorter blocks resolve no machine order."""

MAX_SAMPLE_MAGNITUDE: Final = 1e30
"""Largest sample magnitude analysed, far above any accelerometer's range.

Kurtosis raises samples to the fourth power; above about 1e75 that
overflows float64, so such a block can only be corrupt data."""


@lru_cache(maxsize=16)
def hann_window(n: int) -> NDArray[np.float64]:
    """Return the periodic Hann window of length ``n`` (read-only, cached).

    The periodic form (``w[k] = 0.5 - 0.5 cos(2 pi k / n)``) is the one
    whose DFT has exactly three non-zero bins, which keeps the window's
    own leakage out of everything but the lowest envelope bins.
    """
    k = np.arange(n, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)
    window.setflags(write=False)
    return window


@dataclass(frozen=True, slots=True, kw_only=True)
class Spectrum:
    """Hann-windowed real FFT of a mean-removed waveform.

    ``bins`` contains ``scipy.fft.rfft(w * (x - mean(x)))`` with shape
    ``(n_samples // 2 + 1,)``. ``coherent_gain`` is ``sum(w)`` and
    ``power_gain`` is ``sum(w**2)``; both are sums, not means, so the
    amplitude of bin ``k`` is ``2 * |bins[k]| / coherent_gain``.
    """

    fs_hz: float
    n_samples: int
    bins: NDArray[np.complex128] = field(repr=False)
    coherent_gain: float
    power_gain: float

    @property
    def resolution_hz(self) -> float:
        """Bin spacing ``fs_hz / n_samples`` in Hz."""
        return self.fs_hz / self.n_samples

    def frequencies(self) -> NDArray[np.float64]:
        """Return the frequency of every bin in Hz."""
        return scipy.fft.rfftfreq(self.n_samples, 1.0 / self.fs_hz)

    def amplitude(self) -> NDArray[np.float64]:
        """Return the single-sided peak amplitude of every bin.

        Notes
        -----
        ``a[k] = 2 |X[k]| / sum(w)`` except at DC and, for an even length,
        the Nyquist bin, which have no mirror image and are not doubled.
        """
        amplitude = np.abs(self.bins) * (2.0 / self.coherent_gain)
        amplitude[0] *= 0.5
        if self.n_samples % 2 == 0:
            amplitude[-1] *= 0.5
        return amplitude

    def bin_index(self, frequency_hz: float) -> int:
        """Return the index of the bin nearest ``frequency_hz``."""
        index = round(frequency_hz / self.resolution_hz)
        return min(max(index, 0), self.bins.size - 1)

    def band_amplitude(self, centre_bin: int, *, half_width: int = 2) -> float:
        """Estimate the peak amplitude of a sine near ``centre_bin``.

        Parameters
        ----------
        centre_bin : int
            Bin at or next to the tone.
        half_width : int
            Bins on each side summed with the centre one; two covers the
            Hann main lobe.

        Returns
        -------
        float
            ``sqrt(4 * sum(|X[k]|**2) / (n * sum(w**2)))`` over the bins.

        Notes
        -----
        Summing energy over the main lobe makes the estimate independent
        of where the tone falls between bins (no scalloping loss), by
        Parseval's theorem: a sine of amplitude ``A`` puts
        ``n * A**2 * sum(w**2) / 4`` into the positive-frequency bins.
        """
        low = max(centre_bin - half_width, 1)
        high = min(centre_bin + half_width + 1, self.bins.size)
        lobe = self.bins[low:high]
        energy = float(np.vdot(lobe, lobe).real)
        return float(np.sqrt(4.0 * energy / (self.n_samples * self.power_gain)))


def validate_waveform(samples: object, fs_hz: float) -> NDArray[np.float64]:
    """Return ``samples`` as a 1-D float64 array after checking it.

    Raises
    ------
    ValueError
        If ``fs_hz`` is not a positive finite number, the array is not
        one-dimensional (an ``(n, 1)`` column is accepted and flattened),
        has fewer than ``MIN_SAMPLES`` samples, or contains NaN, infinity
        or a magnitude above ``MAX_SAMPLE_MAGNITUDE``.
    TypeError
        If ``samples`` cannot be converted to real floating point.
    """
    if not np.isfinite(fs_hz) or fs_hz <= 0:
        raise ValueError(
            f"sample rate must be a positive number of Hz, found fs_hz={fs_hz!r}"
        )
    array = np.asarray(samples)
    if np.iscomplexobj(array) or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"samples must be real numbers, found dtype {array.dtype}")
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"samples must be a 1-D array, found shape {array.shape}")
    if array.size < MIN_SAMPLES:
        raise ValueError(f"need at least {MIN_SAMPLES} samples, found {array.size}")
    array = np.asarray(array, dtype=np.float64)
    # The extremes are NaN or infinite whenever a sample is; only then is
    # the slower element-wise scan run.
    high, low = float(array.max()), float(array.min())
    if not (np.isfinite(high) and np.isfinite(low)):
        bad = np.flatnonzero(~np.isfinite(array))
        raise ValueError(
            f"samples contain {bad.size} NaN or infinite values, "
            f"first at index {int(bad[0])} ({float(array[bad[0]])})"
        )
    peak = max(high, -low)
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise ValueError(
            f"samples must be within +/-{MAX_SAMPLE_MAGNITUDE:g}, found a "
            f"sample of magnitude {peak:g}"
        )
    return array


def compute_spectrum(samples: NDArray[np.float64], *, fs_hz: float) -> Spectrum:
    """Compute the Hann-windowed rfft of a mean-removed waveform.

    Parameters
    ----------
    samples : ndarray, shape (n,)
        Waveform in engineering units, ``n >= MIN_SAMPLES``.
    fs_hz : float
        Sample rate in Hz.

    Returns
    -------
    Spectrum
        The complex bins and the window gains needed to scale them.

    Raises
    ------
    ValueError
        On NaN or infinite samples, too few samples or ``fs_hz <= 0``.
    """
    x = validate_waveform(samples, fs_hz)
    return _spectrum_of_valid(x - x.mean(), fs_hz)


def _spectrum_of_valid(centred: NDArray[np.float64], fs_hz: float) -> Spectrum:
    window = hann_window(centred.size)
    bins = scipy.fft.rfft(centred * window, overwrite_x=True)
    return Spectrum(
        fs_hz=float(fs_hz),
        n_samples=centred.size,
        bins=bins,
        coherent_gain=_window_sums(centred.size)[0],
        power_gain=_window_sums(centred.size)[1],
    )


@lru_cache(maxsize=16)
def _window_sums(n: int) -> tuple[float, float]:
    window = hann_window(n)
    return float(window.sum()), float(window @ window)


def clip_band(
    band_hz: tuple[float, float], fs_hz: float, *, what: str
) -> tuple[float, float]:
    """Return ``band_hz`` with its upper edge limited to the Nyquist rate.

    A shortened band is reported with ``warnings.warn`` showing both
    values, because it changes what the indicator means.

    Raises
    ------
    ValueError
        If the band is empty or lies wholly above the Nyquist rate.
    """
    low, high = band_hz
    nyquist = fs_hz / 2.0
    if not 0.0 <= low < high:
        raise ValueError(f"{what} band must satisfy 0 <= low < high, found {band_hz!r}")
    if low >= nyquist:
        raise ValueError(
            f"{what} band {band_hz!r} Hz lies above the Nyquist rate "
            f"{nyquist:g} Hz of fs_hz={fs_hz:g}"
        )
    if high > nyquist:
        warnings.warn(
            f"{what} band upper edge lowered from {high:g} Hz to the "
            f"Nyquist rate {nyquist:g} Hz",
            stacklevel=3,
        )
        high = nyquist
    return low, high
