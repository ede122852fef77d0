from __future__ import annotations

import math

import numpy as np
import pytest

from dsp import IsoZone, compute_spectrum, iso_zone, velocity_rms_mm_s

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
