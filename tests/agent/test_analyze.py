"""``cmagent analyze`` on real CWRU files and on files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.io.wavfile

from agent.cli import main
from dsp.bearings import known_bearings

CWRU = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cwru"
INNER_RACE = CWRU / "12k_Drive_End_IR007_0_105.mat"
OUTER_RACE = CWRU / "12k_Drive_End_OR007@6_0_130.mat"

needs_cwru = pytest.mark.skipif(
    not INNER_RACE.is_file(), reason="CWRU recordings not present"
)


def tone(n: int, fs_hz: float, freq_hz: float = 120.0) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * freq_hz * np.arange(n) / fs_hz)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@needs_cwru
class TestAnalyzeCwru:
    def test_json_names_inner_race(self, capsys: pytest.CaptureFixture[str]) -> None:
        status = main(
            ["analyze", str(INNER_RACE), "--fs", "12000", "--bearing", "6205", "--json"]
        )
        [record] = json_lines(capsys.readouterr().out)
        assert status == 0
        assert record["file"] == str(INNER_RACE)
        assert record["diagnosis"] == "inner_race"
        assert isinstance(record["confidence"], float)
        assert record["iso_zone"] == "A"
        defects = record["defect_frequencies"]
        assert isinstance(defects, dict)
        # 6205 at the file's 1797 rpm.
        assert defects["bpfi_hz"] == pytest.approx(162.19, abs=0.01)
        for key in ("rms", "kurtosis", "velocity_rms_mm_s"):
            assert isinstance(record[key], float)

    def test_mat_without_fs_suggests_cwru_rates(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status = main(["analyze", str(INNER_RACE)])
        error = capsys.readouterr().err
        assert status == 1
        assert "no sample rate" in error
        assert "12000" in error
        assert "48000" in error

    def test_fan_end_channel(self, capsys: pytest.CaptureFixture[str]) -> None:
        status = main(
            ["analyze", str(OUTER_RACE), "--fs", "12000", "--channel", "FE", "--json"]
        )
        [record] = json_lines(capsys.readouterr().out)
        assert status == 0
        analysis = record["analysis"]
        assert isinstance(analysis, dict)
        assert analysis["n_samples"] > 100_000

    def test_bad_file_does_not_stop_the_others(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        broken = tmp_path / "broken.npy"
        broken.write_bytes(b"not numpy")
        status = main(
            [
                "analyze",
                str(broken),
                str(OUTER_RACE),
                "--fs",
                "12000",
                "--bearing",
                "6205",
            ]
        )
        captured = capsys.readouterr()
        assert status == 1
        assert len(captured.err.strip().splitlines()) == 1
        assert "broken.npy" in captured.err
        assert "outer_race" in captured.out
        assert "1 analysed, 1 failed" in captured.out

    def test_plot_per_file(self, tmp_path: Path) -> None:
        target = tmp_path / "out.png"
        status = main(
            [
                "analyze",
                str(INNER_RACE),
                str(OUTER_RACE),
                "--fs",
                "12000",
                "--bearing",
                "6205",
                "--plot",
                str(target),
            ]
        )
        assert status == 0
        pngs = sorted(p.name for p in tmp_path.glob("out-*.png"))
        assert pngs == [f"out-{INNER_RACE.stem}.png", f"out-{OUTER_RACE.stem}.png"]
        for name in pngs:
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class TestAnalyzeFormats:
    def test_csv_with_time_column_derives_rate(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        fs_hz = 5000.0
        t = np.arange(8192) / fs_hz
        path = tmp_path / "wave.csv"
        values = tone(8192, fs_hz)
        rows = "\n".join(f"{a:.9f},{b:.9f}" for a, b in zip(t, values, strict=True))
        path.write_text("time_s,accel_g\n" + rows + "\n")
        status = main(["analyze", str(path), "--json"])
        [record] = json_lines(capsys.readouterr().out)
        assert status == 0
        analysis = record["analysis"]
        assert isinstance(analysis, dict)
        assert analysis["fs_hz"] == pytest.approx(fs_hz, rel=1e-6)
        # RMS of a 0.3 g sine.
        assert record["rms"] == pytest.approx(0.3 / np.sqrt(2), rel=1e-3)
        assert record["skipped"] == {
            "orders": "rpm not given",
            "envelope": "rpm not given",
            "diagnosis": "rpm not given",
        }

    def test_csv_with_uneven_times_is_rejected(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        t = np.cumsum(np.r_[0.0, np.full(600, 1e-3), np.full(600, 2e-3)])
        path = tmp_path / "uneven.csv"
        path.write_text("\n".join(f"{a},{0.1}" for a in t))
        assert main(["analyze", str(path)]) == 1
        assert "not uniformly sampled" in capsys.readouterr().err

    def test_wav_uses_file_rate_and_full_scale(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "wave.wav"
        pcm = np.round(tone(8000, 8000.0) * 32768).astype(np.int16)
        scipy.io.wavfile.write(path, 8000, pcm)
        status = main(["analyze", str(path), "--json", "--rpm", "1800"])
        [record] = json_lines(capsys.readouterr().out)
        assert status == 0
        analysis = record["analysis"]
        assert isinstance(analysis, dict)
        assert analysis["fs_hz"] == 8000.0
        assert record["rms"] == pytest.approx(0.3 / np.sqrt(2), rel=1e-3)

    def test_npy_needs_fs(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "wave.npy"
        np.save(path, tone(4096, 4096.0))
        assert main(["analyze", str(path)]) == 1
        assert "pass --fs" in capsys.readouterr().err
        assert main(["analyze", str(path), "--fs", "4096", "--json"]) == 0

    def test_fs_contradicting_file_rate_is_rejected(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "wave.wav"
        scipy.io.wavfile.write(path, 8000, tone(8000, 8000.0).astype(np.float32))
        assert main(["analyze", str(path), "--fs", "16000"]) == 1
        assert "contradicts" in capsys.readouterr().err

    def test_mat_variable_by_name(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "custom.mat"
        scipy.io.savemat(
            path, {"X001_DE_time": tone(4096, 4096.0)[:, None], "X001RPM": 1500.0}
        )
        status = main(["analyze", str(path), "--fs", "4096", "--json"])
        [record] = json_lines(capsys.readouterr().out)
        assert status == 0
        analysis = record["analysis"]
        assert isinstance(analysis, dict)
        assert analysis["rpm"] == 1500.0

    @pytest.mark.parametrize("name", ["recordings", "recordings.npy"])
    def test_directory_is_named_as_such(
        self, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / name
        path.mkdir()
        assert main(["analyze", str(path), "--fs", "4096"]) == 1
        assert f"{path}: expected a file, found a directory" in capsys.readouterr().err

    def test_missing_file_without_suffix_is_not_found(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "recording"
        assert main(["analyze", str(path), "--fs", "4096"]) == 1
        assert f"{path}: file not found" in capsys.readouterr().err

    def test_unsupported_suffix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "wave.txt"
        path.write_text("1\n2\n")
        assert main(["analyze", str(path)]) == 1
        assert "unsupported file type '.txt'" in capsys.readouterr().err


def matlab_73_file(path: Path) -> None:
    """Write the 128-byte header of a MATLAB 7.3 file and the HDF5 signature."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM"
    path.write_bytes(header + b"\x89HDF\r\n\x1a\n" + bytes(64))


class TestAnalyzeUnreadableFiles:
    def test_matlab_73_names_version_and_fix(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "v73.mat"
        matlab_73_file(path)
        assert main(["analyze", str(path), "--fs", "4096"]) == 1
        err = capsys.readouterr().err
        assert f"{path}: MATLAB 7.3 (HDF5)" in err
        assert "'-v7'" in err
        assert ".csv or .npy" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (b"this is not a MATLAB file " * 8, "not a MATLAB .mat file"),
            (b"abc", "not a MATLAB .mat file"),
            (b"", "not a MATLAB .mat file"),
        ],
    )
    def test_garbage_mat_is_reported(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        content: bytes,
        expected: str,
    ) -> None:
        path = tmp_path / "garbage.mat"
        path.write_bytes(content)
        assert main(["analyze", str(path), "--fs", "4096"]) == 1
        err = capsys.readouterr().err
        assert f"{path}: {expected}" in err
        assert "Traceback" not in err

    def test_truncated_mat_body_is_reported(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        whole = tmp_path / "whole.mat"
        scipy.io.savemat(whole, {"X001_DE_time": tone(4096, 4096.0)[:, None]})
        path = tmp_path / "cut.mat"
        path.write_bytes(whole.read_bytes()[:300])
        assert main(["analyze", str(path), "--fs", "4096"]) == 1
        err = capsys.readouterr().err
        assert f"{path}: cannot read the MATLAB file" in err
        assert "Traceback" not in err

    def test_garbage_npy_is_not_a_numpy_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "broken.npy"
        path.write_bytes(b"not numpy")
        assert main(["analyze", str(path), "--fs", "4096"]) == 1
        err = capsys.readouterr().err
        assert f"{path}: not a NumPy .npy file" in err
        assert "allow_pickle" not in err

    def test_unreadable_files_do_not_stop_the_batch(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        v73 = tmp_path / "v73.mat"
        matlab_73_file(v73)
        garbage = tmp_path / "garbage.mat"
        garbage.write_bytes(b"not a MATLAB file " * 20)
        good = tmp_path / "good.npy"
        np.save(good, tone(16384, 12000.0))
        status = main(["analyze", str(v73), str(garbage), str(good), "--fs", "12000"])
        captured = capsys.readouterr()
        assert status == 1
        assert len(captured.err.strip().splitlines()) == 2
        assert f"{v73}: MATLAB 7.3" in captured.err
        assert f"{garbage}: not a MATLAB .mat file" in captured.err
        assert str(good) in captured.out
        assert "1 analysed, 2 failed" in captured.out


class TestAnalyzeOptions:
    def test_unknown_bearing_lists_models(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["analyze", "x.npy", "--bearing", "9999"]) == 2
        assert "6205" in capsys.readouterr().err

    def test_help_lists_every_catalogue_bearing(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit):
            main(["analyze", "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        for model in known_bearings():
            assert model in help_text

    def test_bearing_geometry_is_parsed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "wave.npy"
        np.save(path, tone(16384, 12000.0))
        status = main(
            [
                "analyze",
                str(path),
                "--fs",
                "12000",
                "--rpm",
                "1800",
                "--json",
                "--bearing-geometry",
                "balls=8,ball_d=0.235,pitch_d=1.245,angle=0",
            ]
        )
        [record] = json_lines(capsys.readouterr().out)
        assert status == 0
        defects = record["defect_frequencies"]
        assert isinstance(defects, dict)
        # BPFO = 8 / 2 * (1 - 0.235 / 1.245) * 30 Hz.
        assert defects["bpfo_hz"] == pytest.approx(4 * (1 - 0.235 / 1.245) * 30)

    def test_bearing_geometry_missing_key(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status = main(["analyze", "x.npy", "--bearing-geometry", "balls=8,ball_d=0.2"])
        assert status == 2
        assert "pitch_d" in capsys.readouterr().err

    def test_invalid_band(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["analyze", "x.npy", "--band", "2000"]) == 2
        assert "LOW,HIGH" in capsys.readouterr().err

    @pytest.mark.parametrize("balls", ["8.5", "eight"])
    def test_bearing_geometry_needs_whole_ball_count(
        self, balls: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        spec = f"balls={balls},ball_d=0.235,pitch_d=1.245"
        assert main(["analyze", "x.npy", "--bearing-geometry", spec]) == 2
        err = capsys.readouterr().err
        assert "ball count in --bearing-geometry to be a whole number" in err
        assert f"balls={balls!r}" in err
        assert "int()" not in err

    def test_bearing_geometry_diameter_not_a_number(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        spec = "balls=8,ball_d=wide,pitch_d=1.245"
        assert main(["analyze", "x.npy", "--bearing-geometry", spec]) == 2
        err = capsys.readouterr().err
        assert "expected a number for ball_d in --bearing-geometry" in err
        assert "'wide'" in err

    def test_band_not_a_number(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["analyze", "x.npy", "--band", "500,high"]) == 2
        assert "found '500,high'" in capsys.readouterr().err

    def test_plot_into_missing_folder_fails_first(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "wave.npy"
        np.save(path, tone(16384, 12000.0))
        target = tmp_path / "missing" / "out.png"
        status = main(["analyze", str(path), "--fs", "12000", "--plot", str(target)])
        captured = capsys.readouterr()
        assert status == 2
        assert captured.out == ""
        assert f"--plot {str(target)!r}" in captured.err
        assert "does not exist" in captured.err
        assert not target.parent.exists()

    def test_plot_written_into_existing_folder(self, tmp_path: Path) -> None:
        path = tmp_path / "wave.npy"
        np.save(path, tone(16384, 12000.0))
        target = tmp_path / "out.png"
        status = main(["analyze", str(path), "--fs", "12000", "--plot", str(target)])
        assert status == 0
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class TestAnalyzeSummary:
    """The table printed after two or more files."""

    @pytest.fixture
    def output(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
        t = np.arange(12_000) / 12_000.0
        np.save(tmp_path / "tone.npy", 0.1 * np.sin(2 * np.pi * 50.0 * t))
        np.save(tmp_path / "dead.npy", np.zeros(12_000))
        files = [str(tmp_path / "tone.npy"), str(tmp_path / "dead.npy")]
        assert main(["analyze", *files, "--fs", "12000"]) == 0
        return capsys.readouterr().out

    def test_skipped_diagnosis_says_why(self, output: str) -> None:
        rows = [line for line in output.splitlines() if line.startswith("tone.npy")]
        assert rows[-1].endswith("skipped (rpm not given)")
        assert "diagnosis: unknown" not in output

    def test_flat_file_named_sensor_fault(self, output: str) -> None:
        rows = [line for line in output.splitlines() if line.startswith("dead.npy")]
        assert rows[-1].endswith("flat signal: failed sensor, cable or input")
        assert "flat signal: a failed sensor" in output
