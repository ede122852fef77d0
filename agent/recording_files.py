"""Read vibration recordings from .mat, .csv, .npy and .wav files.

Each reader returns the samples as float64 with what the file stores
about sample rate, shaft speed and channel. Files are never guessed at:
a rate the file does not store must be given by the caller.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from agent.errors import AgentError

SUFFIXES: Final = (".mat", ".csv", ".npy", ".wav")
_UNIFORM_TOLERANCE: Final = 1e-3
_NPY_MAGIC: Final = b"\x93NUMPY"


class RecordingFileError(AgentError):
    """A recording file cannot be read; ``path`` names it."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingFile:
    """Samples read from one file, with the rate and speed it stores.

    ``fs_hz`` and ``rpm`` are None when the file does not store them.
    """

    path: Path
    channel: str
    samples: NDArray[np.float64]
    fs_hz: float | None
    rpm: float | None


def read_recording(path: Path, *, channel: str | None = None) -> RecordingFile:
    """Read one recording, choosing the reader by the file suffix.

    Args:
        path: the file.
        channel: for .mat, a variable name or a CWRU channel code (``DE``,
            ``FE``, ``BA``; default ``DE``); for .wav, a channel number
            (default 0). A .csv file has one column (values) or two
            (time in seconds, value) and takes no channel.

    Raises:
        RecordingFileError: the file is missing, has an unsupported
            suffix, or does not hold one usable waveform.
    """
    if path.is_dir():
        raise RecordingFileError(path, "expected a file, found a directory")
    if not path.is_file():
        raise RecordingFileError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RecordingFileError(
            path, f"unsupported file type {suffix!r}; expected one of {SUFFIXES}"
        )
    try:
        if suffix == ".mat":
            return _read_mat(path, channel)
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".npy":
            return _read_npy(path)
        return _read_wav(path, channel)
    except RecordingFileError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RecordingFileError(path, f"cannot read: {exc}") from exc


def _read_mat(path: Path, channel: str | None) -> RecordingFile:
    variables = {
        name: value
        for name, value in _load_mat(path).items()
        if not name.startswith("__")
    }
    requested = channel or "DE"
    if requested in variables:
        name = requested
    else:
        matches = sorted(n for n in variables if n.endswith(f"{requested}_time"))
        if len(matches) != 1:
            raise RecordingFileError(
                path,
                f"expected one variable named {requested!r} or ending in "
                f"'{requested}_time', found {sorted(variables)}",
            )
        name = matches[0]

    rpm = None
    speeds = [n for n in variables if n.endswith("RPM")]
    if speeds:
        rpm = float(np.asarray(variables[speeds[0]], dtype=np.float64).ravel()[0])
    samples = _one_column(path, np.asarray(variables[name]), name)
    return RecordingFile(path=path, channel=name, samples=samples, fs_hz=None, rpm=rpm)


def _damaged_mat_errors() -> tuple[type[Exception], ...]:
    """Return what scipy 1.17 ``loadmat`` raises for a damaged file body.

    A body cut short raises OSError or MatReadError. Corrupt bytes fail
    while decoding, as ValueError, TypeError, OverflowError or zlib.error.
    """
    from scipy.io.matlab import MatReadError

    return (MatReadError, OSError, ValueError, TypeError, OverflowError, zlib.error)


def _load_mat(path: Path) -> dict[str, object]:
    """Load a MATLAB 4, 5 or 7 file, naming the version it cannot read."""
    import scipy.io
    from scipy.io.matlab import matfile_version

    try:
        major, _ = matfile_version(str(path))
    except (scipy.io.matlab.MatReadError, ValueError) as exc:
        raise RecordingFileError(
            path,
            f"not a MATLAB .mat file ({exc}); check that the file is complete, "
            "or export the signal to .csv or .npy",
        ) from None
    if major == 2:
        raise RecordingFileError(
            path,
            "MATLAB 7.3 (HDF5) .mat files cannot be read; save the variables "
            "again in MATLAB with save(..., '-v7'), or export the signal to "
            ".csv or .npy",
        )

    try:
        contents: dict[str, object] = scipy.io.loadmat(str(path))
    except _damaged_mat_errors() as exc:
        raise RecordingFileError(
            path,
            f"cannot read the MATLAB file ({exc}); check that the file is "
            "complete, or export the signal to .csv or .npy",
        ) from None
    return contents


def _read_npy(path: Path) -> RecordingFile:
    with path.open("rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise RecordingFileError(
            path,
            "not a NumPy .npy file: it does not start with the .npy signature; "
            "write the samples with numpy.save",
        )
    array = np.load(path, allow_pickle=False)
    samples = _one_column(path, array, "array")
    return RecordingFile(
        path=path, channel="array", samples=samples, fs_hz=None, rpm=None
    )


def _read_wav(path: Path, channel: str | None) -> RecordingFile:
    import scipy.io.wavfile

    rate, data = scipy.io.wavfile.read(path)
    if np.issubdtype(data.dtype, np.integer):
        # Integer PCM is scaled so full scale reads 1.0; unsigned 8-bit
        # data is centred on 128.
        info = np.iinfo(data.dtype)
        half = (int(info.max) - int(info.min) + 1) / 2
        data = (data.astype(np.float64) - (int(info.min) + half)) / half
    index = _column_index(path, channel, data.shape[1] if data.ndim == 2 else 1)
    samples = data[:, index] if data.ndim == 2 else data
    return RecordingFile(
        path=path,
        channel=str(index),
        samples=np.asarray(samples, dtype=np.float64),
        fs_hz=float(rate),
        rpm=None,
    )


def _read_csv(path: Path) -> RecordingFile:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(row)]
    if not rows:
        raise RecordingFileError(path, "expected numbers, found an empty file")
    header: list[str] | None = None
    if not _is_number(rows[0][0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise RecordingFileError(
            path, f"expected one or two numeric columns: {exc}"
        ) from None
    if table.ndim != 2 or table.shape[1] not in (1, 2):
        raise RecordingFileError(
            path,
            "expected one column (values) or two (time in s, value), found "
            f"{table.shape[1] if table.ndim == 2 else 0} columns",
        )
    if table.shape[1] == 1:
        return RecordingFile(
            path=path, channel="0", samples=table[:, 0], fs_hz=None, rpm=None
        )
    return RecordingFile(
        path=path,
        channel=header[1] if header else "1",
        samples=table[:, 1],
        fs_hz=_rate_from_times(path, table[:, 0]),
        rpm=None,
    )


def _rate_from_times(path: Path, times: NDArray[np.float64]) -> float:
    steps = np.diff(times)
    if steps.size == 0 or not np.all(steps > 0):
        raise RecordingFileError(path, "time column must increase from row to row")
    step = float(np.median(steps))
    worst = float(np.max(np.abs(steps - step))) / step
    if worst > _UNIFORM_TOLERANCE:
        raise RecordingFileError(
            path,
            f"time column is not uniformly sampled: steps vary by "
            f"{worst:.1%} around {step:g} s (at most "
            f"{_UNIFORM_TOLERANCE:.1%} allowed)",
        )
    return 1.0 / step


def _one_column(
    path: Path, array: NDArray[np.generic], name: str
) -> NDArray[np.float64]:
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise RecordingFileError(
            path, f"expected {name} to be one column, found shape {array.shape}"
        )
    if not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
    ):
        raise RecordingFileError(
            path, f"expected numbers in {name}, found dtype {array.dtype}"
        )
    return np.asarray(array, dtype=np.float64)


def _column_index(path: Path, channel: str | None, count: int) -> int:
    if channel is None:
        return 0
    if not channel.isdigit() or int(channel) >= count:
        raise RecordingFileError(
            path, f"expected a channel number below {count}, found {channel!r}"
        )
    return int(channel)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
