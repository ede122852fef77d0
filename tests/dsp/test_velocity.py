from __future__ import annotations

import math

import numpy as np
import pytest

from dsp import IsoZone, compute_spectrum, iso_zone, velocity_rms_mm_s
from dsp.velocity import fit_velocity_band, velocity_band_hz

G = 9.80665


def acceleration(n: int, fs_hz: float, freq_hz: float, amplitude: float):
    t = np.arange(n) / fs_hz
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


class TestVelocityRms:
    @pytest.mark.parametrize(
        ("freq_hz", "n"), [(50.0, 65536), (100.0, 50001), (312.7, 65521)]
    )
    def test_sine_in_g_integrates_to_expected_rms(self, freq_hz: float, n: int) -> None:
        fs_hz = 12000.0
        spectrum = compute_spectrum(acceleration(n, fs_hz, freq_hz, 0.5), fs_hz=fs_hz)
        expected_mm_s = 0.5 * G / (2 * math.pi * freq_hz) / math.sqrt(2) * 1000
        assert velocity_rms_mm_s(spectrum, unit="g") == pytest.approx(
            expected_mm_s, rel=0.01
        )

    def test_metres_per_second_squared_unit(self) -> None:
        spectrum = compute_spectrum(
            acceleration(48000, 12000.0, 80.0, 2.0), fs_hz=12000.0
        )
        expected_mm_s = 2.0 / (2 * math.pi * 80.0) / math.sqrt(2) * 1000
        assert velocity_rms_mm_s(spectrum, unit="m/s2") == pytest.approx(
            expected_mm_s, rel=0.01
        )

    def test_tone_outside_band_contributes_nothing(self) -> None:
        spectrum = compute_spectrum(
            acceleration(48000, 12000.0, 2500.0, 5.0), fs_hz=12000.0
        )
        assert velocity_rms_mm_s(spectrum) < 1e-3

    def test_rejects_unknown_unit(self) -> None:
        spectrum = compute_spectrum(np.arange(512.0), fs_hz=12000.0)
        with pytest.raises(ValueError, match="mm/s"):
            velocity_rms_mm_s(spectrum, unit="mm/s")

    def test_band_above_nyquist_is_lowered_with_warning(self) -> None:
        spectrum = compute_spectrum(
            acceleration(4096, 1000.0, 100.0, 1.0), fs_hz=1000.0
        )
        with pytest.warns(UserWarning, match="1000 Hz to the Nyquist rate 500"):
            velocity_rms_mm_s(spectrum)

    def test_5_hz_sine_in_low_speed_band(self) -> None:
        # 30000 samples at 2560 Hz put bins 0.0853 Hz apart, so the Hann
        # lobe of the 5 Hz tone lies 35 bins above the 2 Hz edge. The
        # remaining error comes from the 1 / f**2 weight varying across
        # the lobe, an estimated (0.0853 / 5)**2 / 2 = 1.5e-4.
        spectrum = compute_spectrum(
            acceleration(30000, 2560.0, 5.0, 0.01), fs_hz=2560.0
        )
        expected_mm_s = 0.01 * G / (2 * math.pi * 5.0) / math.sqrt(2) * 1000
        velocity = velocity_rms_mm_s(spectrum, band_hz=(2.0, 1000.0))
        assert velocity == pytest.approx(expected_mm_s, rel=2e-3)

    def test_5_hz_sine_outside_10_hz_band(self) -> None:
        spectrum = compute_spectrum(
            acceleration(30000, 2560.0, 5.0, 0.01), fs_hz=2560.0
        )
        in_band_mm_s = 0.01 * G / (2 * math.pi * 5.0) / math.sqrt(2) * 1000
        velocity = velocity_rms_mm_s(spectrum, band_hz=(10.0, 1000.0))
        assert velocity < 1e-3 * in_band_mm_s

    def test_first_bin_free_of_dc_leakage(self) -> None:
        # 4096 samples at 12 kHz count bin 1 (2.93 Hz). The tone sits half
        # a bin off a bin centre, where the block mean removed before
        # windowing would leak into bin 1 and read about 3 % high. The
        # 1 g offset is a MEMS sensor's gravity reading.
        fs_hz = 12000.0
        freq_hz = 34.5 * fs_hz / 4096
        samples = acceleration(4096, fs_hz, freq_hz, 0.2) + 1.0
        spectrum = compute_spectrum(samples, fs_hz=fs_hz)
        expected_mm_s = 0.2 * G / (2 * math.pi * freq_hz) / math.sqrt(2) * 1000
        with pytest.warns(UserWarning, match="raised from 2 Hz"):
            velocity = velocity_rms_mm_s(spectrum, band_hz=(2.0, 1000.0))
        assert velocity == pytest.approx(expected_mm_s, rel=2e-3)


class TestVelocityBandHz:
    def test_unknown_speed_keeps_10_hz_band(self) -> None:
        assert velocity_band_hz(None) == (10.0, 1000.0)

    @pytest.mark.filterwarnings("error")
    @pytest.mark.parametrize(
        ("rpm", "expected"),
        [
            (120.0, (2.0, 1000.0)),
            (300.0, (2.0, 1000.0)),
            (600.0, (2.0, 1000.0)),
            (600.001, (10.0, 1000.0)),
            (601.0, (10.0, 1000.0)),
            (1800.0, (10.0, 1000.0)),
            (30000.0, (10.0, 1000.0)),
        ],
    )
    def test_band_by_shaft_speed(
        self, rpm: float, expected: tuple[float, float]
    ) -> None:
        assert velocity_band_hz(rpm) == expected

    def test_below_120_rpm_warns_and_keeps_2_hz(self) -> None:
        with pytest.warns(UserWarning, match="119 r/min is below 120 r/min"):
            band = velocity_band_hz(119.0)
        assert band == (2.0, 1000.0)

    @pytest.mark.parametrize("rpm", [0.0, -300.0, math.nan, math.inf])
    def test_rejects_invalid_rpm(self, rpm: float) -> None:
        with pytest.raises(ValueError, match="rpm must be a positive number"):
            velocity_band_hz(rpm)


class TestFitVelocityBand:
    @pytest.mark.filterwarnings("error")
    @pytest.mark.parametrize("n", [12000, 6000])
    def test_block_reaching_2_hz_keeps_band(self, n: int) -> None:
        # 6000 samples at 12 kHz put bin 1 exactly on 2 Hz.
        samples = acceleration(n, 12000.0, 50.0, 1.0)
        spectrum = compute_spectrum(samples, fs_hz=12000.0)
        assert fit_velocity_band(spectrum, (2.0, 1000.0)) == (2.0, 1000.0)

    def test_short_block_raises_lower_edge(self) -> None:
        spectrum = compute_spectrum(
            acceleration(4096, 12000.0, 50.0, 1.0), fs_hz=12000.0
        )
        with pytest.warns(UserWarning, match="from 2 Hz to 2.93 Hz") as caught:
            low_hz, high_hz = fit_velocity_band(spectrum, (2.0, 1000.0))
        assert "at least 6000 samples" in str(caught[0].message)
        assert low_hz == 12000.0 / 4096
        assert high_hz == 1000.0

    def test_zero_lower_edge_skips_dc_bin(self) -> None:
        spectrum = compute_spectrum(
            acceleration(12000, 12000.0, 50.0, 1.0), fs_hz=12000.0
        )
        with pytest.warns(UserWarning, match="from 0 Hz to 1 Hz"):
            band = fit_velocity_band(spectrum, (0.0, 1000.0))
        assert band == (1.0, 1000.0)

    def test_upper_edge_lowered_to_nyquist(self) -> None:
        spectrum = compute_spectrum(
            acceleration(4096, 1000.0, 100.0, 1.0), fs_hz=1000.0
        )
        with pytest.warns(UserWarning, match="Nyquist rate 500"):
            band = fit_velocity_band(spectrum, (10.0, 1000.0))
        assert band == (10.0, 500.0)

    def test_rejects_band_without_bins(self) -> None:
        # 256 samples at 600 kHz put bins 2343.75 Hz apart, wider than
        # the whole 10-1000 Hz band.
        spectrum = compute_spectrum(
            acceleration(256, 600_000.0, 5000.0, 1.0), fs_hz=600_000.0
        )
        with pytest.raises(ValueError, match="contains no bin"):
            fit_velocity_band(spectrum, (10.0, 1000.0))


class TestIsoZone:
    # ISO 20816-3:2022 Table A.1 boundaries A/B, B/C, C/D in mm/s r.m.s.
    @pytest.mark.parametrize(
        ("group", "foundation", "limits"),
        [
            (1, "rigid", (2.3, 4.5, 7.1)),
            (1, "flexible", (3.5, 7.1, 11.0)),
            (2, "rigid", (1.4, 2.8, 4.5)),
            (2, "flexible", (2.3, 4.5, 7.1)),
        ],
    )
    def test_zone_boundaries(
        self, group: int, foundation: str, limits: tuple[float, float, float]
    ) -> None:
        zones = [IsoZone.A, IsoZone.B, IsoZone.C]
        next_zones = [IsoZone.B, IsoZone.C, IsoZone.D]
        for limit, zone, above in zip(limits, zones, next_zones, strict=True):
            assert iso_zone(limit, group=group, foundation=foundation) == zone
            assert iso_zone(limit + 1e-6, group=group, foundation=foundation) == above

    def test_zero_is_zone_a(self) -> None:
        assert iso_zone(0.0) == IsoZone.A

    def test_rejects_unknown_group(self) -> None:
        with pytest.raises(ValueError, match="group=3"):
            iso_zone(1.0, group=3)

    def test_rejects_unknown_foundation(self) -> None:
        with pytest.raises(ValueError, match="'soft'"):
            iso_zone(1.0, foundation="soft")

    def test_rejects_negative_velocity(self) -> None:
        with pytest.raises(ValueError, match=r"-1\.0"):
            iso_zone(-1.0)
