"""Glue between a captured waveform, ``dsp.analyse`` and the health monitor.

Runs in the analysis worker thread: it only computes and never touches
pipeline state. ``dsp`` is imported on first use so that commands which
never analyse start quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from agent.health import SENSOR_FAULT_INDICATOR, bearing_fault_value
from agent.settings import AssetSettings
from drivers.base import Waveform

SCALAR_HEALTH_POINTS: Final = frozenset(
    {
        "iso4406_4um",
        "iso4406_6um",
        "iso4406_14um",
        "water_saturation",
    }
)
"""Scalar points judged by health even without configured thresholds."""

TOP_ENVELOPE_LINES: Final = 3

_WAVEFORM_HEALTH_INDICATORS: Final = frozenset(
    {
        "velocity_rms_mm_s",
        "rms",
        "kurtosis",
        "crest_factor",
        "bearing_fault",
        SENSOR_FAULT_INDICATOR,
    }
)
"""Indicators of a waveform's analysis that the health monitor judges."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WaveformResult:
    """The results the pipeline keeps from one analysis.

    ``measurements`` maps a measurement name to its value and unit (all
    finite), ``health_values`` the indicators the health monitor judges,
    and ``summary`` is the JSON-ready digest for MQTT, status and views.
    """

    measurements: dict[str, tuple[float, str]]
    health_values: dict[str, float]
    summary: dict[str, Any]


def iso_boundaries(group: int, foundation: str) -> tuple[float, float, float]:
    """Return the ISO 20816-3 zone boundaries A/B, B/C, C/D in mm/s."""
    from dsp.velocity import ZONE_BOUNDARIES_MM_S

    return ZONE_BOUNDARIES_MM_S[(group, foundation)]


def machine_info(asset: AssetSettings) -> Any:
    """Build the ``dsp.MachineInfo`` of an asset's settings.

    Raises:
        KeyError: the asset names a bearing model the catalogue lacks.
    """
    import dsp
    from dsp.bearings import BearingGeometry, bearing_by_model

    geometry = None
    if asset.bearing_geometry is not None:
        g = asset.bearing_geometry
        geometry = BearingGeometry(
            balls=g.balls,
            ball_diameter=g.ball_diameter,
            pitch_diameter=g.pitch_diameter,
            contact_angle_deg=g.contact_angle_deg,
        )
    elif asset.bearing is not None:
        geometry = bearing_by_model(asset.bearing)
    return dsp.MachineInfo(
        iso_group=asset.iso_group,
        foundation=asset.foundation,
        bearing=geometry,
        envelope_band_hz=asset.envelope_band_hz,
    )


def analyse_waveform(
    waveform: Waveform, asset: AssetSettings, rpm: float | None
) -> WaveformResult:
    """Analyse one waveform of ``asset`` at shaft speed ``rpm``.

    Raises:
        ValueError: the waveform is invalid (samples not real numbers,
            non-finite samples, too short, sample rate not positive).
    """
    import dsp

    samples = np.asarray(waveform.samples)
    if samples.dtype.kind not in "fiu":
        # Casting would drop an imaginary part or fail on text unnoticed.
        raise ValueError(
            f"waveform samples must be real numbers, found dtype {samples.dtype}"
        )
    analysis = dsp.analyse(
        samples,
        fs_hz=waveform.fs_hz,
        rpm=rpm,
        machine=machine_info(asset),
        unit=waveform.unit,
    )
    return digest(analysis.to_dict(), waveform.unit)


def digest(data: dict[str, Any], unit: str) -> WaveformResult:
    """Reduce ``Analysis.to_dict()`` to measurements, health values and a
    summary. Absent or non-finite values are left out."""
    time_domain = data.get("time_domain") or {}
    numbers = {
        "rms": (time_domain.get("rms"), unit),
        "peak": (time_domain.get("peak"), unit),
        "kurtosis": (time_domain.get("kurtosis"), ""),
        "crest_factor": (time_domain.get("crest_factor"), ""),
        "velocity_rms_mm_s": (data.get("velocity_rms_mm_s"), "mm/s"),
    }
    diagnosis = data.get("diagnosis") or {}
    label = str(diagnosis.get("condition") or "unknown")
    confidence = float(diagnosis.get("confidence") or 0.0)
    lines = _envelope_lines(diagnosis.get("lines") or [])
    strongest_db = max((line["snr_db"] for line in lines), default=None)
    numbers["bearing_fault"] = (
        bearing_fault_value(label, confidence, strongest_db),
        "",
    )

    flat = bool(data.get("flat"))
    numbers[SENSOR_FAULT_INDICATOR] = (1.0 if flat else 0.0, "")

    measurements = {
        name: (float(value), u)
        for name, (value, u) in numbers.items()
        if isinstance(value, int | float) and np.isfinite(value)
    }
    if flat:
        # A dead sensor's indicators describe the sensor, not the machine.
        # Judged, its zero velocity would read as a perfect machine and its
        # zero bearing_fault would close an open bearing alarm, so they keep
        # their last severity and only the sensor fault is judged.
        health_values = {SENSOR_FAULT_INDICATOR: 1.0}
    else:
        health_values = {
            name: value
            for name, (value, _) in measurements.items()
            if name in _WAVEFORM_HEALTH_INDICATORS
        }
    summary = {
        "values": {name: value for name, (value, _) in measurements.items()},
        "iso_zone": None if flat else data.get("iso_zone"),
        "sensor_fault": flat,
        "diagnosis": label,
        "confidence": round(confidence, 3),
        "envelope_lines": lines[:TOP_ENVELOPE_LINES],
        "rpm": data.get("rpm"),
    }
    return WaveformResult(
        measurements=measurements, health_values=health_values, summary=summary
    )


def _envelope_lines(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the diagnosis' defect lines, strongest first, finite only."""
    lines = [
        {
            "label": str(line.get("label") or ""),
            "frequency_hz": float(line["found_hz"]),
            "snr_db": float(line["snr_db"]),
        }
        for line in raw
        if isinstance(line.get("snr_db"), int | float)
        and isinstance(line.get("found_hz"), int | float)
    ]
    lines.sort(key=lambda line: line["snr_db"], reverse=True)
    return lines
