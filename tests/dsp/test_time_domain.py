from __future__ import annotations

import numpy as np
import pytest

from dsp.time_domain import time_domain_indicators


def indicators(samples: np.ndarray):
    mean = float(samples.mean())
    return time_domain_indicators(samples - mean, mean)


class TestTimeDomainIndicators:
    def test_sine_statistics(self) -> None:
        t = np.arange(48000) / 48000.0
        result = indicators(0.2 + 3.0 * np.sin(2 * np.pi * 50 * t))
        assert result.mean == pytest.approx(0.2)
        assert result.rms == pytest.approx(3.0 / np.sqrt(2), rel=1e-6)
        assert result.peak == pytest.approx(3.0, rel=1e-6)
        assert result.peak_to_peak == pytest.approx(6.0, rel=1e-6)
        assert result.crest_factor == pytest.approx(np.sqrt(2), rel=1e-6)
        # Pearson kurtosis of a sine: E[sin^4] / E[sin^2]^2 = (3/8) / (1/4).
        assert result.kurtosis == pytest.approx(1.5, rel=1e-6)
        assert result.skewness == pytest.approx(0.0, abs=1e-9)

    def test_gaussian_kurtosis_is_three(self, rng: np.random.Generator) -> None:
        result = indicators(rng.normal(size=400_000))
        assert result.kurtosis == pytest.approx(3.0, abs=0.05)
        assert result.skewness == pytest.approx(0.0, abs=0.02)

    def test_skewed_signal_has_positive_skewness(
        self, rng: np.random.Generator
    ) -> None:
        # An exponential distribution has skewness 2 and kurtosis 9.
        result = indicators(rng.exponential(size=400_000))
        assert result.skewness == pytest.approx(2.0, abs=0.1)
        assert result.kurtosis == pytest.approx(9.0, abs=0.6)

    def test_constant_waveform_gives_none_not_nan(self) -> None:
        result = indicators(np.full(1000, 4.2))
        assert result.rms == 0.0
        assert result.crest_factor is None
        assert result.kurtosis is None
        assert result.skewness is None
