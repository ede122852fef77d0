from __future__ import annotations

import random

import pytest

from drivers.backoff import Backoff


class TestBackoff:
    def test_grows_by_factor_without_jitter(self) -> None:
        backoff = Backoff(initial_s=0.5, max_s=30.0, factor=2.0, jitter=0.0)
        delays = [backoff.next_delay() for _ in range(5)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]

    def test_caps_at_max(self) -> None:
        backoff = Backoff(initial_s=1.0, max_s=5.0, factor=3.0, jitter=0.0)
        delays = [backoff.next_delay() for _ in range(6)]
        assert delays == [1.0, 3.0, 5.0, 5.0, 5.0, 5.0]

    def test_jitter_stays_within_band_and_cap(self) -> None:
        backoff = Backoff(
            initial_s=1.0,
            max_s=4.0,
            factor=2.0,
            jitter=0.2,
            rng=random.Random(7),
        )
        nominals = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]
        for nominal in nominals:
            delay = backoff.next_delay()
            assert nominal * 0.8 <= delay <= min(4.0, nominal * 1.2)

    def test_jitter_varies_delays(self) -> None:
        backoff = Backoff(initial_s=10.0, max_s=10.0, jitter=0.5, rng=random.Random(1))
        delays = {backoff.next_delay() for _ in range(20)}
        assert len(delays) > 10

    def test_reset_starts_again(self) -> None:
        backoff = Backoff(initial_s=0.5, jitter=0.0)
        for _ in range(4):
            backoff.next_delay()
        backoff.reset()
        assert backoff.attempt == 0
        assert backoff.next_delay() == 0.5

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"initial_s": 0.0}, "initial_s"),
            ({"initial_s": 2.0, "max_s": 1.0}, "max_s"),
            ({"factor": 0.5}, "factor"),
            ({"jitter": 1.5}, "jitter"),
        ],
    )
    def test_rejects_invalid_parameters(
        self, kwargs: dict[str, float], name: str
    ) -> None:
        with pytest.raises(ValueError, match=name):
            Backoff(**kwargs)
