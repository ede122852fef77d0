"""``cmagent analyze``: one-shot vibration analysis of recording files.

Runs the same analysis as the service on .mat (CWRU layout), .csv, .npy
and .wav files and prints the indicators, the bearing defect frequencies
and the diagnosis, as text or one JSON object per file.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from agent.recording_files import RecordingFileError, read_recording

if TYPE_CHECKING:
    from dsp import Analysis, BearingGeometry, MachineInfo

_CWRU_HINT = (
    "pass --fs; for the CWRU bearing data use 12000 for the 12k records "
    "and 48000 for the normal and 48k records"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="analyse vibration recordings (.mat, .csv, .npy, .wav)",
        description="Analyse acceleration recordings: time-domain indicators, "
        "velocity RMS and ISO 20816-3 zone, shaft orders, bearing defect "
        "frequencies, envelope spectrum and a bearing diagnosis.",
    )
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="recording: .mat (CWRU layout), .csv, .npy or .wav",
    )
    parser.add_argument(
        "--fs", type=float, help="sample rate in Hz (required for .mat and .npy)"
    )
    parser.add_argument(
        "--rpm", type=float, help="shaft speed in rev/min (default: from the file)"
    )
    bearing = parser.add_mutually_exclusive_group()
    bearing.add_argument(
        "--bearing", metavar="MODEL", help="catalogue bearing: 6203 or 6205"
    )
    bearing.add_argument(
        "--bearing-geometry",
        metavar="SPEC",
        help="balls=N,ball_d=D,pitch_d=P[,angle=DEG]; diameters in one unit",
    )
    parser.add_argument(
        "--unit", choices=("g", "m/s2"), default="g", help="sample unit (g)"
    )
    parser.add_argument(
        "--channel",
        help=".mat: DE, FE, BA or a variable name (DE); .wav: channel number",
    )
    parser.add_argument(
        "--band",
        metavar="LOW,HIGH",
        help="fixed envelope band in Hz (default: the kurtogram picks it)",
    )
    parser.add_argument(
        "--group", type=int, choices=(1, 2), default=2, help="ISO group (2)"
    )
    parser.add_argument(
        "--foundation",
        choices=("rigid", "flexible"),
        default="rigid",
        help="ISO foundation class (rigid)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per file"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="write spectrum and envelope spectrum; one PNG per file, "
        "suffixed with the file name when several are given",
    )
    parser.set_defaults(handler=run_analyze)


def parse_geometry(text: str) -> BearingGeometry:
    """Parse ``balls=9,ball_d=0.3126,pitch_d=1.537,angle=0``.

    Raises:
        ValueError: a key is missing, unknown or not a number.
    """
    from dsp import BearingGeometry

    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(
                f"expected KEY=VALUE in --bearing-geometry, found {part!r}"
            )
        fields[key.strip()] = value.strip()
    allowed = {"balls", "ball_d", "pitch_d", "angle"}
    if unknown := sorted(set(fields) - allowed):
        raise ValueError(
            f"unknown --bearing-geometry keys {unknown}; expected {sorted(allowed)}"
        )
    if missing := sorted({"balls", "ball_d", "pitch_d"} - set(fields)):
        raise ValueError(f"--bearing-geometry is missing {missing}")
    return BearingGeometry(
        balls=_ball_count(fields["balls"]),
        ball_diameter=_geometry_number("ball_d", fields["ball_d"]),
        pitch_diameter=_geometry_number("pitch_d", fields["pitch_d"]),
        contact_angle_deg=_geometry_number("angle", fields.get("angle", "0")),
        model="custom",
    )


def _ball_count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            "expected the ball count in --bearing-geometry to be a whole "
            f"number, found balls={text!r}"
        ) from None


def _geometry_number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"expected a number for {key} in --bearing-geometry, found {text!r}"
        ) from None


def parse_band(text: str) -> tuple[float, float]:
    """Parse ``LOW,HIGH`` in Hz."""
    low, sep, high = text.partition(",")
    try:
        if sep:
            return float(low), float(high)
    except ValueError:
        pass
    raise ValueError(f"expected --band LOW,HIGH in Hz, found {text!r}")


def run_analyze(args: argparse.Namespace) -> int:
    """Analyse each file; return 1 if any failed, 2 on invalid options."""
    from dsp import MachineInfo, bearing_by_model

    try:
        bearing = None
        if args.bearing:
            bearing = bearing_by_model(args.bearing)
        elif args.bearing_geometry:
            bearing = parse_geometry(args.bearing_geometry)
        band = parse_band(args.band) if args.band else None
    except (KeyError, ValueError, TypeError) as exc:
        print(f"cmagent analyze: {_message(exc)}", file=sys.stderr)
        return 2
    if args.plot and not args.plot.parent.is_dir():
        folder = args.plot.parent
        state = "is not a folder" if folder.exists() else "does not exist"
        print(
            f"cmagent analyze: --plot {str(args.plot)!r}: folder {str(folder)!r} "
            f"{state}; create it or choose another path",
            file=sys.stderr,
        )
        return 2
    machine = MachineInfo(
        iso_group=args.group,
        foundation=args.foundation,
        bearing=bearing,
        envelope_band_hz=band,
    )

    results: list[tuple[Path, Analysis]] = []
    failed = 0
    show_progress = len(args.files) > 1 and sys.stderr.isatty()
    for number, path in enumerate(args.files, start=1):
        if show_progress:
            _progress(number, len(args.files), path)
        try:
            analysis = _analyse_file(path, args, machine)
        except (RecordingFileError, ValueError) as exc:
            failed += 1
            _clear_progress(show_progress)
            print(f"cmagent analyze: {_message(exc)}", file=sys.stderr)
            continue
        _clear_progress(show_progress)
        results.append((path, analysis))
        _emit(path, analysis, args)
        if args.plot and not _plot(path, analysis, args):
            failed += 1

    if len(args.files) > 1 and not args.json:
        _print_summary(results, failed)
    return 1 if failed else 0


def _message(exc: BaseException) -> str:
    # KeyError quotes its message; show the text itself.
    return str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)


def _analyse_file(
    path: Path, args: argparse.Namespace, machine: MachineInfo
) -> Analysis:
    from dsp import analyse

    recording = read_recording(path, channel=args.channel)
    fs_hz = _sample_rate(path, recording.fs_hz, args.fs)
    rpm = args.rpm if args.rpm is not None else recording.rpm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            analysis = analyse(
                recording.samples,
                fs_hz=fs_hz,
                rpm=rpm,
                machine=machine,
                unit=args.unit,
            )
        except ValueError as exc:
            raise RecordingFileError(path, str(exc)) from exc
    for warning in caught:
        print(f"cmagent analyze: {path}: warning: {warning.message}", file=sys.stderr)
    return analysis


def _sample_rate(path: Path, file_hz: float | None, option_hz: float | None) -> float:
    if file_hz is None:
        if option_hz is None:
            hint = _CWRU_HINT if path.suffix.lower() == ".mat" else "pass --fs"
            raise RecordingFileError(path, f"the file stores no sample rate; {hint}")
        return option_hz
    if option_hz is not None and abs(option_hz - file_hz) > 1e-3 * file_hz:
        raise RecordingFileError(
            path,
            f"--fs {option_hz:g} Hz contradicts the file's rate {file_hz:g} Hz",
        )
    return file_hz


def summary_record(path: Path, analysis: Analysis) -> dict[str, object]:
    """Build the JSON object printed for one file."""
    data = analysis.to_dict()
    defects = data["defect_frequencies"]
    time_domain = data["time_domain"]
    diagnosis = data["diagnosis"]
    assert isinstance(time_domain, dict) and isinstance(diagnosis, dict)
    return {
        "file": str(path),
        "diagnosis": diagnosis["condition"],
        "confidence": diagnosis["confidence"],
        "rms": time_domain["rms"],
        "kurtosis": time_domain["kurtosis"],
        "velocity_rms_mm_s": data["velocity_rms_mm_s"],
        "iso_zone": data["iso_zone"],
        "defect_frequencies": defects,
        "skipped": data["skipped"],
        "analysis": data,
    }


def _emit(path: Path, analysis: Analysis, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(summary_record(path, analysis), allow_nan=False))
        return
    td = analysis.time_domain
    print(f"{path}")
    print(
        f"  {analysis.n_samples} samples at {analysis.fs_hz:g} Hz, "
        f"rpm {analysis.rpm if analysis.rpm is not None else 'not given'}"
    )
    print(
        f"  RMS {td.rms:.4g} {analysis.unit}, peak {td.peak:.4g}, "
        f"crest factor {_fmt(td.crest_factor)}, kurtosis {_fmt(td.kurtosis)}"
    )
    low_hz, high_hz = analysis.velocity_band_hz
    print(
        f"  velocity {analysis.velocity_rms_mm_s:.3g} mm/s RMS "
        f"({low_hz:.3g}-{high_hz:.4g} Hz), "
        f"ISO 20816-3 zone {analysis.iso_zone.value}"
    )
    if analysis.flat:
        print(
            "  flat signal: a failed sensor, cable or input; these indicators "
            "describe the sensor, not the machine"
        )
    if analysis.defect_frequencies is not None:
        f = analysis.defect_frequencies
        print(
            f"  defect frequencies: BPFO {f.bpfo_hz:.2f} Hz, BPFI "
            f"{f.bpfi_hz:.2f} Hz, BSF {f.bsf_hz:.2f} Hz, FTF {f.ftf_hz:.2f} Hz"
        )
    if analysis.envelope is not None:
        band = analysis.envelope.band
        print(
            f"  envelope band {band.low_hz:.0f}-{band.high_hz:.0f} Hz "
            f"({band.source}), spectral kurtosis "
            f"{analysis.envelope.spectral_kurtosis:.2f}"
        )
    diagnosis = analysis.diagnosis
    if "diagnosis" not in analysis.skipped:
        print(
            f"  diagnosis: {diagnosis.condition.value} "
            f"(confidence {diagnosis.confidence:.2f})"
        )
    for text in diagnosis.evidence:
        print(f"    {text}")
    for part, reason in analysis.skipped.items():
        print(f"  {part} skipped: {reason}")


def _diagnosis_label(analysis: Analysis) -> str:
    """Return the summary table's diagnosis: a condition, or why there is none."""
    if analysis.flat:
        return "flat signal: failed sensor, cable or input"
    if "diagnosis" in analysis.skipped:
        return f"skipped ({analysis.skipped['diagnosis']})"
    diagnosis = analysis.diagnosis
    return f"{diagnosis.condition.value} ({diagnosis.confidence:.2f})"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _print_summary(results: list[tuple[Path, Analysis]], failed: int) -> None:
    print()
    header = f"{'file':<36} {'RMS':>8} {'mm/s':>6} {'zone':>4}  diagnosis"
    print(header)
    print("-" * len(header))
    for path, analysis in results:
        name = path.name if len(path.name) <= 36 else path.name[:33] + "..."
        print(
            f"{name:<36} {analysis.time_domain.rms:>8.4f} "
            f"{analysis.velocity_rms_mm_s:>6.2f} {analysis.iso_zone.value:>4}  "
            f"{_diagnosis_label(analysis)}"
        )
    print(f"{len(results)} analysed, {failed} failed")


def _progress(number: int, total: int, path: Path) -> None:
    width = 24
    done = int(width * (number - 1) / total)
    bar = "#" * done + "-" * (width - done)
    sys.stderr.write(f"\r[{bar}] {number}/{total} {path.name[:40]}")
    sys.stderr.flush()


def _clear_progress(shown: bool) -> None:
    if shown:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def plot_path(target: Path, source: Path, several: bool) -> Path:
    """Name the PNG for one source file: ``out.png`` or ``out-<stem>.png``."""
    if not several:
        return target
    return target.with_name(f"{target.stem}-{source.stem}{target.suffix or '.png'}")


def _plot(path: Path, analysis: Analysis, args: argparse.Namespace) -> bool:
    """Write the plot of one file; return False after reporting a failure."""
    from agent.commands._analyze_plot import write_plot

    target = plot_path(args.plot, path, len(args.files) > 1)
    recording = read_recording(path, channel=args.channel)
    try:
        write_plot(target, recording.samples, analysis)
    except (OSError, ValueError) as exc:
        print(f"cmagent analyze: {target}: cannot write plot: {exc}", file=sys.stderr)
        return False
    return True
