"""Health judgement: severities, alarms and scores per asset and indicator.

Each indicator value is compared against one or more sets of limits:

* fixed thresholds from ``assets.<id>.thresholds.<indicator>``, which, when
  configured, replace every other source for that indicator;
* the ISO 20816-3 zone boundaries for ``velocity_rms_mm_s`` (zone C is a
  warning, zone D an alarm);
* a baseline learned from the first ``health.warmup_count`` good values of
  ``velocity_rms_mm_s``, ``rms``, ``kurtosis`` and ``crest_factor``
  (see :mod:`agent.health_baseline`);
* the bearing diagnosis through the ``bearing_fault`` indicator (see
  :func:`bearing_fault_value`);
* a flat waveform, which only a failed sensor, cable or input gives,
  through the ``sensor_fault`` indicator (1 when flat, else 0): a warning,
  never an alarm, because the machine's condition is then unknown;
* oil limits: ISO 4406 codes and water saturation from
  ``assets.<id>.oil`` (the defaults of ``OilLimitsSettings`` when absent).

The indicator takes the highest severity any source gives. A severity is
entered when the value reaches its limit and left only when the value falls
below ``limit × (1 − hysteresis)``. A change takes effect only after it
has persisted for ``health.min_duration``.

Events carry stable ids: ``{asset}:{indicator}:{n}`` names one indicator
episode from leaving ``ok`` until it is back to ``ok``. An asset alarm
episode, ``{asset}:alarm:{n}``, starts when any indicator of the asset
reaches ``alarm`` and ends only when every indicator is ``ok`` again, so a
value hovering around the alarm limit gives one maintenance request, not
one per crossing. Counters and open episodes are persisted with the
baselines, so a restart neither relearns nor repeats a request.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from agent.health_baseline import (
    STATE_VERSION,
    Baseline,
    read_state_file,
    write_json_atomic,
)
from agent.settings import AssetSettings, HealthSettings, OilLimitsSettings

logger = logging.getLogger(__name__)

BASELINED_INDICATORS: Final = frozenset(
    {"velocity_rms_mm_s", "rms", "kurtosis", "crest_factor"}
)
OIL_CODE_INDICATORS: Final = ("iso4406_4um", "iso4406_6um", "iso4406_14um")
WATER_SATURATION_INDICATOR: Final = "water_saturation"
BEARING_FAULT_INDICATOR: Final = "bearing_fault"
SENSOR_FAULT_INDICATOR: Final = "sensor_fault"
VELOCITY_INDICATOR: Final = "velocity_rms_mm_s"

FAULT_DIAGNOSES: Final = frozenset(
    {"outer_race", "inner_race", "rolling_element", "cage"}
)
FAULT_WARNING_CONFIDENCE: Final = 0.5
"""A named fault at this confidence or more is a warning."""
FAULT_ALARM_CONFIDENCE: Final = 0.8
"""A named fault at this confidence or more, with strong evidence, is an alarm."""
STRONG_EVIDENCE_DB: Final = 20.0
"""Strongest defect line over its local noise floor needed for an alarm, dB."""
FAULT_CONFIRMATIONS: Final = 3
"""Consecutive waveforms naming the same fault that make a warning an alarm."""

IsoBoundaries = Callable[[int, str], tuple[float, float, float]]
"""``(iso_group, foundation) -> (A/B, B/C, C/D)`` velocity boundaries, mm/s."""


class Severity(enum.IntEnum):
    """Ordered severity of an indicator or an asset."""

    OK = 0
    WARNING = 1
    ALARM = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Severity:
        return cls[label.upper()]


SCORE_CAP: Final = {Severity.OK: 100.0, Severity.WARNING: 70.0, Severity.ALARM: 40.0}
"""Highest health score an indicator at each severity can have."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Warning and alarm limits of one indicator from one source.

    ``reference`` is the value that scores 100 (the baseline median, or 0).
    """

    source: str
    warning: float | None
    alarm: float | None
    reference: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class IndicatorStatus:
    """Judgement of one indicator after its latest value."""

    indicator: str
    value: float
    severity: Severity
    score: float
    limits: tuple[Limits, ...]
    event_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "severity": self.severity.label,
            "score": round(self.score, 1),
            "event_id": self.event_id,
            "limits": {
                lim.source: {"warning": lim.warning, "alarm": lim.alarm}
                for lim in self.limits
            },
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthEvent:
    """An indicator entering (``raised``), changing or leaving (``cleared``)
    a non-ok severity. ``event_id`` is the same for the whole episode."""

    event_id: str
    asset: str
    indicator: str
    action: str
    severity: Severity
    previous: Severity
    value: float
    timestamp: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "asset": self.asset,
            "indicator": self.indicator,
            "action": self.action,
            "severity": self.severity.label,
            "previous": self.previous.label,
            "value": self.value,
            "timestamp": self.timestamp.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class MaintenanceRequest:
    """The one request raised when an asset alarm episode starts."""

    asset: str
    episode_id: str
    priority: str
    title: str
    description: str
    timestamp: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """Result of judging one set of values of one asset."""

    asset: str
    timestamp: datetime
    severity: Severity
    score: float
    indicators: Mapping[str, IndicatorStatus]
    events: tuple[HealthEvent, ...]
    episode_id: str | None
    maintenance_request: MaintenanceRequest | None


@dataclass(slots=True, kw_only=True)
class _IndicatorState:
    severity: Severity = Severity.OK
    event_id: str | None = None
    event_count: int = 0
    pending: Severity | None = None
    pending_since: datetime | None = None
    baseline: Baseline = field(default_factory=Baseline)
    last: IndicatorStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity.label,
            "event_id": self.event_id,
            "event_count": self.event_count,
            "baseline": self.baseline.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _IndicatorState:
        return cls(
            severity=Severity.from_label(data.get("severity", "ok")),
            event_id=data.get("event_id"),
            event_count=int(data.get("event_count", 0)),
            baseline=Baseline.from_dict(data.get("baseline", {})),
        )


@dataclass(slots=True, kw_only=True)
class _AssetState:
    indicators: dict[str, _IndicatorState] = field(default_factory=dict)
    episode_id: str | None = None
    episode_count: int = 0

    def severity(self) -> Severity:
        return max((s.severity for s in self.indicators.values()), default=Severity.OK)


def bearing_fault_value(
    diagnosis: str,
    confidence: float,
    strongest_line_db: float | None,
    *,
    confirmations: int = 1,
) -> float:
    """Map a bearing diagnosis to the ``bearing_fault`` indicator value.

    The value is the confidence of a named fault (``outer_race``,
    ``inner_race``, ``rolling_element``, ``cage``) and 0 for ``normal`` or
    ``unknown``. Against the limits 0.5 (warning) and 0.8 (alarm), a
    confident diagnosis warns, and only a highly confident one whose
    strongest defect line is at least 20 dB above the local noise floor
    alarms: with weaker evidence the value is capped just below 0.8.
    A fault named with strong evidence on ``FAULT_CONFIRMATIONS``
    consecutive waveforms (``confirmations``) alarms even when each single
    confidence stays below 0.8, because a defect line that persists across
    captures is itself evidence.
    """
    if diagnosis not in FAULT_DIAGNOSES:
        return 0.0
    value = min(max(confidence, 0.0), 1.0)
    strong = strongest_line_db is not None and strongest_line_db >= STRONG_EVIDENCE_DB
    if not strong:
        value = min(value, np.nextafter(FAULT_ALARM_CONFIDENCE, 0.0))
    elif confirmations >= FAULT_CONFIRMATIONS and value >= FAULT_WARNING_CONFIDENCE:
        value = max(value, FAULT_ALARM_CONFIDENCE)
    return float(value)


@dataclass(slots=True)
class FaultConfirmation:
    """The bearing-fault indicator of one asset across consecutive waveforms.

    A fault named on ``FAULT_CONFIRMATIONS`` waveforms in a row is
    confirmed (see :func:`bearing_fault_value`). Once a fault is at warning
    or above, it holds its last value until ``FAULT_CONFIRMATIONS``
    waveforms in a row no longer name it, so a single capture that misses
    the defect lines does not close an alarm episode and open a new one.
    """

    label: str = ""
    streak: int = 0
    held_value: float = 0.0
    misses: int = 0

    def update(
        self, diagnosis: str, confidence: float, strongest_line_db: float | None
    ) -> float:
        """Return the indicator value for one more waveform's diagnosis."""
        self.streak = self.streak + 1 if diagnosis == self.label else 1
        self.label = diagnosis
        value = bearing_fault_value(
            diagnosis, confidence, strongest_line_db, confirmations=self.streak
        )
        if value >= FAULT_WARNING_CONFIDENCE:
            self.held_value = value
            self.misses = 0
            return value
        if self.held_value >= FAULT_WARNING_CONFIDENCE:
            self.misses += 1
            if self.misses < FAULT_CONFIRMATIONS:
                return self.held_value
        self.held_value = 0.0
        self.misses = 0
        return value


def classify(
    value: float, limits: Limits, current: Severity, hysteresis: float
) -> Severity:
    """Return the severity ``value`` has against ``limits``.

    A severity at or below ``current`` stays down to ``limit × (1 −
    hysteresis)``; a higher one needs the limit itself.
    """
    for severity, limit in (
        (Severity.ALARM, limits.alarm),
        (Severity.WARNING, limits.warning),
    ):
        if limit is None:
            continue
        threshold = limit - hysteresis * abs(limit) if current >= severity else limit
        if value >= threshold:
            return severity
    return Severity.OK


def score(value: float, limits: Limits) -> float:
    """Return a 0–100 score: 100 at the reference, 70 at the warning limit,
    40 at the alarm limit and 0 as far above the alarm limit as the alarm
    limit is above the reference. Linear in between."""
    xs = [limits.reference]
    ys = [100.0]
    for limit, points in ((limits.warning, 70.0), (limits.alarm, 40.0)):
        if limit is not None and limit > xs[-1]:
            xs.append(limit)
            ys.append(points)
    if len(xs) == 1:
        return 100.0
    xs.append(xs[-1] + (xs[-1] - xs[0]))
    ys.append(0.0)
    return float(np.interp(value, xs, ys))


class HealthMonitor:
    """Judges indicator values per asset and keeps the state that needs to
    survive a restart in ``state_path`` (JSON, written atomically).

    Args:
        settings: baseline factors, hysteresis and minimum duration.
        assets: asset settings by asset id (thresholds, oil limits, ISO
            group and foundation).
        state_path: where baselines and open episodes are kept; None keeps
            them in memory only.
        iso_boundaries: the ISO 20816-3 velocity zone boundaries.
    """

    def __init__(
        self,
        settings: HealthSettings,
        assets: Mapping[str, AssetSettings],
        *,
        state_path: Path | None,
        iso_boundaries: IsoBoundaries,
    ) -> None:
        self._settings = settings
        self._assets = dict(assets)
        self._state_path = state_path
        self._iso_boundaries = iso_boundaries
        self._states: dict[str, _AssetState] = {}
        self._dirty = False
        if state_path is not None:
            self._load(read_state_file(state_path))

    def reconfigure(
        self, settings: HealthSettings, assets: Mapping[str, AssetSettings]
    ) -> None:
        """Use new settings from now on; learned baselines and episodes stay."""
        self._settings = settings
        self._assets = dict(assets)

    def assess(
        self, asset: str, timestamp: datetime, values: Mapping[str, float]
    ) -> Assessment:
        """Judge new good values of ``asset``'s indicators.

        Indicators absent from ``values`` keep their severity. Values must
        be finite: bad or missing measurements are no evidence either way.

        Raises:
            ValueError: a value is not finite.
        """
        for name, value in values.items():
            if not np.isfinite(value):
                raise ValueError(
                    f"indicator {name!r} of asset {asset!r}: expected a finite "
                    f"value, found {value!r}"
                )
        state = self._states.setdefault(asset, _AssetState())
        events = [
            event
            for name, value in values.items()
            if (event := self._update(asset, state, name, float(value), timestamp))
        ]
        request = self._update_episode(asset, state, timestamp)
        if self._dirty:
            self._save()
        statuses = {n: s.last for n, s in state.indicators.items() if s.last}
        return Assessment(
            asset=asset,
            timestamp=timestamp,
            severity=state.severity(),
            score=min((s.score for s in statuses.values()), default=100.0),
            indicators=statuses,
            events=tuple(events),
            episode_id=state.episode_id,
            maintenance_request=request,
        )

    def asset_summary(self) -> dict[str, dict[str, Any]]:
        """Return severity, score, open episode and non-ok indicators per asset."""
        summary: dict[str, dict[str, Any]] = {}
        for asset, state in self._states.items():
            statuses = [s.last for s in state.indicators.values() if s.last]
            summary[asset] = {
                "severity": state.severity().label,
                "score": round(min((s.score for s in statuses), default=100.0), 1),
                "episode_id": state.episode_id,
                "active": {
                    name: {"severity": s.severity.label, "event_id": s.event_id}
                    for name, s in state.indicators.items()
                    if s.severity is not Severity.OK
                },
            }
        return summary

    # --- limits ---------------------------------------------------------------

    def limits_for(self, asset: str, indicator: str) -> tuple[Limits, ...]:
        """Return every set of limits that applies to ``indicator`` of ``asset``."""
        settings = self._assets.get(asset, AssetSettings())
        fixed = settings.thresholds.get(indicator)
        if fixed is not None:
            return (Limits(source="fixed", warning=fixed.warning, alarm=fixed.alarm),)

        found: list[Limits] = []
        if indicator == VELOCITY_INDICATOR:
            _, bc, cd = self._iso_boundaries(settings.iso_group, settings.foundation)
            found.append(Limits(source="iso20816", warning=bc, alarm=cd))
        if indicator == BEARING_FAULT_INDICATOR:
            found.append(
                Limits(
                    source="diagnosis",
                    warning=FAULT_WARNING_CONFIDENCE,
                    alarm=FAULT_ALARM_CONFIDENCE,
                )
            )
        if indicator == SENSOR_FAULT_INDICATOR:
            found.append(Limits(source="sensor", warning=1.0, alarm=None))
        oil = settings.oil or OilLimitsSettings()
        if indicator in OIL_CODE_INDICATORS:
            i = OIL_CODE_INDICATORS.index(indicator)
            found.append(
                Limits(
                    source="iso4406",
                    warning=float(oil.iso4406_warning[i]),
                    alarm=float(oil.iso4406_alarm[i]),
                )
            )
        if indicator == WATER_SATURATION_INDICATOR:
            found.append(
                Limits(
                    source="oil",
                    warning=oil.water_saturation_warning_pct,
                    alarm=oil.water_saturation_alarm_pct,
                )
            )
        baseline = self._baseline(asset, indicator)
        if baseline is not None and baseline.learned:
            assert baseline.median is not None
            found.append(
                Limits(
                    source="baseline",
                    warning=baseline.limit(self._settings.warning_factor),
                    alarm=baseline.limit(self._settings.alarm_factor),
                    reference=baseline.median,
                )
            )
        return tuple(found)

    def _baseline(self, asset: str, indicator: str) -> Baseline | None:
        state = self._states.get(asset)
        if state is None or indicator not in state.indicators:
            return None
        return state.indicators[indicator].baseline

    # --- state changes ----------------------------------------------------------

    def _update(
        self,
        asset: str,
        state: _AssetState,
        name: str,
        value: float,
        timestamp: datetime,
    ) -> HealthEvent | None:
        ind = state.indicators.setdefault(name, _IndicatorState())
        limits = self.limits_for(asset, name)
        hysteresis = self._settings.hysteresis
        candidate = max(
            (classify(value, lim, ind.severity, hysteresis) for lim in limits),
            default=Severity.OK,
        )
        event = self._apply(asset, name, ind, candidate, value, timestamp)

        # Learning happens after judging, so a baseline is never judged
        # against itself on the value that completes it.
        if name in BASELINED_INDICATORS and not ind.baseline.learned:
            ind.baseline.add(value, self._settings.warmup_count)
            self._dirty = True
        raw_score = min((score(value, lim) for lim in limits), default=100.0)
        ind.last = IndicatorStatus(
            indicator=name,
            value=value,
            severity=ind.severity,
            score=min(raw_score, SCORE_CAP[ind.severity]),
            limits=limits,
            event_id=ind.event_id,
        )
        return event

    def _apply(
        self,
        asset: str,
        name: str,
        ind: _IndicatorState,
        candidate: Severity,
        value: float,
        timestamp: datetime,
    ) -> HealthEvent | None:
        """Commit ``candidate`` once it has held for the minimum duration."""
        if candidate == ind.severity:
            ind.pending = ind.pending_since = None
            return None
        if ind.pending != candidate:
            ind.pending, ind.pending_since = candidate, timestamp
        assert ind.pending_since is not None
        held_s = (timestamp - ind.pending_since).total_seconds()
        if held_s < self._settings.min_duration:
            return None

        previous = ind.severity
        if previous is Severity.OK:
            ind.event_count += 1
            ind.event_id = f"{asset}:{name}:{ind.event_count}"
            action = "raised"
        elif candidate is Severity.OK:
            action = "cleared"
        else:
            action = "changed"
        event = HealthEvent(
            event_id=ind.event_id or "",
            asset=asset,
            indicator=name,
            action=action,
            severity=candidate,
            previous=previous,
            value=value,
            timestamp=timestamp,
        )
        ind.severity = candidate
        ind.pending = ind.pending_since = None
        if candidate is Severity.OK:
            ind.event_id = None
        self._dirty = True
        logger.info("health.%s", action, extra=event.to_dict())
        return event

    def _update_episode(
        self, asset: str, state: _AssetState, timestamp: datetime
    ) -> MaintenanceRequest | None:
        severity = state.severity()
        if severity is Severity.OK and state.episode_id is not None:
            logger.info(
                "health.episode_closed",
                extra={"asset": asset, "episode_id": state.episode_id},
            )
            state.episode_id = None
            self._dirty = True
            return None
        if severity is not Severity.ALARM or state.episode_id is not None:
            return None

        state.episode_count += 1
        state.episode_id = f"{asset}:alarm:{state.episode_count}"
        self._dirty = True
        return self._request(asset, state, timestamp)

    def _request(
        self, asset: str, state: _AssetState, timestamp: datetime
    ) -> MaintenanceRequest:
        assert state.episode_id is not None
        alarms = {
            name: ind.last.value
            for name, ind in state.indicators.items()
            if ind.severity is Severity.ALARM and ind.last is not None
        }
        settings = self._assets.get(asset, AssetSettings())
        label = settings.name or asset
        causes = ", ".join(f"{n} = {v:.4g}" for n, v in sorted(alarms.items()))
        return MaintenanceRequest(
            asset=asset,
            episode_id=state.episode_id,
            priority="high",
            title=f"Condition alarm on {label}"[:120],
            description=(
                f"Condition monitoring raised an alarm on {label} at "
                f"{timestamp.isoformat()}: {causes}."
            ),
            timestamp=timestamp,
        )

    # --- persistence ------------------------------------------------------------

    def _save(self) -> None:
        self._dirty = False
        if self._state_path is None:
            return
        data = {
            "version": STATE_VERSION,
            "assets": {
                asset: {
                    "episode_id": state.episode_id,
                    "episode_count": state.episode_count,
                    "indicators": {n: s.to_dict() for n, s in state.indicators.items()},
                }
                for asset, state in self._states.items()
            },
        }
        try:
            write_json_atomic(self._state_path, data)
        except OSError as exc:
            logger.warning(
                "health.state_write_failed",
                extra={"path": str(self._state_path), "cause": str(exc)},
            )

    def _load(self, data: Mapping[str, Any]) -> None:
        for asset, raw in data.get("assets", {}).items():
            self._states[asset] = _AssetState(
                indicators={
                    n: _IndicatorState.from_dict(s)
                    for n, s in raw.get("indicators", {}).items()
                },
                episode_id=raw.get("episode_id"),
                episode_count=int(raw.get("episode_count", 0)),
            )
