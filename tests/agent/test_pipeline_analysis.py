"""A waveform's analysis as the health monitor judges it, on real recordings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from agent.health import HealthMonitor, Severity
from agent.pipeline_analysis import analyse_waveform, iso_boundaries
from agent.settings import AssetSettings, HealthSettings
from drivers.base import Waveform
from drivers.sim.recordings import Recording, load_recording

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
BLOCK = 16_384
BEARING = AssetSettings(bearing="6205")


def capture(recording: Recording, index: int, *, flat: bool = False) -> Waveform:
    """Return block ``index`` of a recording, or zeros as a dead sensor sends."""
    start = index * BLOCK
    samples = recording.samples[start : start + BLOCK].astype(np.float64)
    if flat:
        samples = np.zeros(BLOCK)
    return Waveform(
        asset="pump",
        point="accel",
        timestamp=T0 + timedelta(minutes=index),
        fs_hz=recording.fs_hz,
        samples=samples,
        rpm=recording.rpm,
    )


def monitor(asset: AssetSettings) -> HealthMonitor:
    return HealthMonitor(
        HealthSettings(warmup_count=4, min_duration=0),
        {"pump": asset},
        state_path=None,
        iso_boundaries=iso_boundaries,
    )


def judge(
    health: HealthMonitor, waveform: Waveform, asset: AssetSettings
) -> tuple[dict[str, float], Severity, float]:
    result = analyse_waveform(waveform, asset, waveform.rpm)
    assessment = health.assess("pump", waveform.timestamp, result.health_values)
    return result.health_values, assessment.severity, assessment.score


class TestDeadSensor:
    def test_flat_waveform_warns_of_sensor_fault(self) -> None:
        recording = load_recording("normal_97")
        health = monitor(BEARING)
        for i in range(6):
            _, severity, _ = judge(health, capture(recording, i), BEARING)
            assert severity is Severity.OK

        values, severity, score = judge(
            health, capture(recording, 6, flat=True), BEARING
        )
        assert values == {"sensor_fault": 1.0}
        assert severity is Severity.WARNING
        # The warning limit of 1 scores 70, as every warning limit does.
        assert score == 70.0

    def test_flat_waveform_keeps_bearing_alarm(self) -> None:
        recording = load_recording("inner_race_007_105")
        health = monitor(BEARING)
        for i in range(4):
            _, severity, _ = judge(health, capture(recording, i), BEARING)
        assert severity is Severity.ALARM
        episode = health.assess("pump", T0 + timedelta(minutes=4), {}).episode_id

        waveform = capture(recording, 5, flat=True)
        result = analyse_waveform(waveform, BEARING, waveform.rpm)
        assessment = health.assess("pump", waveform.timestamp, result.health_values)
        assert assessment.severity is Severity.ALARM
        assert assessment.episode_id == episode
        assert assessment.indicators["bearing_fault"].severity is Severity.ALARM
        assert assessment.indicators["sensor_fault"].severity is Severity.WARNING
        assert result.summary["sensor_fault"] is True
        assert result.summary["iso_zone"] is None

    def test_fault_clears_when_signal_returns(self) -> None:
        recording = load_recording("normal_97")
        health = monitor(BEARING)
        for i in range(5):
            judge(health, capture(recording, i), BEARING)
        judge(health, capture(recording, 5, flat=True), BEARING)

        values, severity, _ = judge(health, capture(recording, 6), BEARING)
        assert values["sensor_fault"] == 0.0
        assert severity is Severity.OK

    def test_detected_without_bearing(self) -> None:
        recording = load_recording("normal_97")
        no_bearing = AssetSettings()
        health = monitor(no_bearing)
        values, severity, _ = judge(
            health, capture(recording, 0, flat=True), no_bearing
        )
        assert values == {"sensor_fault": 1.0}
        assert severity is Severity.WARNING
