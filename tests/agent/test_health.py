"""Health judgement with values worked out by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.health import (
    FAULT_ALARM_CONFIDENCE,
    FaultConfirmation,
    HealthMonitor,
    Limits,
    Severity,
    bearing_fault_value,
    classify,
    score,
)
from agent.health_baseline import Baseline
from agent.settings import (
    AssetSettings,
    HealthSettings,
    OilLimitsSettings,
    ThresholdSettings,
)

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

# ISO 20816-3 Annex A boundaries A/B, B/C, C/D in mm/s r.m.s.
ISO_TABLE = {
    (1, "rigid"): (2.3, 4.5, 7.1),
    (1, "flexible"): (3.5, 7.1, 11.0),
    (2, "rigid"): (1.4, 2.8, 4.5),
    (2, "flexible"): (2.3, 4.5, 7.1),
}


def iso_table(group: int, foundation: str) -> tuple[float, float, float]:
    return ISO_TABLE[(group, foundation)]


def monitor(
    tmp_path: Path | None = None,
    *,
    assets: dict[str, AssetSettings] | None = None,
    **health: float,
) -> HealthMonitor:
    settings = HealthSettings(**health)  # type: ignore[arg-type]
    return HealthMonitor(
        settings,
        assets or {},
        state_path=None if tmp_path is None else tmp_path / "health.json",
        iso_boundaries=iso_table,
    )


def fixed(warning: float, alarm: float) -> AssetSettings:
    return AssetSettings(
        thresholds={"temp": ThresholdSettings(warning=warning, alarm=alarm)}
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class TestBaseline:
    def test_limits_from_median_and_mad(self) -> None:
        baseline = Baseline()
        for value in (1.0, 1.1, 0.9, 1.2, 0.8):
            baseline.add(value, warmup_count=5)

        # median 1.0, deviations 0, .1, .1, .2, .2 -> MAD 0.1
        assert baseline.median == pytest.approx(1.0)
        assert baseline.mad == pytest.approx(0.1)
        assert baseline.limit(6.0) == pytest.approx(1.0 + 6 * 0.14826)
        assert baseline.limit(12.0) == pytest.approx(1.0 + 12 * 0.14826)

    def test_constant_values_use_floor(self) -> None:
        baseline = Baseline()
        for _ in range(5):
            baseline.add(2.0, warmup_count=5)

        # MAD 0, so sigma is 5 % of the median: 0.1
        assert baseline.limit(6.0) == pytest.approx(2.6)

    def test_not_learned_before_warmup_count(self) -> None:
        baseline = Baseline()
        for value in (1.0, 2.0):
            baseline.add(value, warmup_count=3)
        assert not baseline.learned


class TestClassify:
    LIMITS = Limits(source="fixed", warning=10.0, alarm=20.0)

    @pytest.mark.parametrize(
        ("value", "current", "expected"),
        [
            (9.99, Severity.OK, Severity.OK),
            (10.0, Severity.OK, Severity.WARNING),
            (19.0, Severity.ALARM, Severity.ALARM),  # 19 >= 20 * 0.9
            (17.9, Severity.ALARM, Severity.WARNING),
            (9.0, Severity.WARNING, Severity.WARNING),  # 9 >= 10 * 0.9
            (8.9, Severity.WARNING, Severity.OK),
            (19.5, Severity.WARNING, Severity.WARNING),
        ],
    )
    def test_hysteresis_of_ten_percent(
        self, value: float, current: Severity, expected: Severity
    ) -> None:
        assert classify(value, self.LIMITS, current, 0.1) is expected


class TestScore:
    LIMITS = Limits(source="fixed", warning=10.0, alarm=20.0)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(0.0, 100.0), (5.0, 85.0), (10.0, 70.0), (15.0, 55.0), (30.0, 20.0)],
    )
    def test_piecewise_linear(self, value: float, expected: float) -> None:
        assert score(value, self.LIMITS) == pytest.approx(expected)

    def test_zero_far_above_alarm(self) -> None:
        assert score(100.0, self.LIMITS) == 0.0


class TestBearingFaultValue:
    def test_strong_fault_keeps_confidence(self) -> None:
        assert bearing_fault_value("outer_race", 0.9, 30.0) == pytest.approx(0.9)

    def test_weak_evidence_stays_below_alarm(self) -> None:
        value = bearing_fault_value("inner_race", 0.95, 12.0)
        assert FAULT_ALARM_CONFIDENCE * 0.99 < value < FAULT_ALARM_CONFIDENCE

    @pytest.mark.parametrize("diagnosis", ["normal", "unknown"])
    def test_no_fault_is_zero(self, diagnosis: str) -> None:
        assert bearing_fault_value(diagnosis, 0.99, 40.0) == 0.0

    def test_confirmed_strong_fault_reaches_alarm(self) -> None:
        # 0.65 alone is a warning (0.5 <= 0.65 < 0.8); named three times
        # in a row with a 24 dB line it is raised to the 0.8 alarm limit.
        assert bearing_fault_value("outer_race", 0.65, 24.0) == pytest.approx(0.65)
        assert bearing_fault_value(
            "outer_race", 0.65, 24.0, confirmations=2
        ) == pytest.approx(0.65)
        assert bearing_fault_value(
            "outer_race", 0.65, 24.0, confirmations=3
        ) == pytest.approx(0.8)

    def test_confirmations_never_lift_weak_evidence(self) -> None:
        value = bearing_fault_value("outer_race", 0.7, 12.0, confirmations=10)
        assert value == pytest.approx(0.7)

    def test_confirmations_never_lift_low_confidence(self) -> None:
        value = bearing_fault_value("outer_race", 0.3, 30.0, confirmations=10)
        assert value == pytest.approx(0.3)


class TestFaultConfirmation:
    def test_third_strong_naming_alarms(self) -> None:
        faults = FaultConfirmation()
        values = [faults.update("outer_race", 0.65, 24.0) for _ in range(3)]
        assert values == pytest.approx([0.65, 0.65, 0.8])

    def test_single_miss_holds_the_fault(self) -> None:
        faults = FaultConfirmation()
        for _ in range(3):
            faults.update("outer_race", 0.65, 24.0)
        assert faults.update("unknown", 0.0, None) == pytest.approx(0.8)
        assert faults.update("outer_race", 0.7, 24.0) == pytest.approx(0.7)

    def test_three_misses_in_a_row_clear(self) -> None:
        faults = FaultConfirmation()
        faults.update("inner_race", 0.9, 30.0)
        held = [faults.update("normal", 0.9, None) for _ in range(3)]
        assert held == pytest.approx([0.9, 0.9, 0.0])

    def test_other_fault_restarts_the_streak(self) -> None:
        faults = FaultConfirmation()
        faults.update("outer_race", 0.6, 24.0)
        faults.update("outer_race", 0.6, 24.0)
        assert faults.update("inner_race", 0.6, 24.0) == pytest.approx(0.6)


class TestHealthMonitor:
    def test_raise_hold_clear_with_stable_ids(self) -> None:
        health = monitor(assets={"p1": fixed(10.0, 20.0)})

        first = health.assess("p1", at(0), {"temp": 10.5})
        hysteresis_kept = health.assess("p1", at(1), {"temp": 9.2})
        cleared = health.assess("p1", at(2), {"temp": 8.0})
        again = health.assess("p1", at(3), {"temp": 12.0})

        assert [e.action for e in first.events] == ["raised"]
        assert first.events[0].event_id == "p1:temp:1"
        assert hysteresis_kept.severity is Severity.WARNING
        assert hysteresis_kept.events == ()
        assert [e.action for e in cleared.events] == ["cleared"]
        assert cleared.events[0].event_id == "p1:temp:1"
        assert again.events[0].event_id == "p1:temp:2"

    def test_escalation_keeps_event_id(self) -> None:
        health = monitor(assets={"p1": fixed(10.0, 20.0)})
        health.assess("p1", at(0), {"temp": 11.0})

        result = health.assess("p1", at(1), {"temp": 25.0})

        assert result.events[0].action == "changed"
        assert result.events[0].event_id == "p1:temp:1"
        assert result.severity is Severity.ALARM

    def test_iso_zones_of_velocity(self) -> None:
        health = monitor(assets={"m": AssetSettings(iso_group=2)})

        zone_b = health.assess("m", at(0), {"velocity_rms_mm_s": 2.0})
        zone_c = health.assess("m", at(1), {"velocity_rms_mm_s": 3.0})
        zone_d = health.assess("m", at(2), {"velocity_rms_mm_s": 4.6})

        assert zone_b.severity is Severity.OK
        assert zone_c.severity is Severity.WARNING
        assert zone_d.severity is Severity.ALARM

    def test_one_request_per_alarm_episode(self) -> None:
        health = monitor(assets={"p1": fixed(10.0, 20.0)})
        values = [25.0, 15.0, 25.0, 15.0, 5.0, 25.0]

        results = [
            health.assess("p1", at(i), {"temp": v}) for i, v in enumerate(values)
        ]

        requests = [r.maintenance_request for r in results if r.maintenance_request]
        # Back to warning does not end the episode; back to ok does.
        assert [r.episode_id for r in requests] == ["p1:alarm:1", "p1:alarm:2"]
        assert results[4].episode_id is None

    def test_min_duration_delays_change(self) -> None:
        health = monitor(assets={"p1": fixed(10.0, 20.0)}, min_duration=10.0)

        early = health.assess("p1", at(0), {"temp": 12.0})
        middle = health.assess("p1", at(5), {"temp": 12.0})
        late = health.assess("p1", at(10), {"temp": 12.0})

        assert early.severity is Severity.OK
        assert middle.severity is Severity.OK
        assert late.severity is Severity.WARNING

    def test_short_excursion_is_ignored(self) -> None:
        health = monitor(assets={"p1": fixed(10.0, 20.0)}, min_duration=10.0)
        health.assess("p1", at(0), {"temp": 12.0})
        health.assess("p1", at(5), {"temp": 3.0})

        result = health.assess("p1", at(11), {"temp": 12.0})

        assert result.severity is Severity.OK

    def test_learned_baseline_warns(self) -> None:
        health = monitor(warmup_count=5)
        for i, value in enumerate((1.0, 1.1, 0.9, 1.2, 0.8)):
            health.assess("p1", at(i), {"kurtosis": value})

        # warning limit 1 + 6 * 0.14826 = 1.8896, alarm 2.7791
        below = health.assess("p1", at(5), {"kurtosis": 1.88})
        warning = health.assess("p1", at(6), {"kurtosis": 1.90})
        alarm = health.assess("p1", at(7), {"kurtosis": 2.78})

        assert below.severity is Severity.OK
        assert warning.severity is Severity.WARNING
        assert alarm.severity is Severity.ALARM

    def test_fixed_thresholds_override_baseline(self) -> None:
        asset = AssetSettings(
            thresholds={"rms": ThresholdSettings(warning=5.0, alarm=9.0)}
        )
        health = monitor(assets={"p1": asset}, warmup_count=3)
        for i in range(3):
            health.assess("p1", at(i), {"rms": 0.1})

        result = health.assess("p1", at(3), {"rms": 4.0})

        assert result.severity is Severity.OK
        assert [lim.source for lim in health.limits_for("p1", "rms")] == ["fixed"]

    def test_oil_codes_and_water(self) -> None:
        oil = OilLimitsSettings(
            iso4406_warning=(18, 16, 13),
            iso4406_alarm=(20, 18, 15),
            water_saturation_warning_pct=60.0,
            water_saturation_alarm_pct=80.0,
        )
        health = monitor(assets={"oil": AssetSettings(oil=oil)})

        clean = health.assess(
            "oil",
            at(0),
            {"iso4406_4um": 17, "iso4406_6um": 15, "iso4406_14um": 12},
        )
        dirty = health.assess("oil", at(1), {"iso4406_6um": 16})
        wet = health.assess("oil", at(2), {"water_saturation": 85.0})

        assert clean.severity is Severity.OK
        assert dirty.severity is Severity.WARNING
        assert dirty.events[0].indicator == "iso4406_6um"
        assert wet.severity is Severity.ALARM

    def test_diagnosis_alarm(self) -> None:
        health = monitor()
        value = bearing_fault_value("outer_race", 0.9, 35.0)

        result = health.assess("p2", at(0), {"bearing_fault": value})

        assert result.severity is Severity.ALARM
        assert result.maintenance_request is not None
        assert result.maintenance_request.episode_id == "p2:alarm:1"

    def test_rejects_non_finite_value(self) -> None:
        health = monitor()
        with pytest.raises(ValueError, match="'rms' of asset 'p1'"):
            health.assess("p1", at(0), {"rms": float("nan")})

    def test_score_capped_by_severity(self) -> None:
        health = monitor(assets={"p1": fixed(10.0, 20.0)})
        health.assess("p1", at(0), {"temp": 25.0})

        # 18.5 keeps the alarm (>= 18); uncapped it would score 44.5.
        result = health.assess("p1", at(1), {"temp": 18.5})

        assert result.severity is Severity.ALARM
        assert result.score == pytest.approx(40.0)


class TestHealthPersistence:
    def test_restart_keeps_baseline_and_episode(self, tmp_path: Path) -> None:
        assets = {"p1": fixed(10.0, 20.0)}
        first = monitor(tmp_path, assets=assets, warmup_count=3)
        for i, value in enumerate((1.0, 2.0, 3.0)):
            first.assess("p1", at(i), {"rms": value})
        opened = first.assess("p1", at(3), {"temp": 30.0})

        second = monitor(tmp_path, assets=assets, warmup_count=3)
        still = second.assess("p1", at(4), {"temp": 30.0})

        assert opened.maintenance_request is not None
        assert still.maintenance_request is None
        assert still.episode_id == "p1:alarm:1"
        baseline = [
            lim for lim in second.limits_for("p1", "rms") if lim.source == "baseline"
        ]
        assert baseline[0].reference == pytest.approx(2.0)

    def test_state_file_is_json(self, tmp_path: Path) -> None:
        health = monitor(tmp_path, assets={"p1": fixed(10.0, 20.0)})
        health.assess("p1", at(0), {"temp": 12.0})

        data = json.loads((tmp_path / "health.json").read_text())

        indicator = data["assets"]["p1"]["indicators"]["temp"]
        assert indicator["severity"] == "warning"
        assert indicator["event_id"] == "p1:temp:1"

    def test_corrupt_state_file_is_moved_aside(self, tmp_path: Path) -> None:
        (tmp_path / "health.json").write_text("{not json")

        health = monitor(tmp_path)
        result = health.assess("p1", at(0), {"rms": 1.0})

        assert result.severity is Severity.OK
        assert (tmp_path / "health.json.corrupt").exists()
