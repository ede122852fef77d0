"""The ``cmagent analyze --plot`` figure: spectrum and envelope spectrum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dsp import Analysis, band_envelope, compute_spectrum, envelope_spectrum
from dsp.diagnosis import defect_line_targets, highest_target_hz

_COLOURS = {
    "BPFO": "tab:red",
    "BPFI": "tab:green",
    "2xBSF": "tab:purple",
    "FTF": "tab:orange",
}


def write_plot(target: Path, samples: NDArray[np.float64], analysis: Analysis) -> None:
    """Write a PNG with the amplitude spectrum and, when computed, the
    envelope spectrum with the defect frequencies and harmonics marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectrum = compute_spectrum(samples, fs_hz=analysis.fs_hz)
    rows = 2 if analysis.envelope is not None else 1
    figure, axes = plt.subplots(rows, 1, figsize=(10, 3.5 * rows), squeeze=False)
    top = axes[0][0]
    top.semilogy(spectrum.frequencies(), spectrum.amplitude() + 1e-12, lw=0.6)
    top.set_xlabel("frequency (Hz)")
    top.set_ylabel(f"amplitude ({analysis.unit} peak)")
    top.set_title(f"Spectrum, {analysis.n_samples} samples at {analysis.fs_hz:g} Hz")

    frequencies = analysis.defect_frequencies
    if analysis.envelope is not None and frequencies is not None:
        envelope = band_envelope(
            spectrum,
            analysis.envelope.band,
            min_rate_hz=analysis.envelope.envelope_fs_hz,
        )
        max_hz = 1.3 * highest_target_hz(frequencies) + 20.0
        env = envelope_spectrum(envelope, max_hz=max_hz)
        axis = axes[1][0]
        hz = np.arange(env.amplitude.size) * env.resolution_hz
        axis.plot(hz, env.amplitude, lw=0.7, color="black")
        for label, line_hz in defect_line_targets(frequencies):
            family = label.split(" ")[0]
            if family in _COLOURS:
                axis.axvline(
                    line_hz,
                    color=_COLOURS[family],
                    lw=0.8,
                    ls="--",
                    label=family if label.endswith("x1") else None,
                )
        axis.set_xlim(0, max_hz)
        # The envelope's mean fills the lowest bins; scale to the lines.
        above_dc = env.amplitude[int(3.0 / env.resolution_hz) + 1 :]
        if above_dc.size and above_dc.max() > 0:
            axis.set_ylim(0, 1.1 * float(above_dc.max()))
        axis.set_xlabel("frequency (Hz)")
        axis.set_ylabel(f"envelope ({analysis.unit} peak)")
        band = analysis.envelope.band
        axis.set_title(
            f"Envelope spectrum, band {band.low_hz:.0f}-{band.high_hz:.0f} Hz; "
            f"diagnosis {analysis.diagnosis.condition.value} "
            f"({analysis.diagnosis.confidence:.2f})"
        )
        axis.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
