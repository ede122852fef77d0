"""One acquisition task per device: connect, poll, capture, reconnect.

A :class:`DeviceRunner` owns one driver. It connects with a capped,
jittered backoff, reads the scalar points every ``poll_interval`` and the
waveforms every ``waveform_interval`` (or sooner on request), and hands the
results to a :class:`AcquisitionSink`. While the device is unreachable it
reports every point as bad (``comm_error``, value None) once per poll
interval and never repeats a last good value. A device that is connected
but responds to no request of a poll is polled again only after the same
backoff, because each unanswered request occupies a shared serial line
for its whole timeout. Each runner is its own task with its own
timeouts, so a failing device does not delay the others.

A point that reads bad while its device responds is logged once when it
turns bad or its cause changes, and once when it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from drivers.backoff import Backoff
from drivers.base import (
    Driver,
    Quality,
    QualityReason,
    QualityStatus,
    Reading,
    Waveform,
)
from drivers.errors import DriverConfigError, DriverError
from drivers.spec import DeviceSpec

logger = logging.getLogger(__name__)


_NO_ANSWER = frozenset({QualityReason.TIMEOUT, QualityReason.COMM_ERROR})
"""Reading quality reasons that mean the device sent nothing back."""


class DeviceState(enum.Enum):
    """Connection state of a device, as its acquisition task tracks it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DOWN = "down"
    STOPPED = "stopped"


class AcquisitionSink(Protocol):
    """The receiver of a device task's readings, waveforms and progress beats."""

    def readings(self, device_id: str, readings: Sequence[Reading]) -> None: ...

    def waveform(self, device_id: str, waveform: Waveform) -> None: ...

    def beat(self, device_id: str) -> None: ...


DriverFactory = Callable[[DeviceSpec], Driver]


@dataclass(frozen=True, slots=True, kw_only=True)
class BadPoint:
    """A point whose latest reading from a responding device was bad."""

    asset: str
    point: str
    cause: str
    """The quality detail of the reading, else its quality label."""


class BadPointLog:
    """The bad points of one device, logged when they change.

    A point is logged at WARNING when it turns bad and when the cause
    changes, and at INFO when it reads good or uncertain again. A point
    that stays bad for the same cause logs nothing more.
    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._bad: dict[str, BadPoint] = {}
        self._keys: dict[str, tuple[QualityReason | None, str]] = {}
        self._since: dict[str, float] = {}

    @property
    def points(self) -> list[BadPoint]:
        """The bad points, in the order they turned bad."""
        return list(self._bad.values())

    def update(self, readings: Iterable[Reading]) -> None:
        """Record the quality of each reading of a poll the device responded to."""
        for reading in readings:
            if reading.quality.status is QualityStatus.BAD:
                self._note_bad(reading)
            elif reading.point in self._bad:
                self._note_recovered(reading)

    def _note_bad(self, reading: Reading) -> None:
        quality = reading.quality
        key = _cause_key(quality)
        if self._keys.get(reading.point) == key:
            return
        cause = quality.detail or quality.label()
        self._keys[reading.point] = key
        self._bad[reading.point] = BadPoint(
            asset=reading.asset, point=reading.point, cause=cause
        )
        self._since.setdefault(reading.point, time.monotonic())
        logger.warning(
            "device.point_bad",
            extra={
                "device": self.device_id,
                "asset": reading.asset,
                "point": reading.point,
                "quality": quality.label(),
                "cause": cause,
            },
        )

    def _note_recovered(self, reading: Reading) -> None:
        del self._bad[reading.point], self._keys[reading.point]
        since = self._since.pop(reading.point)
        logger.info(
            "device.point_recovered",
            extra={
                "device": self.device_id,
                "asset": reading.asset,
                "point": reading.point,
                "bad_for_s": round(time.monotonic() - since, 1),
            },
        )


def _cause_key(quality: Quality) -> tuple[QualityReason | None, str]:
    """Return what must change for a bad point to be logged again."""
    # An out-of-range detail contains the value read, which changes from
    # poll to poll while the point stays out of range.
    if quality.reason is QualityReason.OUT_OF_RANGE:
        return quality.reason, ""
    return quality.reason, quality.detail


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """How often a device is polled and captured, in seconds."""

    poll_interval_s: float
    waveform_interval_s: float
    backoff_initial_s: float = 0.5
    # Once a device listens again, the next connect attempt comes at most
    # this long later. That keeps its first good reading within 10 s, with
    # 2 s left for the connect and the first poll (checked by TestReconnect
    # in tests/drivers/test_modbus.py).
    backoff_max_s: float = 8.0


class DeviceRunner:
    """Acquisition loop of one device.

    Args:
        spec: the device, its points and waveforms.
        schedule: poll and capture intervals.
        driver_factory: builds the driver for ``spec``.
        sink: receives readings, waveforms and progress beats.
    """

    still_down_interval_s: float = 300.0
    """Time between ``device.still_down`` summaries of a device that stays
    down for one cause."""

    def __init__(
        self,
        spec: DeviceSpec,
        schedule: Schedule,
        driver_factory: DriverFactory,
        sink: AcquisitionSink,
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self.device_id = spec.device_id
        self.state = DeviceState.CONNECTING
        self.last_reading_at: datetime | None = None
        self.last_error: str | None = None
        self.down_since: float | None = None
        self._factory = driver_factory
        self._sink = sink
        self._backoff = Backoff(schedule.backoff_initial_s, schedule.backoff_max_s)
        self._waveform_requested = asyncio.Event()
        self._next_capture = 0.0
        self._defect_logged = False
        self._answered_once = False
        self._down_logged_at = 0.0
        self._bad_points = BadPointLog(spec.device_id)

    @property
    def bad_points(self) -> list[BadPoint]:
        """The points that read bad in the latest polls the device responded to."""
        return self._bad_points.points

    def bad_points_status(self) -> dict[str, object]:
        """Return the bad points as the status snapshot shows them.

        The result has ``count`` and ``first``, the point that turned bad
        first (``asset``, ``point`` and ``cause``), or None.
        """
        points = self._bad_points.points
        first = dataclasses.asdict(points[0]) if points else None
        return {"count": len(points), "first": first}

    def request_waveform(self) -> None:
        """Capture the waveforms at the next poll instead of waiting."""
        self._waveform_requested.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire until ``stop`` is set, reconnecting as needed."""
        driver = self._factory(self.spec)
        try:
            while not stop.is_set():
                if await self._connect(driver, stop):
                    await self._poll_until_failure(driver, stop)
        except DriverConfigError as exc:
            self.state = DeviceState.DOWN
            self.last_error = str(exc)
            logger.error(
                "device.config_invalid",
                extra={"device": self.device_id, "cause": str(exc)},
            )
        finally:
            with contextlib.suppress(DriverError, OSError):
                await driver.close()
            self.state = DeviceState.STOPPED

    async def _connect(self, driver: Driver, stop: asyncio.Event) -> bool:
        try:
            await driver.connect()
        except DriverConfigError:
            raise
        except DriverError as exc:
            self._mark_down(exc)
            await self._wait_down(stop, self._backoff.next_delay())
            return False
        return True

    def _mark_up(self) -> None:
        """Record the first poll with a response after a connect or silent poll.

        A transport connection alone proves little: a device that accepts
        TCP and never answers must stay down, with its downtime counted
        from its first failure, until a poll is answered.
        """
        if self.down_since is None:
            logger.info("device.connected", extra={"device": self.device_id})
        else:
            down_s = round(time.monotonic() - self.down_since, 1)
            if self._answered_once:
                event, fields = "device.reconnected", {"downtime_s": down_s}
            else:
                # Never up before: the time is how long start-up waited.
                event, fields = "device.connected", {"after_s": down_s}
            logger.info(event, extra={"device": self.device_id, **fields})
        self._answered_once = True
        self.state = DeviceState.CONNECTED
        self.down_since = None
        self.last_error = None

    async def _poll_until_failure(self, driver: Driver, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                answered = await self._poll_once(driver, started)
            except DriverConfigError:
                raise
            except DriverError as exc:
                self._mark_down(exc)
                with contextlib.suppress(DriverError, OSError):
                    await driver.close()
                await self._wait_down(stop, self._backoff.next_delay())
                return
            except Exception as exc:
                # A defect in the driver or downstream (a naive timestamp,
                # an unexpected vendor exception) must not end this task:
                # the traceback is logged once and the device reconnects.
                self._log_defect_once(exc)
                self._mark_down(exc)
                with contextlib.suppress(Exception):
                    await driver.close()
                await self._wait_down(stop, self._backoff.next_delay())
                return
            self._sink.beat(self.device_id)

            if not answered:
                # Every unanswered request occupies a shared serial line for
                # its timeout, so a silent unit waits out the backoff
                # before its next poll instead of starving its neighbours.
                await self._wait_down(stop, self._backoff.next_delay())
                continue
            self._backoff.reset()
            delay = self.schedule.poll_interval_s - (loop.time() - started)
            await self._wait(stop, max(0.0, delay), self._waveform_requested)

    async def _poll_once(self, driver: Driver, now: float) -> bool:
        """Poll the points, then capture the waveforms when they are due.

        Returns whether the device answered any request. A device that
        answered none is not asked for its waveforms, which stay due.
        """
        readings = await driver.read_points()
        answered = self._note_poll(readings)
        if readings:
            self._sink.readings(self.device_id, readings)
        if not answered:
            return False

        if self._waveform_requested.is_set() or now >= self._next_capture:
            self._waveform_requested.clear()
            self._next_capture = now + self.schedule.waveform_interval_s
            for waveform_spec in self.spec.waveforms:
                waveform = await driver.read_waveform(waveform_spec.name)
                self._sink.waveform(self.device_id, waveform)
        return True

    def _note_poll(self, readings: Sequence[Reading]) -> bool:
        """Update state, cause, last reading time and bad points from a poll.

        Returns whether the device answered: a poll without points, or one
        with a reading whose reason is not in ``_NO_ANSWER``. Only such
        readings advance the last reading time.
        """
        answered = not readings
        latest: datetime | None = None
        for reading in readings:
            if reading.quality.reason in _NO_ANSWER:
                continue
            answered = True
            # A naive timestamp is a driver defect the sink reports. It
            # cannot be compared with the others, so it never becomes the
            # latest.
            stamp = reading.timestamp
            if stamp.utcoffset() is None:
                continue
            if latest is None or stamp > latest:
                latest = stamp
        if latest is not None:
            self.last_reading_at = latest

        if not answered:
            self._mark_silent(readings)
            return False
        if self.state is not DeviceState.CONNECTED or self.last_error is not None:
            self._mark_up()
        self._bad_points.update(readings)
        return True

    def _mark_silent(self, readings: Sequence[Reading]) -> None:
        """Record a poll whose every reading timed out or failed to arrive."""
        cause = "no response to any request of the last poll"
        detail = readings[0].quality.detail if readings else ""
        if detail:
            cause = f"{cause}: {detail}"
        self._set_down("device.not_answering", cause)

    def _set_down(self, event: str, cause: str) -> None:
        """Mark the device down, logging ``event`` on a new state or cause.

        While the device stays down for the same cause, a summary
        ``device.still_down`` is logged every ``still_down_interval_s``.
        """
        now = time.monotonic()
        fields = {"device": self.device_id, "attempt": self._backoff.attempt + 1}
        if self.state is not DeviceState.DOWN or cause != self.last_error:
            logger.warning(event, extra={**fields, "cause": cause})
            self._down_logged_at = now
        elif now - self._down_logged_at >= self.still_down_interval_s:
            down_s = now - (self.down_since if self.down_since is not None else now)
            logger.warning(
                "device.still_down",
                extra={**fields, "down_for_s": round(down_s), "cause": cause},
            )
            self._down_logged_at = now
        if self.down_since is None:
            self.down_since = now
        self.state = DeviceState.DOWN
        self.last_error = cause

    def _log_defect_once(self, exc: Exception) -> None:
        if self._defect_logged:
            return
        self._defect_logged = True
        logger.error(
            "device.poll_failed",
            exc_info=exc,
            extra={"device": self.device_id, "cause": repr(exc)},
        )

    def _mark_down(self, exc: Exception) -> None:
        cause = str(exc)
        self._set_down("device.unreachable", cause)
        self._sink.readings(self.device_id, self._bad_readings(cause))
        # A device that is down still counts as progress: its task is alive
        # and retrying, which is all the watchdog needs to know.
        self._sink.beat(self.device_id)

    def _bad_readings(self, cause: str) -> list[Reading]:
        now = datetime.now(UTC)
        quality = Quality.bad(QualityReason.COMM_ERROR, cause[:200])
        return [
            Reading(
                asset=point.asset,
                point=point.name,
                timestamp=now,
                value=None,
                unit=point.unit,
                quality=quality,
                source=self.device_id,
            )
            for point in self.spec.points
        ]

    async def _wait(
        self, stop: asyncio.Event, delay_s: float, wake: asyncio.Event | None = None
    ) -> None:
        """Sleep ``delay_s`` unless ``stop`` (or ``wake``) is set first."""
        waiters = [asyncio.ensure_future(stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=delay_s)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _wait_down(self, stop: asyncio.Event, delay_s: float) -> None:
        """Wait out a backoff delay, reporting bad readings every poll
        interval meanwhile so live views show the outage as it lasts."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay_s
        while not stop.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await self._wait(stop, min(remaining, self.schedule.poll_interval_s))
            if not stop.is_set() and loop.time() < deadline:
                self._sink.readings(
                    self.device_id, self._bad_readings(self.last_error or "")
                )
                self._sink.beat(self.device_id)
