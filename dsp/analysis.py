"""``analyse``: every indicator of one vibration waveform from one rfft."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

import numpy as np
from numpy.typing import NDArray

from dsp.bearings import BearingGeometry, DefectFrequencies, defect_orders
from dsp.diagnosis import (
    Condition,
    Diagnosis,
    defect_line_targets,
    diagnose,
    highest_target_hz,
)
from dsp.envelope import (
    KURTOGRAM_MAX_SAMPLES,
    KURTOGRAM_SEGMENT,
    Band,
    band_envelope,
    choose_band,
    envelope_spectrum,
    spectral_kurtosis,
)
from dsp.lines import measure_lines
from dsp.orders import Orders, order_amplitudes
from dsp.spectrum import Spectrum, _spectrum_of_valid, clip_band, validate_waveform
from dsp.time_domain import TimeDomain, time_domain_indicators
from dsp.velocity import (
    Foundation,
    IsoGroup,
    IsoZone,
    acceleration_scale_m_s2,
    fit_velocity_band,
    iso_zone,
    velocity_band_hz,
    velocity_rms_mm_s,
)

IMPULSIVE_SK_MIN: Final = 0.5
"""Band spectral kurtosis below which no localised defect is named."""

FLAT_RMS_LIMIT: Final = 1e-6
"""RMS (g or m/s², mean removed) at or below which a waveform is flat.

It is far below the noise floor of any industrial accelerometer (of the
order of 1e-4 g), so a flat waveform comes from a failed sensor, cable or
input, and the diagnosis says ``unknown`` rather than ``normal``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineInfo:
    """Machine description used by ``analyse``.

    ``iso_group`` and ``foundation`` select the ISO 20816-3 zone limits.
    ``bearing`` enables envelope analysis and diagnosis (with a shaft
    speed). ``envelope_band_hz`` fixes the envelope band; None lets the
    spectral kurtosis choose it.
    """

    iso_group: IsoGroup = 2
    foundation: Foundation = "rigid"
    bearing: BearingGeometry | None = None
    envelope_band_hz: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvelopeResult:
    """Envelope band and the rate of the envelope signal."""

    band: Band
    envelope_fs_hz: float
    spectral_kurtosis: float
    impulsive_threshold: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """Indicators of one waveform.

    Parts that need a shaft speed or a bearing are None when those are
    missing, and ``skipped`` maps each such part to the reason.
    ``flat`` is True when the waveform's RMS after removing the mean is at
    most ``FLAT_RMS_LIMIT``: a failed sensor, cable or input, whose other
    indicators describe the sensor, not the machine.
    Amplitudes are in ``unit`` and velocity in mm/s. ``velocity_band_hz``
    is the band in Hz that the velocity RMS integrates, which is the ISO
    20816-3 range for ``rpm`` fitted to the Nyquist rate and to the first
    bin above DC.
    """

    fs_hz: float
    n_samples: int
    unit: str
    rpm: float | None
    time_domain: TimeDomain
    velocity_rms_mm_s: float
    velocity_band_hz: tuple[float, float]
    flat: bool
    iso_zone: IsoZone
    orders: Orders | None
    defect_frequencies: DefectFrequencies | None
    envelope: EnvelopeResult | None
    diagnosis: Diagnosis
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return plain JSON types: floats, lists, strings, None for NaN."""
        converted = _plain(dataclasses.asdict(self))
        assert isinstance(converted, dict)
        return converted


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def analyse(
    samples: NDArray[np.float64],
    *,
    fs_hz: float,
    rpm: float | None = None,
    machine: MachineInfo | None = None,
    unit: str = "g",
) -> Analysis:
    """Analyse one acceleration waveform.

    Parameters
    ----------
    samples : ndarray, shape (n,)
        Acceleration in ``unit``, at least 256 samples.
    fs_hz : float
        Sample rate in Hz.
    rpm : float or None
        Shaft speed in revolutions per minute. It selects the velocity
        band (2-1000 Hz up to 600 r/min, 10-1000 Hz above or when None).
        None also skips the orders, the envelope and the diagnosis, and
        records why in ``skipped``.
    machine : MachineInfo or None
        Machine class, bearing and envelope band; None uses the defaults.
    unit : {"g", "m/s2"}
        Acceleration unit of ``samples``.

    Returns
    -------
    Analysis

    Warns
    -----
    UserWarning
        When a velocity or envelope band edge is moved to fit the
        spectrum (see ``fit_velocity_band``), or ``rpm`` is below the
        120 r/min lower limit of ISO 20816-3.

    Raises
    ------
    ValueError
        On NaN or infinite samples, fewer than 256 samples, ``fs_hz <=
        0``, ``rpm <= 0``, an unknown unit, an envelope band that does
        not fit below the Nyquist rate, or a velocity band that contains
        no bin of the spectrum.
    """
    machine = machine or MachineInfo()
    x = validate_waveform(samples, fs_hz)
    acceleration_scale_m_s2(unit)
    if rpm is not None and (not math.isfinite(rpm) or rpm <= 0):
        raise ValueError(f"rpm must be a positive number, found {rpm!r}")

    mean = float(x.mean())
    centred = x - mean
    spectrum = _spectrum_of_valid(centred, fs_hz)
    time_domain = time_domain_indicators(centred, mean)
    velocity_band = fit_velocity_band(spectrum, velocity_band_hz(rpm))
    velocity = velocity_rms_mm_s(spectrum, unit=unit, band_hz=velocity_band)
    zone = iso_zone(velocity, group=machine.iso_group, foundation=machine.foundation)

    skipped: dict[str, str] = {}
    orders = None
    frequencies = None
    if rpm is None:
        for part in ("orders", "envelope", "diagnosis"):
            skipped[part] = "rpm not given"
    else:
        orders = order_amplitudes(spectrum, rpm / 60.0)
        if machine.bearing is None:
            for part in ("envelope", "diagnosis"):
                skipped[part] = "no bearing geometry given"
        else:
            frequencies = defect_orders(machine.bearing).in_hz(rpm / 60.0)

    envelope_result = None
    diagnosis = Diagnosis(
        condition=Condition.UNKNOWN, confidence=0.0, evidence=(), lines=()
    )
    flat = time_domain.rms <= FLAT_RMS_LIMIT
    if frequencies is not None and flat:
        reason = (
            f"the waveform is flat (RMS {time_domain.rms:.3g} {unit} after "
            "removing the mean): a failed sensor, cable or input, not a "
            "healthy machine"
        )
        skipped["envelope"] = reason
        diagnosis = Diagnosis(
            condition=Condition.UNKNOWN, confidence=0.0, evidence=(reason,), lines=()
        )
    elif frequencies is not None:
        outcome = _bearing_analysis(centred, spectrum, frequencies, machine)
        if isinstance(outcome, str):
            skipped["envelope"] = skipped["diagnosis"] = outcome
        else:
            envelope_result, diagnosis = outcome

    return Analysis(
        fs_hz=float(fs_hz),
        n_samples=x.size,
        unit=unit,
        rpm=None if rpm is None else float(rpm),
        time_domain=time_domain,
        velocity_rms_mm_s=velocity,
        velocity_band_hz=velocity_band,
        flat=bool(flat),
        iso_zone=zone,
        orders=orders,
        defect_frequencies=frequencies,
        envelope=envelope_result,
        diagnosis=diagnosis,
        skipped=skipped,
    )


def _bearing_analysis(
    centred: NDArray[np.float64],
    spectrum: Spectrum,
    frequencies: DefectFrequencies,
    machine: MachineInfo,
) -> tuple[EnvelopeResult, Diagnosis] | str:
    """Run the envelope analysis and diagnosis, or return why it cannot run."""
    top_hz = highest_target_hz(frequencies)
    nyquist_hz = spectrum.fs_hz / 2
    if top_hz >= nyquist_hz:
        return (
            f"defect lines up to {top_hz:g} Hz lie above the Nyquist rate "
            f"{nyquist_hz:g} Hz; expected a lower shaft speed or a higher "
            "sample rate"
        )
    sk, sk_step_hz = spectral_kurtosis(centred, spectrum.fs_hz)
    if machine.envelope_band_hz is not None:
        low, high = clip_band(machine.envelope_band_hz, spectrum.fs_hz, what="envelope")
        band = Band(low_hz=low, high_hz=high, source="configured")
    else:
        chosen = choose_band(
            sk,
            sk_step_hz,
            spectrum.fs_hz,
            min_low_hz=2.0 * top_hz,
            min_width_hz=top_hz,
        )
        if chosen is None:
            return (
                f"no envelope band of at least {top_hz:.0f} Hz fits between "
                f"{2 * top_hz:.0f} Hz and the Nyquist rate "
                f"{spectrum.fs_hz / 2:g} Hz"
            )
        band = chosen

    band_sk = _band_mean(sk, sk_step_hz, band)
    segments = min(centred.size, KURTOGRAM_MAX_SAMPLES) // KURTOGRAM_SEGMENT
    # A Gaussian block's spectral kurtosis scatters by about 2 / sqrt(S)
    # per bin over S segments. Choosing the best band picks the upper tail
    # of that scatter, so the threshold is five times the scatter, which
    # keeps short blocks from naming noise a fault.
    threshold = max(IMPULSIVE_SK_MIN, 10.0 / math.sqrt(segments))

    # Zero-padding the inverse FFT keeps the envelope rate above twice
    # the highest line even for a narrow band.
    env = band_envelope(spectrum, band, min_rate_hz=2.5 * top_hz)
    env_spectrum = envelope_spectrum(env, max_hz=1.3 * top_hz + 20.0)
    lines = measure_lines(
        env_spectrum.amplitude,
        env_spectrum.resolution_hz,
        defect_line_targets(frequencies),
    )
    diagnosis = diagnose(
        lines, spectral_kurtosis=band_sk, impulsive_threshold=threshold
    )
    result = EnvelopeResult(
        band=band,
        envelope_fs_hz=env.fs_hz,
        spectral_kurtosis=band_sk,
        impulsive_threshold=threshold,
    )
    return result, diagnosis


def _band_mean(sk: NDArray[np.float64], step_hz: float, band: Band) -> float:
    first = max(math.ceil(band.low_hz / step_hz), 0)
    last = min(math.floor(band.high_hz / step_hz), sk.size - 1)
    if last < first:
        nearest = min(round((band.low_hz + band.high_hz) / 2 / step_hz), sk.size - 1)
        return float(sk[nearest])
    return float(sk[first : last + 1].mean())
