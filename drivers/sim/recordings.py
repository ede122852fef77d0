"""Access to the bearing recordings shipped with the simulators."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np
from numpy.typing import NDArray

_DATA_PACKAGE = "drivers.sim.data"


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    """One drive-end accelerometer recording, in g, at ``fs_hz``.

    ``condition`` is the fault the rig had: ``normal``, ``inner_race``,
    ``outer_race`` or ``rolling_element``. ``rpm`` is the recorded speed.
    """

    name: str
    record: int
    condition: str
    fs_hz: float
    rpm: float
    samples: NDArray[np.float32] = field(repr=False)


@cache
def _metadata() -> dict[str, dict[str, object]]:
    text = resources.files(_DATA_PACKAGE).joinpath("recordings.json").read_text()
    data: dict[str, dict[str, object]] = json.loads(text)
    return data


def recording_names() -> list[str]:
    """Return the names of the shipped recordings, such as ``outer_race_021_234``."""
    return sorted(_metadata())


@cache
def load_recording(name: str) -> Recording:
    """Load one shipped recording by name.

    Raises:
        KeyError: no recording has that name; the message lists the names.
    """
    meta = _metadata().get(name)
    if meta is None:
        raise KeyError(
            f"unknown recording {name!r}; expected one of {recording_names()}"
        )
    with resources.files(_DATA_PACKAGE).joinpath(f"{name}.npy").open("rb") as f:
        samples = np.load(f)
    samples.setflags(write=False)
    return Recording(
        name=name,
        record=int(str(meta["record"])),
        condition=str(meta["condition"]),
        fs_hz=float(str(meta["fs_hz"])),
        rpm=float(str(meta["rpm"])),
        samples=samples,
    )
