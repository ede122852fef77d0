from __future__ import annotations

import numpy as np
import pytest

from dsp import MIN_SAMPLES, compute_spectrum


def sine(n: int, fs_hz: float, freq_hz: float, amplitude: float) -> np.ndarray:
    t = np.arange(n) / fs_hz
    return amplitude * np.sin(2 * np.pi * freq_hz * t + 0.3)


class TestSpectrumScaling:
    @pytest.mark.parametrize("n", [65536, 65535, 65521, 50001, 4096])
    def test_sine_on_bin_reads_its_amplitude(self, n: int) -> None:
        fs_hz = 12000.0
        k = 1234
        freq_hz = k * fs_hz / n
        spectrum = compute_spectrum(sine(n, fs_hz, freq_hz, 2.5), fs_hz=fs_hz)
        amplitude = spectrum.amplitude()
        assert int(np.argmax(amplitude)) == k
        assert amplitude[k] == pytest.approx(2.5, rel=1e-9)

    def test_frequency_axis_matches_bin_spacing(self) -> None:
        spectrum = compute_spectrum(np.ones(1000) + np.arange(1000), fs_hz=500.0)
        freqs = spectrum.frequencies()
        assert freqs[1] == pytest.approx(0.5)
        assert freqs[-1] == pytest.approx(250.0)

    @pytest.mark.parametrize("offset_bins", [0.0, 0.25, 0.5])
    def test_band_amplitude_has_no_scalloping(self, offset_bins: float) -> None:
        n, fs_hz = 65521, 10000.0
        freq_hz = (700 + offset_bins) * fs_hz / n
        spectrum = compute_spectrum(sine(n, fs_hz, freq_hz, 1.7), fs_hz=fs_hz)
        assert spectrum.band_amplitude(700) == pytest.approx(1.7, rel=0.01)

    def test_mean_is_removed(self) -> None:
        spectrum = compute_spectrum(np.full(512, 3.0), fs_hz=1000.0)
        assert np.all(spectrum.amplitude() == 0.0)


class TestWaveformValidation:
    def test_rejects_nan_with_its_index(self) -> None:
        samples = np.zeros(1000)
        samples[17] = np.nan
        with pytest.raises(ValueError, match="index 17"):
            compute_spectrum(samples, fs_hz=1000.0)

    def test_names_the_bad_value_in_plain_words(self) -> None:
        samples = np.zeros(1000)
        samples[3] = np.inf
        with pytest.raises(ValueError) as caught:
            compute_spectrum(samples, fs_hz=1000.0)
        assert str(caught.value).endswith("first at index 3 (inf)")

    def test_rejects_infinity(self) -> None:
        samples = np.zeros(1000)
        samples[-1] = -np.inf
        with pytest.raises(ValueError, match="NaN or infinite"):
            compute_spectrum(samples, fs_hz=1000.0)

    def test_rejects_short_waveform_with_counts(self) -> None:
        with pytest.raises(ValueError, match=f"at least {MIN_SAMPLES}.*found 10"):
            compute_spectrum(np.zeros(10), fs_hz=1000.0)

    @pytest.mark.parametrize("fs_hz", [0.0, -1.0, float("nan")])
    def test_rejects_invalid_sample_rate(self, fs_hz: float) -> None:
        with pytest.raises(ValueError, match="sample rate"):
            compute_spectrum(np.zeros(1000), fs_hz=fs_hz)

    def test_accepts_column_vector(self) -> None:
        spectrum = compute_spectrum(np.zeros((512, 1)), fs_hz=1000.0)
        assert spectrum.n_samples == 512

    def test_rejects_two_dimensional_array(self) -> None:
        with pytest.raises(ValueError, match="1-D"):
            compute_spectrum(np.zeros((512, 2)), fs_hz=1000.0)
