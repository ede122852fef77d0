"""Property tests of ``dsp.analyse`` on hostile waveforms.

Every input either raises ``ValueError`` or ``TypeError`` with a message,
or returns an :class:`dsp.Analysis` whose ``to_dict()`` is valid JSON with
no NaN or infinity.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dsp
from dsp import MachineInfo, bearing_by_model

MACHINES = [
    MachineInfo(),
    MachineInfo(bearing=bearing_by_model("6205")),
    MachineInfo(bearing=bearing_by_model("6205"), envelope_band_hz=(500.0, 3000.0)),
]
SPECIAL = [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300, 1e-300, 5e-324]

sample_rates = st.one_of(
    st.sampled_from([0.0, -1.0, math.nan, math.inf, 1e-300, 1e300, 12_000.0]),
    st.floats(min_value=1.0, max_value=1e6),
)
shaft_speeds = st.one_of(
    st.none(),
    st.sampled_from([0.0, -60.0, math.nan, math.inf, 1e-300, 1e300, 1796.0]),
    st.floats(min_value=1.0, max_value=1e6),
)
element_values = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def waveforms(draw: st.DrawFn) -> np.ndarray:
    """Random lengths from 0 up, built from a few hostile shapes."""
    size = draw(st.sampled_from([0, 1, 2, 255, 256, 257, 1000, 4096, 12_000]))
    shape = draw(st.sampled_from(["noise", "constant", "scaled", "spiked", "elements"]))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    if shape == "noise":
        return rng.standard_normal(size)
    if shape == "constant":
        return np.full(size, draw(st.sampled_from(SPECIAL)))
    if shape == "scaled":
        scale = draw(st.sampled_from([1e300, 1e150, 1e-300, 1e-160, 5e-324]))
        return rng.standard_normal(size) * scale
    if shape == "spiked":
        samples = rng.standard_normal(size)
        if size:
            index = draw(st.integers(min_value=0, max_value=size - 1))
            samples[index] = draw(st.sampled_from(SPECIAL))
        return samples
    return draw(hnp.arrays(np.float64, min(size, 300), elements=element_values))


def check_result(analysis: dsp.Analysis) -> None:
    text = json.dumps(analysis.to_dict(), allow_nan=False)

    assert text.startswith("{")
    assert math.isfinite(analysis.velocity_rms_mm_s)
    assert math.isfinite(analysis.time_domain.rms)


def analyse_or_reject(
    samples: object, fs_hz: float, rpm: float | None, machine: MachineInfo
) -> dsp.Analysis | None:
    """Run ``analyse``; return None when it rejected the input cleanly."""
    # Adjustments such as a velocity band lowered to the Nyquist rate are
    # documented warnings, expected for the odd sample rates drawn here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            return dsp.analyse(samples, fs_hz=fs_hz, rpm=rpm, machine=machine)
        except (ValueError, TypeError) as exc:
            assert str(exc)
            return None


class TestAnalyseHostileInput:
    @settings(max_examples=120, deadline=None)
    @given(
        samples=waveforms(),
        fs_hz=st.floats(min_value=300.0, max_value=100_000.0),
        rpm=st.one_of(st.none(), st.floats(min_value=60.0, max_value=12_000.0)),
        machine=st.sampled_from(MACHINES),
    )
    def test_hostile_samples_rejected_or_finite(
        self,
        samples: np.ndarray,
        fs_hz: float,
        rpm: float | None,
        machine: MachineInfo,
    ) -> None:
        analysis = analyse_or_reject(samples, fs_hz, rpm, machine)

        event("rejected" if analysis is None else "analysed")
        if analysis is not None:
            check_result(analysis)

    @settings(max_examples=80, deadline=None)
    @given(
        seed=st.integers(min_value=0, max_value=2**32 - 1),
        size=st.sampled_from([256, 1000, 4096]),
        fs_hz=sample_rates,
        rpm=shaft_speeds,
        machine=st.sampled_from(MACHINES),
    )
    def test_hostile_rates_rejected_or_finite(
        self,
        seed: int,
        size: int,
        fs_hz: float,
        rpm: float | None,
        machine: MachineInfo,
    ) -> None:
        samples = np.random.default_rng(seed).standard_normal(size)

        analysis = analyse_or_reject(samples, fs_hz, rpm, machine)

        event("rejected" if analysis is None else "analysed")
        if analysis is not None:
            check_result(analysis)

    @pytest.mark.parametrize("fs_hz", [0.0, -1.0, math.nan, math.inf])
    def test_rejects_invalid_sample_rate(self, fs_hz: float) -> None:
        samples = np.random.default_rng(1).standard_normal(4096)

        with pytest.raises(ValueError, match="sample rate"):
            dsp.analyse(samples, fs_hz=fs_hz)

    @pytest.mark.parametrize("rpm", [0.0, -60.0, math.nan, math.inf])
    def test_rejects_invalid_shaft_speed(self, rpm: float) -> None:
        samples = np.random.default_rng(1).standard_normal(4096)

        with pytest.raises(ValueError, match="rpm"):
            dsp.analyse(samples, fs_hz=12_000.0, rpm=rpm)

    @pytest.mark.parametrize("size", [0, 1, 255])
    def test_rejects_short_waveform(self, size: int) -> None:
        with pytest.raises(ValueError, match="at least 256 samples"):
            dsp.analyse(np.ones(size), fs_hz=12_000.0)

    @pytest.mark.parametrize(
        "samples",
        [
            np.zeros((64, 64)),
            np.array(["a"] * 300),
            np.ones(300, dtype=complex),
            np.array([None] * 300),
        ],
        ids=["2-D", "strings", "complex", "objects"],
    )
    def test_rejects_wrong_shape_or_dtype(self, samples: np.ndarray) -> None:
        with pytest.raises((ValueError, TypeError)):
            dsp.analyse(samples, fs_hz=12_000.0)

    @pytest.mark.parametrize("value", [0.0, 1e-300, 5.0])
    def test_constant_waveform_is_finite(self, value: float) -> None:
        analysis = dsp.analyse(
            np.full(4096, value),
            fs_hz=12_000.0,
            rpm=1796.0,
            machine=MACHINES[1],
        )

        check_result(analysis)
        # A constant has no vibration: every dynamic indicator is zero.
        assert analysis.time_domain.rms == 0.0
        assert analysis.velocity_rms_mm_s == 0.0

    @pytest.mark.parametrize("scale", [1e31, 1e150, 1e300])
    def test_rejects_samples_too_large_to_square(self, scale: float) -> None:
        samples = np.random.default_rng(2).standard_normal(4096) * scale

        with pytest.raises(ValueError, match=r"within \+/-1e\+30"):
            dsp.analyse(samples, fs_hz=12_000.0)

    @pytest.mark.parametrize("machine", MACHINES[1:], ids=["chosen", "configured"])
    def test_skips_bearing_when_lines_above_nyquist(self, machine: MachineInfo) -> None:
        samples = np.random.default_rng(3).standard_normal(4096)

        analysis = dsp.analyse(samples, fs_hz=12_000.0, rpm=1e300, machine=machine)

        check_result(analysis)
        assert analysis.envelope is None
        assert "Nyquist" in analysis.skipped["diagnosis"]
