"""Bearing diagnosis from envelope-spectrum lines at defect frequencies.

Each fault family is scored from its lines: the fundamental against
the local noise floor, and the support of its harmonics. For the inner
race, sidebands at one shaft order also count, because the defect turns
with the shaft through the load zone. A fault is named only when the band the
envelope came from is impulsive, as a localised defect makes it: lines
at a defect frequency in a non-impulsive band are reported as
``unknown`` rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Final

from dsp.bearings import DefectFrequencies
from dsp.lines import Line

FUNDAMENTAL_MIN_DB: Final = 15.0
"""SNR a fault's first line needs before the fault can be named."""

SUPPORT_MIN_DB: Final = 15.0
"""SNR a harmonic or sideband needs to support the first line."""

WEAK_DB: Final = 12.0
"""Below this SNR on every first line the bearing reads ``normal``. Noise
amplitudes are Rayleigh-distributed, so one bin exceeds the median by
12 dB with probability exp(-15.8 ln 2), about 2e-5: the largest of the
few bins searched per line almost never reaches it by chance."""

AMBIGUITY_MARGIN: Final = 0.15
"""Two faults whose strengths differ by less than this are ``unknown``."""

LOW_CONFIDENCE_CAP: Final = 0.5
"""Cap for rolling-element and cage faults: their lines are weak and
smeared by slip in practice, so an envelope spectrum alone rarely proves
them."""


class Condition(Enum):
    """Bearing condition named by the diagnosis."""

    NORMAL = "normal"
    OUTER_RACE = "outer_race"
    INNER_RACE = "inner_race"
    ROLLING_ELEMENT = "rolling_element"
    CAGE = "cage"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """Named condition, confidence in it (0 to 1), and the evidence.

    ``lines`` are the measured envelope lines of every fault family;
    ``evidence`` is a short sentence per finding that led to the result.
    """

    condition: Condition
    confidence: float
    evidence: tuple[str, ...]
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Family:
    condition: Condition
    fundamental: str
    support: tuple[str, ...]


_FAMILIES: Final = (
    _Family(
        condition=Condition.OUTER_RACE,
        fundamental="BPFO x1",
        support=("BPFO x2", "BPFO x3"),
    ),
    _Family(
        condition=Condition.INNER_RACE,
        fundamental="BPFI x1",
        support=("BPFI x2", "BPFI x3", "BPFI-1x", "BPFI+1x"),
    ),
    _Family(
        condition=Condition.ROLLING_ELEMENT,
        fundamental="2xBSF x1",
        support=("BSF x1", "2xBSF x2", "2xBSF x3"),
    ),
    _Family(
        condition=Condition.CAGE,
        fundamental="FTF x1",
        support=("FTF x2", "FTF x3"),
    ),
)


def defect_line_targets(freqs: DefectFrequencies) -> list[tuple[str, float]]:
    """List the envelope lines to measure: label and frequency in Hz.

    Harmonics 1 to 3 of BPFO, BPFI, 2xBSF and FTF, BSF itself, and the
    first BPFI line's sidebands at one shaft order.
    """
    targets: list[tuple[str, float]] = []
    for name, hz in (
        ("BPFO", freqs.bpfo_hz),
        ("BPFI", freqs.bpfi_hz),
        ("2xBSF", freqs.two_bsf_hz),
        ("FTF", freqs.ftf_hz),
    ):
        targets += [(f"{name} x{k}", k * hz) for k in (1, 2, 3)]
    targets.append(("BSF x1", freqs.bsf_hz))
    targets.append(("BPFI-1x", freqs.bpfi_hz - freqs.shaft_hz))
    targets.append(("BPFI+1x", freqs.bpfi_hz + freqs.shaft_hz))
    return targets


def highest_target_hz(freqs: DefectFrequencies) -> float:
    """Return the highest line frequency ``defect_line_targets`` lists."""
    return max(hz for _, hz in defect_line_targets(freqs))


def _score(snr_db: float, floor_db: float, span_db: float) -> float:
    return min(max((snr_db - floor_db) / span_db, 0.0), 1.0)


def diagnose(
    lines: list[Line], *, spectral_kurtosis: float, impulsive_threshold: float
) -> Diagnosis:
    """Name the bearing condition from measured envelope lines.

    Parameters
    ----------
    lines : list of Line
        Lines labelled as by ``defect_line_targets``.
    spectral_kurtosis : float
        Mean spectral kurtosis of the envelope band (0 for Gaussian noise).
    impulsive_threshold : float
        Spectral kurtosis a localised defect must exceed; below it no
        fault is named.

    Returns
    -------
    Diagnosis

    Notes
    -----
    Strength of a family: ``0.7 * clip((F - 6) / 24) + 0.3 * clip((S - 6)
    / 18)`` with ``F`` the SNR of its first line and ``S`` the best SNR
    of its supporting lines, in dB. It is a candidate when ``F >=
    FUNDAMENTAL_MIN_DB`` and ``S >= SUPPORT_MIN_DB``. The confidence of a
    named fault is its strength; of ``normal``, one minus the largest
    strength. ``unknown`` has confidence 0.
    """
    by_label = {line.label: line for line in _credited(lines)}
    strengths: dict[Condition, float] = {}
    candidates: list[Condition] = []
    evidence: list[str] = []
    loudest = -math.inf
    for family in _FAMILIES:
        first = by_label.get(family.fundamental)
        if first is None:
            continue
        support = [by_label[s] for s in family.support if s in by_label]
        best = max(support, key=lambda line: line.snr_db, default=None)
        best_db = best.snr_db if best is not None else 0.0
        loudest = max(loudest, first.snr_db)
        strengths[family.condition] = 0.7 * _score(
            first.snr_db, 6.0, 24.0
        ) + 0.3 * _score(best_db, 6.0, 18.0)
        if first.snr_db >= FUNDAMENTAL_MIN_DB and best_db >= SUPPORT_MIN_DB:
            candidates.append(family.condition)
            evidence.append(_describe(first, best))

    result = _decide(
        strengths, candidates, loudest, spectral_kurtosis, impulsive_threshold
    )
    condition, confidence, reason = result
    if reason:
        evidence.append(reason)
    return Diagnosis(
        condition=condition,
        confidence=round(confidence, 3),
        evidence=tuple(evidence),
        lines=tuple(lines),
    )


_FAMILY_OF: Final = {
    label: family.condition
    for family in _FAMILIES
    for label in (family.fundamental, *family.support)
}


def _credited(lines: list[Line]) -> list[Line]:
    """Return the lines without those whose peak a nearer target of another
    fault family claims.

    Search windows of different families can overlap (BPFO x3 and BPFI x2
    of a 6205 lie 0.7 % apart), and both then find the same peak. Counted
    twice, one line would support two faults and make them look equally
    likely. The line stays with the target whose expected frequency is
    relatively nearest to the peak.
    """

    def offset(line: Line) -> float:
        return abs(line.found_hz - line.expected_hz) / line.expected_hz

    by_peak: dict[float, list[Line]] = {}
    for line in lines:
        by_peak.setdefault(line.found_hz, []).append(line)

    credited = []
    for line in lines:
        family = _FAMILY_OF.get(line.label)
        rivals = [
            other
            for other in by_peak[line.found_hz]
            if _FAMILY_OF.get(other.label) != family
        ]
        if all(offset(line) <= offset(other) for other in rivals):
            credited.append(line)
    return credited


def _describe(first: Line, support: Line | None) -> str:
    text = (
        f"{first.label} at {first.found_hz:.1f} Hz, {first.snr_db:.1f} dB "
        "above the floor"
    )
    if support is not None:
        text += f"; {support.label} {support.snr_db:.1f} dB"
    return text


def _decide(
    strengths: dict[Condition, float],
    candidates: list[Condition],
    loudest_db: float,
    spectral_kurtosis: float,
    impulsive_threshold: float,
) -> tuple[Condition, float, str]:
    if not strengths:
        return Condition.UNKNOWN, 0.0, "no defect line within the spectrum"
    if loudest_db < WEAK_DB and not candidates:
        confidence = 1.0 - max(strengths.values())
        return (
            Condition.NORMAL,
            confidence,
            (f"no defect line reaches {WEAK_DB:g} dB above the floor"),
        )
    if not candidates:
        return (
            Condition.UNKNOWN,
            0.0,
            ("defect lines without harmonic support; no fault named"),
        )
    if spectral_kurtosis < impulsive_threshold:
        return (
            Condition.UNKNOWN,
            0.0,
            (
                f"band spectral kurtosis {spectral_kurtosis:.2f} below "
                f"{impulsive_threshold:.2f}: no impulsive defect, no fault named"
            ),
        )

    ranked = sorted(candidates, key=lambda c: strengths[c], reverse=True)
    best = ranked[0]
    if len(ranked) > 1 and strengths[best] - strengths[ranked[1]] < AMBIGUITY_MARGIN:
        return (
            Condition.UNKNOWN,
            0.0,
            (f"{best.value} and {ranked[1].value} are equally likely"),
        )
    confidence = strengths[best]
    if best in (Condition.ROLLING_ELEMENT, Condition.CAGE):
        confidence = min(confidence, LOW_CONFIDENCE_CAP)
    return best, confidence, ""
