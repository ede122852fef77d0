"""Integration with systemd: the notify protocol, the watchdog and signals.

The service unit is ``Type=notify`` with ``WatchdogSec=``. The agent sends
systemd a notification when it is ready, reloading and stopping, and it
pings the watchdog only while the event loop runs and every acquisition
task makes progress. A wedged event loop or a stalled device task
therefore ends in a restart by systemd. A long analysis in a worker
thread does not, because progress is counted from device polls, not from
analyses.

Typical use in ``cmagent run``::

    notifier = SystemdNotifier()
    tracker = ProgressTracker()
    interval_s = watchdog_interval_s()
    if interval_s is not None:
        watchdog = Watchdog(
            notifier,
            interval_s=interval_s,
            progress=lambda: tracker.all_alive(max_age_s),
            stale=lambda: tracker.stale(max_age_s),
        )
        asyncio.create_task(watchdog.run(stop))
    notifier.ready()

The module uses the standard library only. Every call is a no-op when the
process does not run under systemd (``$NOTIFY_SOCKET`` unset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

logger = logging.getLogger(__name__)

EXIT_CONFIG_ERROR: Final = 78
"""Exit status for an invalid configuration (``EX_CONFIG`` of sysexits.h).

The unit's ``RestartPreventExitStatus=78`` stops systemd from restarting a
service that cannot start until someone fixes its configuration.
"""


class SystemdNotifier:
    """Sends state changes to systemd over ``$NOTIFY_SOCKET``.

    The socket is a file-system path (``/run/systemd/notify``) or an abstract
    socket name written as ``@name``. When the variable is unset, every
    method does nothing and returns False. Sends never block: a failed send,
    including one to a receiver whose queue is full, returns False and is
    logged once at WARNING, never raised, because a lost notification must
    not stop the agent.

    Args:
        environ: the environment to read ``NOTIFY_SOCKET`` from.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._send_failed = False

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Send ``READY=1``, with a status line if one is given."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """Send a one-line status that ``systemctl status`` shows."""
        return self.notify(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        """Send ``RELOADING=1``. Call :meth:`ready` when the reload is done.

        ``MONOTONIC_USEC`` is included because ``Type=notify-reload``
        (systemd 253 and later) requires it; ``Type=notify`` ignores it.
        """
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_us}")

    def stopping(self) -> bool:
        """Send ``STOPPING=1`` at the start of a shutdown."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Send one watchdog ping, ``WATCHDOG=1``."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, timeout_s: float) -> bool:
        """Ask for ``timeout_s`` more seconds to finish starting or stopping.

        systemd applies it to the start, reload or stop in progress
        (``EXTEND_TIMEOUT_USEC``), for example while the outbox is flushed.
        """
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(timeout_s * 1_000_000)}")

    def errno(self, number: int) -> bool:
        """Send the ``errno`` value of a failure, shown by ``systemctl``."""
        return self.notify(f"ERRNO={int(number)}")

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram.

        Returns:
            True when the datagram was sent, False when notification is
            disabled or the send failed.
        """
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode()

        with self._lock:
            try:
                if self._socket is None:
                    # Non-blocking: when the receiver stops reading, its
                    # queue fills and a blocking send would stall the event
                    # loop (and the watchdog) until systemd reads again.
                    self._socket = socket.socket(
                        socket.AF_UNIX,
                        socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                    )
                self._socket.sendto(payload, self._address)
            except OSError as exc:
                self._log_send_failure(exc)
                return False

            if self._send_failed:
                self._send_failed = False
                logger.info("systemd.notify_recovered socket=%s", self._display)
        return True

    def close(self) -> None:
        """Close the socket; a later notification opens a new one."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    @property
    def _display(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address

    def _log_send_failure(self, exc: OSError) -> None:
        if self._send_failed:
            return
        self._send_failed = True
        logger.warning(
            "systemd.notify_failed socket=%s cause=%r; "
            "later failures are not logged until a send succeeds",
            self._display,
            exc,
        )


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Newer systemd versions can also pass a vsock address in virtual
    # machines ("vsock:CID:PORT"), which this module does not support.
    logger.warning(
        "systemd.notify_socket_unsupported value=%r: expected an absolute "
        "path or an abstract name starting with '@'; notifications are off",
        value,
    )
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """Return the watchdog ping interval, or None when there is no watchdog.

    systemd sets ``WATCHDOG_USEC`` to ``WatchdogSec=`` and ``WATCHDOG_PID``
    to the main process. The interval is half the timeout, so one late ping does
    not trigger a restart. A
    ``WATCHDOG_PID`` of another process (a child that inherited the
    environment) means the watchdog is not ours to ping.
    """
    timeout_text = environ.get("WATCHDOG_USEC", "")
    if not timeout_text:
        return None

    pid_text = environ.get("WATCHDOG_PID", "")
    if pid_text and pid_text != str(os.getpid()):
        return None

    try:
        timeout_us = int(timeout_text)
    except ValueError:
        timeout_us = 0
    if timeout_us <= 0:
        logger.warning(
            "systemd.watchdog_usec_invalid value=%r: expected a positive "
            "number of microseconds; the watchdog is not pinged",
            timeout_text,
        )
        return None
    return timeout_us / 2_000_000


class ProgressTracker:
    """Records when each named component last made progress.

    A device task calls :meth:`register` when it starts, :meth:`beat` after
    each completed poll (good or bad readings alike, since a dead device is
    handled, not wedged) and :meth:`unregister` when it ends. Registering
    counts as a beat, so a new component has ``max_age_s`` to make its
    first poll. A beat from a name that is not registered is ignored, so a
    task that finishes late cannot re-register itself.

    Methods may be called from any thread.

    Args:
        clock: monotonic time in seconds; tests may pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_beat: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Registered component names, sorted."""
        with self._lock:
            return sorted(self._last_beat)

    def register(self, name: str) -> None:
        """Start tracking ``name``, counting now as its last beat."""
        with self._lock:
            self._last_beat[name] = self._clock()

    def unregister(self, name: str) -> None:
        """Stop tracking ``name``, ignoring a name that is not registered."""
        with self._lock:
            self._last_beat.pop(name, None)

    def beat(self, name: str) -> None:
        """Record progress of a registered component."""
        now = self._clock()
        with self._lock:
            if name in self._last_beat:
                self._last_beat[name] = now

    def stale(self, max_age_s: float) -> list[str]:
        """Return the sorted names that did not beat within ``max_age_s``."""
        now = self._clock()
        with self._lock:
            return sorted(
                name for name, last in self._last_beat.items() if now - last > max_age_s
            )

    def all_alive(self, max_age_s: float) -> bool:
        """Return True when every registered component beat recently.

        With no component registered there is nothing to wait for, so the
        result is True.
        """
        return not self.stale(max_age_s)


class Watchdog:
    """Pings the systemd watchdog while the agent makes progress.

    Every ``interval_s`` the task calls ``progress()`` and sends
    ``WATCHDOG=1`` only when it returns True. The task runs on the event
    loop, so a blocked loop stops the pings without any check. When the
    pings stop, one WARNING names the stale components (from ``stale()``,
    if given). When they resume, one INFO line is logged.

    Args:
        notifier: where the pings go.
        interval_s: time between checks, usually from
            :func:`watchdog_interval_s`.
        progress: returns True while the agent makes progress.
        stale: returns the names of components without progress, for the
            log line only.

    Raises:
        ValueError: ``interval_s`` is not positive.
    """

    def __init__(
        self,
        notifier: SystemdNotifier,
        *,
        interval_s: float,
        progress: Callable[[], bool],
        stale: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(
                f"watchdog interval_s: expected a positive number of "
                f"seconds, found {interval_s!r}"
            )
        self._notifier = notifier
        self._interval_s = interval_s
        self._progress = progress
        self._stale = stale
        self._stopped_since: float | None = None
        self.pings_sent = 0
        """Number of pings sent so far."""

    async def run(self, stop: asyncio.Event) -> None:
        """Check and ping every interval until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        logger.info("watchdog.started interval_s=%.3f", self._interval_s)
        due = loop.time()
        while not stop.is_set():
            self._report_late_wakeup(loop.time() - due)
            self._check_and_ping(loop.time())

            due = loop.time() + self._interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
        logger.info("watchdog.stopped pings_sent=%d", self.pings_sent)

    def _check_and_ping(self, now: float) -> None:
        if self._progress():
            self._notifier.watchdog()
            self.pings_sent += 1
            if self._stopped_since is not None:
                logger.info(
                    "watchdog.pings_resumed paused_s=%.1f",
                    now - self._stopped_since,
                )
                self._stopped_since = None
            return

        if self._stopped_since is None:
            self._stopped_since = now
            stale = ", ".join(self._stale()) if self._stale else "unknown"
            logger.warning(
                "watchdog.pings_stopped stale=%s: no progress, systemd "
                "restarts the service unless progress resumes",
                stale or "none",
            )

    def _report_late_wakeup(self, lateness_s: float) -> None:
        # A wake-up later than one interval means the event loop was
        # blocked for that long and no ping could be sent meanwhile.
        if lateness_s > self._interval_s:
            logger.warning(
                "watchdog.loop_blocked late_s=%.1f interval_s=%.3f",
                lateness_s,
                self._interval_s,
            )


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop,
    *,
    on_term: Callable[[], None],
    on_hup: Callable[[], None],
) -> None:
    """Call ``on_term`` on SIGTERM or SIGINT and ``on_hup`` on SIGHUP.

    The callbacks run on the event loop, not in a signal handler, so they
    may touch asyncio objects (set an ``Event``, create a task). They must
    return quickly and tolerate being called again, because a second
    SIGTERM can arrive while the first one is being handled.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _log_and_call, signum, on_term)
    loop.add_signal_handler(signal.SIGHUP, _log_and_call, signal.SIGHUP, on_hup)


def _log_and_call(signum: signal.Signals, callback: Callable[[], None]) -> None:
    logger.info("service.signal_received signal=%s", signum.name)
    callback()
