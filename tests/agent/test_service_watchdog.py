"""The watchdog against a real notify socket, as systemd would provide it.

The test binds the Unix datagram socket itself and sets ``NOTIFY_SOCKET``
and ``WATCHDOG_USEC`` the way systemd does for a ``Type=notify`` unit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import (
    ProgressTracker,
    SystemdNotifier,
    Watchdog,
    watchdog_interval_s,
)
from tests.agent.notify_listener import NotifyListener

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    notify_socket = NotifyListener(path=tmp_path / "notify")
    yield notify_socket
    notify_socket.close()


def systemd_environ(notify_socket: str, watchdog_usec: int) -> dict[str, str]:
    return {
        "NOTIFY_SOCKET": notify_socket,
        "WATCHDOG_USEC": str(watchdog_usec),
        "WATCHDOG_PID": str(os.getpid()),
    }


class CountingProgress:
    """A progress function that counts its calls, so a test can wait for
    the watchdog to have checked a given number of times."""

    def __init__(self, tracker: ProgressTracker, max_age_s: float) -> None:
        self.tracker = tracker
        self.max_age_s = max_age_s
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.tracker.all_alive(self.max_age_s)

    async def wait_calls(self, count: int, timeout_s: float = 10.0) -> None:
        target = self.calls + count
        deadline = time.monotonic() + timeout_s
        while self.calls < target:
            assert time.monotonic() < deadline, "watchdog stopped checking"
            await asyncio.sleep(0.01)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestWatchdog:
    async def test_ready_then_pings_at_half_interval(
        self, listener: NotifyListener
    ) -> None:
        # WatchdogSec=400ms gives a 200 ms ping interval, so a 2 s window
        # contains at most 11 pings (t = 0, 0.2, ..., 2.0); one more is
        # allowed for timer rounding. A loaded machine delays pings but
        # cannot add any, hence the wide lower bound.
        environ = systemd_environ(listener.environ_value, 400_000)
        interval_s = watchdog_interval_s(environ)
        assert interval_s == 0.2
        notifier = SystemdNotifier(environ)
        watchdog = Watchdog(notifier, interval_s=interval_s, progress=lambda: True)
        stop = asyncio.Event()

        notifier.ready()
        task = asyncio.create_task(watchdog.run(stop))
        await asyncio.sleep(2.0)
        stop.set()
        await task

        messages = listener.drain()
        assert messages[0] == "READY=1"
        pings = messages[1:]
        assert set(pings) == {"WATCHDOG=1"}
        assert 6 <= len(pings) <= 12
        assert watchdog.pings_sent == len(pings)

    async def test_pings_stop_while_loop_blocked(
        self, listener: NotifyListener, caplog: pytest.LogCaptureFixture
    ) -> None:
        environ = systemd_environ(listener.environ_value, 200_000)
        notifier = SystemdNotifier(environ)
        watchdog = Watchdog(notifier, interval_s=0.1, progress=lambda: True)
        stop = asyncio.Event()
        task = asyncio.create_task(watchdog.run(stop))
        await listener.collect(2)

        # Block the event loop for ten intervals, as a blocking call in a
        # coroutine would, and look for pings while it is blocked.
        with caplog.at_level(logging.WARNING, logger="agent.service"):
            listener.drain()
            during_block: list[str] = []
            for _ in range(10):
                time.sleep(0.1)
                during_block.extend(listener.drain())
            after_block = await listener.collect(2)
        stop.set()
        await task

        assert during_block == []
        assert after_block[:2] == ["WATCHDOG=1", "WATCHDOG=1"]
        assert "watchdog.loop_blocked" in caplog.text

    async def test_pings_stop_when_component_stalls(
        self, listener: NotifyListener, caplog: pytest.LogCaptureFixture
    ) -> None:
        clock = ManualClock()
        tracker = ProgressTracker(clock)
        tracker.register("pump-1")
        tracker.register("fan-2")
        progress = CountingProgress(tracker, max_age_s=5.0)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": listener.environ_value})
        watchdog = Watchdog(
            notifier,
            interval_s=0.05,
            progress=progress,
            stale=lambda: tracker.stale(5.0),
        )
        stop = asyncio.Event()

        with caplog.at_level(logging.INFO, logger="agent.service"):
            task = asyncio.create_task(watchdog.run(stop))
            await progress.wait_calls(3)
            alive = listener.drain()

            # fan-2 keeps polling; pump-1 has been silent for 6 s.
            clock.now += 6.0
            tracker.beat("fan-2")
            await progress.wait_calls(1)
            listener.drain()
            await progress.wait_calls(3)
            stalled = listener.drain()

            tracker.beat("pump-1")
            await progress.wait_calls(3)
            resumed = listener.drain()
            stop.set()
            await task

        assert len(alive) >= 3
        assert stalled == []
        assert len(resumed) >= 2
        stopped_lines = [
            r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
        ]
        assert len(stopped_lines) == 1
        assert "watchdog.pings_stopped stale=pump-1:" in stopped_lines[0]
        assert "fan-2" not in stopped_lines[0]
        assert "watchdog.pings_resumed" in caplog.text

    async def test_abstract_socket_pings(self) -> None:
        name = f"cmagent-test-{uuid.uuid4().hex}"
        abstract = NotifyListener(abstract=name)
        environ = systemd_environ(f"@{name}", 100_000)
        watchdog = Watchdog(
            SystemdNotifier(environ),
            interval_s=watchdog_interval_s(environ) or 0.0,
            progress=lambda: True,
        )
        stop = asyncio.Event()
        try:
            task = asyncio.create_task(watchdog.run(stop))
            pings = await abstract.collect(3)
            stop.set()
            await task
        finally:
            abstract.close()

        assert pings[:3] == ["WATCHDOG=1"] * 3

    @pytest.mark.parametrize("interval_s", [0.0, -1.0, float("nan")])
    def test_rejects_non_positive_interval(self, interval_s: float) -> None:
        with pytest.raises(ValueError, match="expected a positive number"):
            Watchdog(SystemdNotifier({}), interval_s=interval_s, progress=bool)


SERVICE_SCRIPT = textwrap.dedent(
    """
    import asyncio

    from agent.service import (
        SystemdNotifier, Watchdog, install_signal_handlers, watchdog_interval_s,
    )

    async def main() -> None:
        notifier = SystemdNotifier()
        stop = asyncio.Event()

        def reload() -> None:
            notifier.reloading()
            notifier.ready()

        install_signal_handlers(
            asyncio.get_running_loop(), on_term=stop.set, on_hup=reload
        )
        interval_s = watchdog_interval_s()
        assert interval_s is not None, "no watchdog in the environment"
        watchdog = Watchdog(notifier, interval_s=interval_s, progress=lambda: True)
        task = asyncio.create_task(watchdog.run(stop))
        notifier.ready("running")
        await stop.wait()
        notifier.stopping()
        await task

    asyncio.run(main())
    """
)


class TestServiceProcess:
    async def test_notify_lifecycle_in_child(
        self, listener: NotifyListener, tmp_path: Path
    ) -> None:
        # systemd sets WATCHDOG_PID to the main process; "exec" makes the
        # shell's own pid ($$) the pid of the Python process.
        script = tmp_path / "service.py"
        script.write_text(SERVICE_SCRIPT)
        environ = {
            **os.environ,
            "NOTIFY_SOCKET": listener.environ_value,
            "WATCHDOG_USEC": "200000",
            "PYTHONPATH": str(REPO),
        }
        child = subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                'WATCHDOG_PID=$$ exec "$0" "$1"',
                sys.executable,
                str(script),
            ],
            env=environ,
        )
        try:
            started = await listener.collect(3)
            child.send_signal(signal.SIGHUP)
            reloaded = await listener.collect(2)
            child.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(child.wait, 10.0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()

        listener.drain()
        messages = listener.received
        assert started[0] == "READY=1\nSTATUS=running"
        assert "WATCHDOG=1" in started[1:]
        assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in reloaded)
        reload_index = next(
            i for i, m in enumerate(messages) if m.startswith("RELOADING=1")
        )
        assert "READY=1" in messages[reload_index + 1 :]
        assert messages[-1] == "STOPPING=1"
        assert status == 0
