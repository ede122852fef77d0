"""The status snapshot a running agent keeps in ``<state_dir>/status.json``.

The pipeline rewrites the file every few seconds (atomically, so a reader
sees a whole snapshot); ``cmagent status`` reads it, for a running agent and
for one that has stopped. The snapshot is plain JSON:

``written_at``, ``pid``, ``running`` (False after a clean stop),
``gateway``, ``devices`` (state, last reading time and last error per
device), ``assets`` (severity, score, open episode, active indicators),
``outbox`` (depth, bytes, oldest item age, counters), ``uplink`` (state,
last delivery, delivered count), ``mqtt`` (state and counters) and
``counters`` (waveforms analysed, readings, drops, rejections).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from agent.health_baseline import write_json_atomic

STATUS_FILE_NAME: Final = "status.json"


def status_path(state_dir: Path) -> Path:
    """Return the path of the status snapshot in ``state_dir``."""
    return Path(state_dir) / STATUS_FILE_NAME


def write_status(state_dir: Path, snapshot: dict[str, Any]) -> None:
    """Replace the status snapshot atomically.

    Raises:
        OSError: the state directory is not writable.
    """
    write_json_atomic(status_path(state_dir), snapshot)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """Return the last snapshot, or None when no agent has written one.

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    path = status_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
