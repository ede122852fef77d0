"""Capped exponential backoff with jitter for reconnect loops.

A device task that loses its connection waits ``next_delay()`` seconds
before the next attempt and calls ``reset()`` once a request succeeds.
The nominal delay starts at ``initial_s`` and grows by ``factor`` up to
``max_s``. Jitter spreads the actual delay uniformly over
``nominal × (1 ± jitter)`` (still capped at ``max_s``), so gateways that
lost the same server do not reconnect in lockstep.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays for successive reconnect attempts.

    Args:
        initial_s: nominal delay before the first retry, in seconds.
        max_s: upper bound of every delay, in seconds.
        factor: growth of the nominal delay per attempt (1 or more).
        jitter: relative spread of each delay, from 0 (none) to 1.
        rng: source of randomness; a seeded ``random.Random`` makes the
            sequence reproducible in tests.

    Raises:
        ValueError: a parameter is outside the range given above.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not initial_s > 0:
            raise ValueError(f"initial_s must be > 0, found {initial_s!r}")
        if not max_s >= initial_s:
            raise ValueError(
                f"max_s must be >= initial_s ({initial_s!r}), found {max_s!r}"
            )
        if not factor >= 1:
            raise ValueError(f"factor must be >= 1, found {factor!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], found {jitter!r}")

        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Number of delays handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        """Return the delay before the next attempt and advance the sequence."""
        nominal = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1

        spread = nominal * self.jitter
        delay = nominal + self._rng.uniform(-spread, spread)
        return min(self.max_s, max(0.0, delay))

    def reset(self) -> None:
        """Start again from ``initial_s``, after a successful request."""
        self._attempt = 0
