"""Learned baselines and the JSON file that keeps health state across restarts.

A baseline is learned once per asset and indicator from the first
``warmup_count`` good values: its median and its median absolute deviation
(MAD). The limits derived from it are ``median + factor × σ̂`` where
``σ̂ = 1.4826 × MAD`` estimates the standard deviation of normally
distributed values robustly. A near-constant indicator has a MAD close to
zero, so ``σ̂`` is floored at :data:`RELATIVE_SIGMA_FLOOR` of the median (and
:data:`ABSOLUTE_SIGMA_FLOOR`) to keep measurement noise from raising alarms.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

MAD_TO_SIGMA: Final = 1.4826
"""Scale from the MAD to the standard deviation of a normal distribution."""

RELATIVE_SIGMA_FLOOR: Final = 0.05
"""Smallest σ̂ as a fraction of the baseline median."""

ABSOLUTE_SIGMA_FLOOR: Final = 1e-6
"""Smallest σ̂ in the indicator's unit, for baselines with a median near 0."""

STATE_VERSION: Final = 1


@dataclass(slots=True, kw_only=True)
class Baseline:
    """Warm-up values of one indicator and, once complete, their statistics."""

    values: list[float] = field(default_factory=list)
    median: float | None = None
    mad: float | None = None

    @property
    def learned(self) -> bool:
        return self.median is not None

    def add(self, value: float, warmup_count: int) -> None:
        """Add a warm-up value; learn the statistics on the last one."""
        if self.learned:
            return
        self.values.append(value)
        if len(self.values) >= warmup_count:
            self.median = statistics.median(self.values)
            self.mad = statistics.median(abs(v - self.median) for v in self.values)

    def sigma(self) -> float:
        """Return the robust standard deviation with its floors applied."""
        if self.median is None or self.mad is None:
            raise ValueError("baseline not learned yet")
        return max(
            MAD_TO_SIGMA * self.mad,
            RELATIVE_SIGMA_FLOOR * abs(self.median),
            ABSOLUTE_SIGMA_FLOOR,
        )

    def limit(self, factor: float) -> float:
        """Return ``median + factor × σ̂``."""
        assert self.median is not None
        return self.median + factor * self.sigma()

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "median": self.median, "mad": self.mad}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        return cls(
            values=[float(v) for v in data.get("values", [])],
            median=data.get("median"),
            mad=data.get("mad"),
        )


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON so that readers see the old or the new file.

    The text goes to a temporary file in the same directory, is flushed to
    disk, then renamed over ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_state_file(path: Path) -> dict[str, Any]:
    """Read a health state file; a missing or unreadable one gives ``{}``.

    An unreadable file is renamed to ``<name>.corrupt`` and logged, so the
    agent starts with fresh baselines instead of failing on every start.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(f"expected version {STATE_VERSION}")
    except ValueError as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        logger.error(
            "health.state_unreadable",
            extra={"path": str(path), "moved_to": str(aside), "cause": str(exc)},
        )
        return {}
    return data
