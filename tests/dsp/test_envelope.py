"""Envelope tests. The envelope checked is that of the waveform itself:
``magnitude / window`` of ``band_envelope``, over the middle 80 % of the
block where the Hann window is above 0.35."""

from __future__ import annotations

import numpy as np
import pytest

from dsp import Band, band_envelope, compute_spectrum, envelope_spectrum
from dsp.envelope import choose_band, spectral_kurtosis

FS_HZ = 12000.0
N = 16384


def middle(values: np.ndarray) -> np.ndarray:
    cut = values.size // 10
    return values[cut:-cut]


def envelope_of(samples: np.ndarray, low_hz: float, high_hz: float):
    spectrum = compute_spectrum(samples, fs_hz=FS_HZ)
    band = Band(low_hz=low_hz, high_hz=high_hz, source="configured")
    return band_envelope(spectrum, band, min_rate_hz=1500.0)


class TestBandEnvelope:
    def test_non_integer_cycle_sine_has_flat_envelope(self) -> None:
        t = np.arange(N) / FS_HZ
        samples = np.sin(2 * np.pi * 3137.3 * t + 1.0)
        env = envelope_of(samples, 2500.0, 3800.0)
        ratio = middle(env.magnitude) / middle(env.window)
        assert np.all(np.abs(ratio - 1.0) < 0.02)

    def test_amplitude_modulation_is_recovered(self) -> None:
        t = np.arange(N) / FS_HZ
        modulation = 1.0 + 0.5 * np.sin(2 * np.pi * 37.0 * t)
        samples = modulation * np.sin(2 * np.pi * 3000.0 * t)
        env = envelope_of(samples, 2500.0, 3500.0)
        times = np.arange(env.magnitude.size) / env.fs_hz
        expected = 1.0 + 0.5 * np.sin(2 * np.pi * 37.0 * times)
        error = middle(env.magnitude) / middle(env.window) - middle(expected)
        assert np.all(np.abs(error) < 0.02)

    def test_envelope_rate_follows_padding(self) -> None:
        t = np.arange(N) / FS_HZ
        env = envelope_of(np.sin(2 * np.pi * 3000.0 * t), 2900.0, 3100.0)
        assert env.fs_hz >= 1500.0
        assert env.fs_hz < FS_HZ

    def test_band_without_bins_is_rejected(self) -> None:
        spectrum = compute_spectrum(np.arange(512.0), fs_hz=FS_HZ)
        band = Band(low_hz=100.0, high_hz=101.0, source="configured")
        with pytest.raises(ValueError, match="contains no bin"):
            band_envelope(spectrum, band)


class TestEnvelopeSpectrum:
    def test_modulation_line_reads_its_depth(self) -> None:
        t = np.arange(N) / FS_HZ
        fm_hz = 50 * FS_HZ / N  # on a bin of the envelope spectrum
        samples = (1.0 + 0.5 * np.sin(2 * np.pi * fm_hz * t)) * np.sin(
            2 * np.pi * 3000.0 * t
        )
        env = envelope_of(samples, 2500.0, 3500.0)
        spectrum = envelope_spectrum(env, max_hz=200.0)
        assert spectrum.resolution_hz == pytest.approx(FS_HZ / N)
        assert int(np.argmax(spectrum.amplitude[5:])) + 5 == 50
        assert spectrum.amplitude[50] == pytest.approx(0.5, rel=0.02)
        assert spectrum.max_hz >= 200.0 - spectrum.resolution_hz


class TestBandChoice:
    def test_kurtogram_finds_resonance_of_impacts(
        self, rng: np.random.Generator
    ) -> None:
        # Impacts every 1/97 s ringing at 4 kHz, buried in white noise.
        samples = rng.normal(scale=0.5, size=32768)
        ring_t = np.arange(120) / FS_HZ
        ring = np.exp(-ring_t * 1500.0) * np.sin(2 * np.pi * 4000.0 * ring_t)
        for start in np.arange(0, 32768 - 120, FS_HZ / 97).astype(int):
            samples[start : start + 120] += 3.0 * ring
        sk, step_hz = spectral_kurtosis(samples, FS_HZ)
        band = choose_band(sk, step_hz, FS_HZ, min_low_hz=1000.0, min_width_hz=500.0)
        assert band is not None
        assert band.low_hz < 4000.0 < band.high_hz
        assert band.spectral_kurtosis is not None
        assert band.spectral_kurtosis > 0.5

    def test_gaussian_noise_has_small_spectral_kurtosis(
        self, rng: np.random.Generator
    ) -> None:
        sk, _ = spectral_kurtosis(rng.normal(size=32768), FS_HZ)
        assert abs(float(sk[1:-1].mean())) < 0.1

    def test_no_band_fits_low_sample_rate(self, rng: np.random.Generator) -> None:
        sk, step_hz = spectral_kurtosis(rng.normal(size=4096), 1000.0)
        band = choose_band(sk, step_hz, 1000.0, min_low_hz=1000.0, min_width_hz=500.0)
        assert band is None
