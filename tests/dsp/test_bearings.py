from __future__ import annotations

import pytest

from dsp import BearingGeometry, bearing_by_model, defect_orders, known_bearings


class TestDefectFrequencies:
    def test_6205_at_1797_rpm(self) -> None:
        # Hand-evaluated from the kinematic formulas with d/D = 0.3126/1.537.
        freqs = defect_orders(bearing_by_model("6205")).in_hz(1797 / 60)
        assert freqs.bpfo_hz == pytest.approx(107.36, abs=0.01)
        assert freqs.bpfi_hz == pytest.approx(162.19, abs=0.01)
        assert freqs.bsf_hz == pytest.approx(70.58, abs=0.01)
        assert freqs.two_bsf_hz == pytest.approx(141.17, abs=0.01)
        assert freqs.ftf_hz == pytest.approx(11.93, abs=0.01)

    def test_6203_matches_published_orders(self) -> None:
        # Multiples of shaft speed published with the CWRU rig description.
        orders = defect_orders(bearing_by_model("6203"))
        assert orders.bpfi == pytest.approx(4.9469, abs=1e-3)
        assert orders.bpfo == pytest.approx(3.0530, abs=1e-3)
        assert orders.ftf == pytest.approx(0.3817, abs=1e-3)
        assert orders.bsf == pytest.approx(1.9940, abs=1e-3)

    def test_contact_angle_lowers_ratio(self) -> None:
        flat = BearingGeometry(balls=10, ball_diameter=1.0, pitch_diameter=5.0)
        angled = BearingGeometry(
            balls=10, ball_diameter=1.0, pitch_diameter=5.0, contact_angle_deg=60
        )
        # cos 60° halves d/D from 0.2 to 0.1: BPFO = 5 * 0.9.
        assert defect_orders(flat).bpfo == pytest.approx(4.0)
        assert defect_orders(angled).bpfo == pytest.approx(4.5)


class TestCatalogue:
    def test_known_bearings_are_sorted(self) -> None:
        assert known_bearings() == sorted(known_bearings())
        assert "6205" in known_bearings()

    @pytest.mark.parametrize("name", ["6205", "skf 6205", "6205-2RS JEM"])
    def test_lookup_ignores_maker_and_suffix(self, name: str) -> None:
        assert bearing_by_model(name).balls == 9

    def test_unknown_model_lists_known_ones(self) -> None:
        with pytest.raises(KeyError, match="6205"):
            bearing_by_model("7312")


class TestGeometryValidation:
    def test_rejects_ball_larger_than_pitch(self) -> None:
        with pytest.raises(ValueError, match="ball_diameter"):
            BearingGeometry(balls=8, ball_diameter=2.0, pitch_diameter=1.0)

    def test_rejects_too_few_balls(self) -> None:
        with pytest.raises(ValueError, match="found 2"):
            BearingGeometry(balls=2, ball_diameter=0.2, pitch_diameter=1.0)
