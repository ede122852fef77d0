"""diagnose: naming a fault from envelope lines built by hand."""

from __future__ import annotations

from dsp.diagnosis import Condition, diagnose
from dsp.lines import Line


def line(label: str, expected_hz: float, found_hz: float, snr_db: float) -> Line:
    return Line(
        label=label,
        expected_hz=expected_hz,
        found_hz=found_hz,
        amplitude=10 ** (snr_db / 20),
        noise_floor=1.0,
        snr_db=snr_db,
    )


# A 6205 at 1797 r/min: BPFO 107.36 Hz and BPFI 162.19 Hz, so BPFO x3 is
# expected at 322.08 Hz and BPFI x2 at 324.38 Hz, 0.7 % apart.
INNER_RACE_LINES = [
    line("BPFO x1", 107.36, 107.4, 16.0),
    line("BPFO x2", 214.72, 214.9, 9.0),
    line("BPFO x3", 322.08, 323.36, 24.0),
    line("BPFI x1", 162.19, 162.2, 26.0),
    line("BPFI x2", 324.38, 323.36, 24.0),
    line("BPFI x3", 486.57, 486.6, 12.0),
]


class TestSharedPeak:
    def test_credited_to_nearer_target(self) -> None:
        # 323.36 Hz is 0.31 % from BPFI x2 and 0.40 % from BPFO x3, so it
        # supports the inner race only. The outer race keeps BPFO x2 at
        # 9 dB, below the 15 dB support a candidate needs.
        result = diagnose(
            INNER_RACE_LINES, spectral_kurtosis=2.0, impulsive_threshold=0.5
        )
        assert result.condition is Condition.INNER_RACE
        assert not any("BPFO" in sentence for sentence in result.evidence)

    def test_counted_twice_makes_both_candidates(self) -> None:
        # Moving BPFO x3's peak one bin away removes the sharing: then both
        # families are candidates, and the evidence names both.
        lines = [
            line("BPFO x3", 322.08, 323.2, 24.0) if x.label == "BPFO x3" else x
            for x in INNER_RACE_LINES
        ]
        result = diagnose(lines, spectral_kurtosis=2.0, impulsive_threshold=0.5)
        assert any("BPFO x1" in sentence for sentence in result.evidence)
        assert any("BPFI x1" in sentence for sentence in result.evidence)
