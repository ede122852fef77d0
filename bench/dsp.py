"""Time ``dsp.analyse`` against one ``scipy.fft.rfft`` of the same length.

Both are timed in the same process on real drive-end recordings at
12 kHz, in alternating rounds of consecutive calls. The rfft stays warm
in cache, which is its fastest, so the ratio is not flattered. Both see
the same background load, so the ratio holds on a shared machine where
the absolute times do not. Runs on one core: scipy.fft uses one
worker unless asked otherwise, and NumPy's BLAS does no FFT work.

    .venv/bin/python bench/dsp.py [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.fft

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dsp
from drivers.sim.recordings import load_recording

RECORDING = "inner_race_007_105"
LENGTHS = (12_000, 65_536)
ROUND = 20


def _time_once(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(length: int, runs: int) -> dict[str, float]:
    """Time analysis and rfft of one ``length``-sample block, interleaved."""
    recording = load_recording(RECORDING)
    block = np.asarray(recording.samples[:length], dtype=np.float64)
    machine = dsp.MachineInfo(bearing=dsp.bearing_by_model("6205"))

    def analyse() -> object:
        return dsp.analyse(
            block, fs_hz=recording.fs_hz, rpm=recording.rpm, machine=machine
        )

    def rfft() -> object:
        return scipy.fft.rfft(block)

    for _ in range(5):
        analyse()
        rfft()
    analyse_s: list[float] = []
    rfft_s: list[float] = []
    for _ in range(max(runs // ROUND, 1)):
        rfft_s += [_time_once(rfft) for _ in range(ROUND)]
        analyse_s += [_time_once(analyse) for _ in range(ROUND)]

    analyse_median = statistics.median(analyse_s)
    rfft_median = statistics.median(rfft_s)
    return {
        "samples": length,
        "analyse_ms": analyse_median * 1e3,
        "rfft_ms": rfft_median * 1e3,
        "ratio_to_rfft": analyse_median / rfft_median,
        "ratio_of_minimums": min(analyse_s) / min(rfft_s),
        "waveforms_per_s": 1.0 / analyse_median,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed runs per length")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    results = [measure(length, args.runs) for length in LENGTHS]
    if args.json:
        print(
            json.dumps(
                {
                    "recording": RECORDING,
                    "machine": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                    "scipy": scipy.__version__,
                    "runs": args.runs,
                    "ratio_to_rfft": {
                        str(r["samples"]): round(r["ratio_to_rfft"], 3) for r in results
                    },
                    "results": results,
                }
            )
        )
        return 0

    print(f"dsp.analyse vs scipy.fft.rfft, {RECORDING}, median of {args.runs}")
    print(
        f"{'samples':>8} {'analyse ms':>11} {'rfft ms':>8} "
        f"{'ratio':>6} {'min ratio':>9} {'waveforms/s':>12}"
    )
    for r in results:
        print(
            f"{r['samples']:>8} {r['analyse_ms']:>11.3f} {r['rfft_ms']:>8.3f} "
            f"{r['ratio_to_rfft']:>6.2f} {r['ratio_of_minimums']:>9.2f} "
            f"{r['waveforms_per_s']:>12.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
