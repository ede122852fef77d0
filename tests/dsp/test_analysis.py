from __future__ import annotations

import json
import math

import numpy as np
import pytest

from drivers.sim.recordings import Recording, load_recording
from dsp import (
    BearingGeometry,
    Condition,
    IsoZone,
    MachineInfo,
    analyse,
    bearing_by_model,
)


def recording_block(
    name: str, length: int | None = None, offset: int = 0
) -> tuple[np.ndarray, Recording]:
    recording = load_recording(name)
    samples = np.asarray(recording.samples, dtype=np.float64)
    if length is not None:
        samples = samples[offset : offset + length]
    return samples, recording


MACHINE_6205 = MachineInfo(bearing=bearing_by_model("6205"))
# (length, offset): the whole record, then blocks as a sensor delivers them.
BLOCKS = [(None, 0), (65536, 0), (16384, 0), (16384, 57344)]
RACE_FAULTS = {Condition.INNER_RACE, Condition.OUTER_RACE}
G = 9.80665


def analyse_recording(name: str, length: int | None, offset: int):
    samples, recording = recording_block(name, length, offset)
    return analyse(
        samples, fs_hz=recording.fs_hz, rpm=recording.rpm, machine=MACHINE_6205
    )


class TestDiagnosisOnRecordings:
    @pytest.mark.parametrize(("length", "offset"), BLOCKS)
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("inner_race_007_105", Condition.INNER_RACE),
            ("inner_race_021_209", Condition.INNER_RACE),
            ("outer_race_007_130", Condition.OUTER_RACE),
            ("outer_race_021_234", Condition.OUTER_RACE),
        ],
    )
    def test_race_fault_is_named(
        self, name: str, expected: Condition, length: int | None, offset: int
    ) -> None:
        diagnosis = analyse_recording(name, length, offset).diagnosis
        assert diagnosis.condition == expected
        assert diagnosis.confidence >= 0.6

    @pytest.mark.parametrize(("length", "offset"), BLOCKS)
    def test_normal_record_is_normal_in_zone_a(
        self, length: int | None, offset: int
    ) -> None:
        result = analyse_recording("normal_97", length, offset)
        assert result.diagnosis.condition == Condition.NORMAL
        assert result.iso_zone == IsoZone.A

    @pytest.mark.parametrize(("length", "offset"), BLOCKS)
    @pytest.mark.parametrize("name", ["outer_race_014_197", "ball_007_118"])
    def test_doubtful_record_is_not_a_confident_race_fault(
        self, name: str, length: int | None, offset: int
    ) -> None:
        diagnosis = analyse_recording(name, length, offset).diagnosis
        assert diagnosis.condition not in RACE_FAULTS
        if diagnosis.condition == Condition.ROLLING_ELEMENT:
            assert diagnosis.confidence <= 0.5

    def test_inner_race_evidence_names_bpfi(self) -> None:
        diagnosis = analyse_recording("inner_race_007_105", 65536, 0).diagnosis
        assert any("BPFI x1" in text for text in diagnosis.evidence)
        bpfi = next(line for line in diagnosis.lines if line.label == "BPFI x1")
        # 6205 at 1797 rpm: BPFI = 5.4152 x 29.95 Hz, less a little slip.
        assert bpfi.found_hz == pytest.approx(162.19, rel=0.02)
        assert bpfi.snr_db > 20.0

    def test_normal_record_rms_matches_data_sheet(self) -> None:
        result = analyse_recording("normal_97", None, 0)
        assert result.time_domain.rms == pytest.approx(0.07, abs=0.01)


class TestAnalyseInputs:
    def test_missing_rpm_keeps_rpm_free_indicators(self) -> None:
        samples, recording = recording_block("outer_race_007_130", 16384)
        result = analyse(samples, fs_hz=recording.fs_hz, machine=MACHINE_6205)
        assert result.time_domain.rms > 0
        assert result.velocity_rms_mm_s > 0
        assert result.orders is None
        assert result.defect_frequencies is None
        assert result.diagnosis.condition == Condition.UNKNOWN
        assert result.skipped == {
            "orders": "rpm not given",
            "envelope": "rpm not given",
            "diagnosis": "rpm not given",
        }

    def test_missing_bearing_skips_diagnosis_only(self) -> None:
        samples, recording = recording_block("outer_race_007_130", 16384)
        result = analyse(samples, fs_hz=recording.fs_hz, rpm=recording.rpm)
        assert result.orders is not None
        assert "diagnosis" in result.skipped
        assert "orders" not in result.skipped

    def test_constant_waveform_gives_no_nan(self) -> None:
        result = analyse(
            np.full(4096, 1.0), fs_hz=12000.0, rpm=1797.0, machine=MACHINE_6205
        )
        text = json.dumps(result.to_dict(), allow_nan=False)
        assert result.velocity_rms_mm_s == 0.0
        assert result.time_domain.kurtosis is None
        assert result.diagnosis.condition in {Condition.NORMAL, Condition.UNKNOWN}
        assert "NaN" not in text

    @pytest.mark.parametrize("level", [0.0, 1.0, -3.5])
    def test_flat_waveform_is_never_normal(self, level: float) -> None:
        # A dead sensor reads a constant; calling it healthy hides the fault.
        result = analyse(
            np.full(24000, level), fs_hz=12000.0, rpm=1796.0, machine=MACHINE_6205
        )
        assert result.diagnosis.condition is Condition.UNKNOWN
        assert result.diagnosis.confidence == 0.0
        assert "flat" in result.diagnosis.evidence[0]
        assert "flat" in result.skipped["envelope"]
        assert result.flat is True

    def test_flat_flagged_without_speed_or_bearing(self) -> None:
        result = analyse(np.zeros(24000), fs_hz=12000.0)
        assert result.flat is True
        assert result.to_dict()["flat"] is True

    def test_quiet_real_signal_is_not_flat(self) -> None:
        # The healthy record at 0.07 g RMS is far above the flat limit.
        samples, recording = recording_block("normal_97", 16384)
        result = analyse(
            samples, fs_hz=recording.fs_hz, rpm=recording.rpm, machine=MACHINE_6205
        )
        assert result.diagnosis.condition is Condition.NORMAL
        assert result.flat is False

    @pytest.mark.parametrize("rpm", [0.0, -5.0, float("nan")])
    def test_rejects_invalid_rpm(self, rpm: float) -> None:
        with pytest.raises(ValueError, match="rpm"):
            analyse(np.zeros(1024), fs_hz=1000.0, rpm=rpm)

    def test_rejects_unknown_unit(self) -> None:
        with pytest.raises(ValueError, match="'in/s'"):
            analyse(np.zeros(1024), fs_hz=1000.0, unit="in/s")

    def test_rejects_nan_samples(self) -> None:
        samples = np.zeros(1024)
        samples[3] = math.nan
        with pytest.raises(ValueError, match="index 3"):
            analyse(samples, fs_hz=1000.0)

    def test_configured_band_is_used(self) -> None:
        samples, recording = recording_block("outer_race_007_130", 65536)
        machine = MachineInfo(
            bearing=bearing_by_model("6205"), envelope_band_hz=(2000.0, 5000.0)
        )
        result = analyse(
            samples, fs_hz=recording.fs_hz, rpm=recording.rpm, machine=machine
        )
        assert result.envelope is not None
        assert result.envelope.band.source == "configured"
        assert result.envelope.band.low_hz == 2000.0
        assert result.diagnosis.condition == Condition.OUTER_RACE

    def test_band_above_nyquist_is_clipped_with_warning(self) -> None:
        samples, _ = recording_block("outer_race_007_130", 16384)
        machine = MachineInfo(
            bearing=bearing_by_model("6205"), envelope_band_hz=(2000.0, 9000.0)
        )
        with pytest.warns(UserWarning, match="9000 Hz to the Nyquist rate 6000"):
            analyse(samples, fs_hz=12000.0, rpm=1796.0, machine=machine)

    def test_low_sample_rate_skips_envelope_with_reason(self) -> None:
        t = np.arange(4096) / 500.0
        machine = MachineInfo(
            bearing=BearingGeometry(balls=9, ball_diameter=0.3126, pitch_diameter=1.537)
        )
        with pytest.warns(UserWarning):
            result = analyse(
                np.sin(2 * np.pi * 30 * t),
                fs_hz=500.0,
                rpm=1800.0,
                machine=machine,
            )
        assert result.envelope is None
        assert "Nyquist" in result.skipped["envelope"]


# The running speed of a 300 r/min machine is a 5 Hz sine, here 0.01 g
# for 30000 samples at 2560 Hz (bins 0.0853 Hz apart). In the 2-1000 Hz
# band its velocity RMS is A / (2 pi f) / sqrt(2). The tolerance of 2e-3
# covers the 1 / f**2 weight varying across the Hann lobe, an estimated
# (0.0853 / 5)**2 / 2 = 1.5e-4.
SLOW_FS_HZ = 2560.0
SLOW_TONE_HZ = 5.0
SLOW_TONE_G = 0.01
SLOW_VELOCITY_MM_S = (
    SLOW_TONE_G * G / (2 * math.pi * SLOW_TONE_HZ) / math.sqrt(2) * 1000
)


def slow_machine_block(n: int = 30000, fs_hz: float = SLOW_FS_HZ) -> np.ndarray:
    t = np.arange(n) / fs_hz
    return SLOW_TONE_G * np.sin(2 * np.pi * SLOW_TONE_HZ * t)


class TestAnalyseVelocityBand:
    def test_slow_machine_counts_running_speed(self) -> None:
        result = analyse(slow_machine_block(), fs_hz=SLOW_FS_HZ, rpm=300.0)
        assert result.velocity_band_hz == (2.0, 1000.0)
        assert result.velocity_rms_mm_s == pytest.approx(SLOW_VELOCITY_MM_S, rel=2e-3)

    @pytest.mark.parametrize("rpm", [1800.0, None])
    def test_fast_or_unknown_speed_excludes_5_hz(self, rpm: float | None) -> None:
        result = analyse(slow_machine_block(), fs_hz=SLOW_FS_HZ, rpm=rpm)
        assert result.velocity_band_hz == (10.0, 1000.0)
        assert result.velocity_rms_mm_s < 1e-3 * SLOW_VELOCITY_MM_S

    @pytest.mark.filterwarnings("error")
    @pytest.mark.parametrize(
        ("rpm", "expected"),
        [(120.0, (2.0, 1000.0)), (600.0, (2.0, 1000.0)), (601.0, (10.0, 1000.0))],
    )
    def test_band_boundaries(self, rpm: float, expected: tuple[float, float]) -> None:
        result = analyse(slow_machine_block(), fs_hz=SLOW_FS_HZ, rpm=rpm)
        assert result.velocity_band_hz == expected

    def test_below_120_rpm_warns_and_keeps_2_hz(self) -> None:
        with pytest.warns(UserWarning, match="119 r/min is below 120 r/min"):
            result = analyse(slow_machine_block(), fs_hz=SLOW_FS_HZ, rpm=119.0)
        assert result.velocity_band_hz == (2.0, 1000.0)
        assert result.velocity_rms_mm_s == pytest.approx(SLOW_VELOCITY_MM_S, rel=2e-3)

    def test_short_block_records_raised_edge(self) -> None:
        # 4096 samples at 12 kHz put the first bin above DC at 2.93 Hz.
        samples = slow_machine_block(4096, 12000.0)
        with pytest.warns(UserWarning, match="from 2 Hz to 2.93 Hz"):
            result = analyse(samples, fs_hz=12000.0, rpm=300.0)
        assert result.velocity_band_hz == (12000.0 / 4096, 1000.0)


class TestAnalysisToDict:
    def test_round_trips_through_strict_json(self) -> None:
        result = analyse_recording("inner_race_007_105", 16384, 0)
        data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        assert data["diagnosis"]["condition"] == "inner_race"
        assert data["iso_zone"] == "A"
        assert data["defect_frequencies"]["bpfi_hz"] == pytest.approx(
            5.4152 * 1797 / 60, rel=1e-4
        )
        assert isinstance(data["diagnosis"]["lines"], list)

    def test_velocity_band_is_a_list_of_hz(self) -> None:
        result = analyse(slow_machine_block(), fs_hz=SLOW_FS_HZ, rpm=300.0)
        data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        assert data["velocity_band_hz"] == [2.0, 1000.0]
