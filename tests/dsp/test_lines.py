from __future__ import annotations

import numpy as np
import pytest

from dsp.lines import MAX_SNR_DB, measure_lines


class TestMeasureLines:
    def test_line_over_flat_floor(self) -> None:
        amplitude = np.full(4000, 0.01)
        amplitude[1000] = 0.1  # 20 dB over the floor, at 100 Hz
        [line] = measure_lines(amplitude, 0.1, [("X", 100.5)])
        assert line.found_hz == pytest.approx(100.0)
        assert line.amplitude == pytest.approx(0.1)
        assert line.noise_floor == pytest.approx(0.01)
        assert line.snr_db == pytest.approx(20.0)

    def test_line_outside_tolerance_is_not_found(self) -> None:
        amplitude = np.full(4000, 0.01)
        amplitude[1100] = 0.1  # 10 % away from the 100 Hz target
        [line] = measure_lines(amplitude, 0.1, [("X", 100.0)])
        assert line.snr_db == pytest.approx(0.0)

    def test_target_beyond_spectrum_is_left_out(self) -> None:
        amplitude = np.full(1000, 0.01)
        lines = measure_lines(amplitude, 0.1, [("in", 50.0), ("out", 99.0)])
        assert [line.label for line in lines] == ["in"]

    def test_zero_floor_gives_capped_snr(self) -> None:
        amplitude = np.zeros(4000)
        amplitude[1000] = 1.0
        [line] = measure_lines(amplitude, 0.1, [("X", 100.0)])
        assert line.snr_db == MAX_SNR_DB

    def test_all_zero_gives_zero_snr(self) -> None:
        [line] = measure_lines(np.zeros(4000), 0.1, [("X", 100.0)])
        assert line.snr_db == 0.0
