"""Tests of the systemd notify protocol, watchdog interval, progress
tracking and signal handling, against real Unix datagram sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import (
    ProgressTracker,
    SystemdNotifier,
    install_signal_handlers,
    watchdog_interval_s,
)
from tests.agent.notify_listener import NotifyListener


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    notify_socket = NotifyListener(path=tmp_path / "notify")
    yield notify_socket
    notify_socket.close()


class TestSystemdNotifier:
    def test_ready_with_status(self, listener: NotifyListener) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": listener.environ_value})

        sent = notifier.ready("3 devices polled")

        assert sent is True
        assert listener.drain() == ["READY=1\nSTATUS=3 devices polled"]

    @pytest.mark.parametrize(
        ("method", "args", "expected"),
        [
            ("ready", (), "READY=1"),
            ("status", ("outbox 12 items",), "STATUS=outbox 12 items"),
            ("stopping", (), "STOPPING=1"),
            ("watchdog", (), "WATCHDOG=1"),
            ("errno", (13,), "ERRNO=13"),
            ("extend_timeout", (2.5,), "EXTEND_TIMEOUT_USEC=2500000"),
        ],
    )
    def test_message_format(
        self,
        listener: NotifyListener,
        method: str,
        args: tuple[object, ...],
        expected: str,
    ) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": listener.environ_value})

        getattr(notifier, method)(*args)

        assert listener.drain() == [expected]

    def test_status_folded_to_one_line(self, listener: NotifyListener) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": listener.environ_value})

        notifier.status("pump-1 offline\nfan-2  ok")

        assert listener.drain() == ["STATUS=pump-1 offline fan-2 ok"]

    def test_reloading_carries_monotonic_usec(self, listener: NotifyListener) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": listener.environ_value})

        before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

        [message] = listener.drain()
        first, second = message.split("\n")
        assert first == "RELOADING=1"
        key, value = second.split("=")
        assert key == "MONOTONIC_USEC"
        assert before_us <= int(value) <= after_us

    def test_abstract_socket(self) -> None:
        name = f"cmagent-test-{uuid.uuid4().hex}"
        abstract = NotifyListener(abstract=name)
        try:
            notifier = SystemdNotifier({"NOTIFY_SOCKET": f"@{name}"})

            notifier.watchdog()

            assert abstract.drain() == ["WATCHDOG=1"]
        finally:
            abstract.close()

    def test_noop_without_notify_socket(self) -> None:
        notifier = SystemdNotifier({})

        assert notifier.enabled is False
        assert notifier.ready() is False
        assert notifier.watchdog() is False

    def test_unsupported_address_disables(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="agent.service"):
            notifier = SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:4000"})

        assert notifier.enabled is False
        assert notifier.ready() is False
        assert "systemd.notify_socket_unsupported" in caplog.text
        assert "'vsock:2:4000'" in caplog.text

    def test_send_failure_logged_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = tmp_path / "not-yet-bound"
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})

        with caplog.at_level(logging.INFO, logger="agent.service"):
            results = [notifier.watchdog() for _ in range(3)]
            late_listener = NotifyListener(path=path)
            recovered = notifier.watchdog()
        late_listener.close()

        assert results == [False, False, False]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "systemd.notify_failed" in warnings[0].getMessage()
        assert str(path) in warnings[0].getMessage()
        assert recovered is True
        assert "systemd.notify_recovered" in caplog.text

    def test_full_queue_does_not_block(self, listener: NotifyListener) -> None:
        # The listener never reads, as when systemd is busy. A blocking send
        # would hang once the queue (net.unix.max_dgram_qlen) is full.
        notifier = SystemdNotifier({"NOTIFY_SOCKET": listener.environ_value})
        results: list[bool] = []

        sender = threading.Thread(
            target=lambda: results.extend(notifier.watchdog() for _ in range(2000)),
            daemon=True,
        )
        sender.start()
        sender.join(10.0)

        assert not sender.is_alive(), "send blocked on a full queue"
        assert results[0] is True
        assert results[-1] is False

    def test_close_then_send_reopens(self, listener: NotifyListener) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": listener.environ_value})

        notifier.watchdog()
        notifier.close()
        notifier.stopping()

        assert listener.drain() == ["WATCHDOG=1", "STOPPING=1"]


class TestWatchdogIntervalS:
    @pytest.mark.parametrize(
        ("environ", "expected"),
        [
            ({}, None),
            ({"WATCHDOG_USEC": "30000000"}, 15.0),
            ({"WATCHDOG_USEC": "500000"}, 0.25),
            ({"WATCHDOG_USEC": "0"}, None),
            ({"WATCHDOG_USEC": "-5"}, None),
            ({"WATCHDOG_USEC": "30s"}, None),
        ],
    )
    def test_half_of_watchdog_usec(
        self, environ: dict[str, str], expected: float | None
    ) -> None:
        assert watchdog_interval_s(environ) == expected

    def test_own_pid_accepted(self) -> None:
        environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}

        assert watchdog_interval_s(environ) == 1.0

    def test_other_pid_ignored(self) -> None:
        environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}

        assert watchdog_interval_s(environ) is None

    def test_invalid_value_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="agent.service"):
            watchdog_interval_s({"WATCHDOG_USEC": "soon"})

        assert "systemd.watchdog_usec_invalid" in caplog.text
        assert "'soon'" in caplog.text


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestProgressTracker:
    def test_register_counts_as_beat(self) -> None:
        clock = ManualClock()
        tracker = ProgressTracker(clock)

        tracker.register("pump-1")
        clock.now += 4.0

        assert tracker.all_alive(5.0) is True
        assert tracker.stale(3.0) == ["pump-1"]

    def test_beat_refreshes(self) -> None:
        clock = ManualClock()
        tracker = ProgressTracker(clock)
        tracker.register("pump-1")
        tracker.register("fan-2")

        clock.now += 10.0
        tracker.beat("fan-2")
        clock.now += 1.0

        assert tracker.stale(5.0) == ["pump-1"]
        assert tracker.all_alive(5.0) is False

    def test_unregister_removes_stale(self) -> None:
        clock = ManualClock()
        tracker = ProgressTracker(clock)
        tracker.register("pump-1")
        clock.now += 10.0

        tracker.unregister("pump-1")

        assert tracker.names == []
        assert tracker.all_alive(5.0) is True

    def test_beat_of_unknown_name_ignored(self) -> None:
        tracker = ProgressTracker(ManualClock())

        tracker.beat("removed-device")

        assert tracker.names == []

    def test_unregister_unknown_name_ignored(self) -> None:
        tracker = ProgressTracker(ManualClock())

        tracker.unregister("never-registered")

        assert tracker.names == []

    def test_empty_tracker_alive(self) -> None:
        assert ProgressTracker(ManualClock()).all_alive(0.0) is True

    def test_age_equal_to_limit_alive(self) -> None:
        clock = ManualClock()
        tracker = ProgressTracker(clock)
        tracker.register("pump-1")

        clock.now += 5.0

        assert tracker.all_alive(5.0) is True


class TestInstallSignalHandlers:
    @pytest.mark.parametrize(
        ("signum", "expected"),
        [
            (signal.SIGTERM, "term"),
            (signal.SIGINT, "term"),
            (signal.SIGHUP, "hup"),
        ],
    )
    async def test_signal_calls_callback(
        self, signum: signal.Signals, expected: str
    ) -> None:
        loop = asyncio.get_running_loop()
        calls: list[str] = []
        called = asyncio.Event()

        def record(name: str) -> None:
            calls.append(name)
            called.set()

        install_signal_handlers(
            loop, on_term=lambda: record("term"), on_hup=lambda: record("hup")
        )
        try:
            os.kill(os.getpid(), signum)
            await asyncio.wait_for(called.wait(), 5.0)
        finally:
            for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(handled)

        assert calls == [expected]
