"""The acquisition-to-delivery pipeline.

::

    DeviceRunner tasks ──readings──► MQTT (live) + scalar batch ──► outbox
           │                                   └─► health (oil, thresholds)
           └──waveforms──► bounded queue ──► analysis thread ──► health
                                                       │
                                    outbox (indicators, requests) + MQTT

Scalar readings are published on MQTT at once and written to the outbox in
batches every ``SCALAR_FLUSH_S``. Waveforms wait in a bounded queue; when
it is full, the oldest waiting waveform is dropped and counted, so a slow
analysis never stalls acquisition. Analysis runs in one worker thread
(NumPy and SciPy release the GIL), health judgement and outbox writes
follow on the event loop and in short worker-thread transactions.

Measurements reach the outbox only with a finite value and a timestamp
later than the previous one of the same asset and name, because the
integration API rejects repeated or out-of-order timestamps. Readings
without a value (a device that is down) are live data only: MQTT carries
them with their bad quality.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from agent.devices_runtime import DeviceRunner, DriverFactory, Schedule
from agent.health import (
    BEARING_FAULT_INDICATOR,
    Assessment,
    FaultConfirmation,
    HealthMonitor,
    Severity,
)
from agent.outbox import Outbox, OutboxItem, Priority
from agent.pipeline_analysis import (
    SCALAR_HEALTH_POINTS,
    WaveformResult,
    analyse_waveform,
)
from agent.settings import AgentSettingsModel, AssetSettings
from drivers.base import QualityStatus, Reading, Waveform
from drivers.spec import DeviceSpec

logger = logging.getLogger(__name__)

SCALAR_FLUSH_S: Final = 0.5
ANALYSIS_QUEUE_SIZE: Final = 16
MAX_PENDING_ITEMS: Final = 100_000


class LivePublisher(Protocol):
    """The part of the MQTT publisher the pipeline uses."""

    def publish_reading(self, reading: Reading) -> None: ...

    def publish_health(self, asset: str, payload: Mapping[str, object]) -> None: ...

    def publish_alarm(self, asset: str, payload: Mapping[str, object]) -> None: ...


class Beats(Protocol):
    def register(self, name: str) -> None: ...

    def unregister(self, name: str) -> None: ...

    def beat(self, name: str) -> None: ...


@dataclass(slots=True, kw_only=True)
class PipelineCounters:
    """Running totals, reported in the status snapshot."""

    readings: int = 0
    readings_rejected: int = 0
    waveforms_received: int = 0
    waveforms_analysed: int = 0
    waveforms_dropped: int = 0
    waveforms_rejected: int = 0
    measurements_produced: int = 0
    measurements_skipped: int = 0
    maintenance_requests: int = 0
    outbox_errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True, kw_only=True)
class AssetView:
    """The latest results of one asset, for the status and the live view."""

    values: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] | None = None
    severity: str = "ok"
    score: float = 100.0
    episode_id: str | None = None


class Pipeline:
    """Runs the device tasks and everything downstream of them.

    Args:
        settings: the validated configuration.
        specs: device specs by device id, from ``build_device_specs``.
        outbox: the durable store the uplink drains.
        health: the health monitor (with its persisted state).
        driver_factory: builds a driver for a spec.
        publisher: the MQTT publisher, or None when MQTT is disabled.
        beats: progress tracker fed once per device poll, for the watchdog.
    """

    def __init__(
        self,
        settings: AgentSettingsModel,
        specs: Mapping[str, DeviceSpec],
        *,
        outbox: Outbox,
        health: HealthMonitor,
        driver_factory: DriverFactory,
        publisher: LivePublisher | None = None,
        beats: Beats | None = None,
        queue_size: int = ANALYSIS_QUEUE_SIZE,
    ) -> None:
        self.settings = settings
        self.specs = dict(specs)
        self.outbox = outbox
        self.health = health
        self.publisher = publisher
        self.counters = PipelineCounters()
        self.on_stored: Callable[[], None] | None = None
        """Called on the event loop after each batch reaches the outbox."""
        self.assets: dict[str, AssetView] = {}
        self.runners: dict[str, DeviceRunner] = {}
        self._factory = driver_factory
        self._beats = beats
        self._queue: asyncio.Queue[Waveform] = asyncio.Queue(maxsize=queue_size)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="analysis")
        self._pending: list[OutboxItem] = []
        self._last_ts: dict[tuple[str, str], datetime] = {}
        self._latest: dict[tuple[str, str], float] = {}
        self._rejected_devices: set[str] = set()
        self._fault_confirmations: dict[str, FaultConfirmation] = {}
        self._rejected_points: set[tuple[str, str]] = set()
        self._alarm_published: set[str] = set()
        self._failed_devices: set[str] = set()
        self._tasks: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._stop = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._busy = 0

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Start one task per enabled device, the analysis worker and the
        scalar flusher. Returns at once, whether or not devices respond."""
        for device_id, spec in self.specs.items():
            if self.settings.devices[device_id].enabled:
                self._start_device(device_id, spec)
        self._worker = asyncio.create_task(self._analyse_forever(), name="analysis")
        self._flusher = asyncio.create_task(self._flush_forever(), name="flusher")

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop acquiring, finish the analysis of queued waveforms (up to
        ``drain_timeout_s``) and write everything pending to the outbox."""
        await asyncio.gather(*(self._stop_device(d) for d in list(self._tasks)))
        try:
            await asyncio.wait_for(self._drained(), drain_timeout_s)
        except TimeoutError:
            logger.warning(
                "pipeline.drain_timed_out",
                extra={"waiting": self._queue.qsize(), "timeout_s": drain_timeout_s},
            )
        self._stop.set()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        # The flusher ends by itself once ``_stop`` is set. Cancelling it
        # could interrupt a write running in a worker thread, whose items
        # would then be lost when the caller closes the outbox.
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._flush()
        self._executor.shutdown(wait=True)

    async def reload(
        self, settings: AgentSettingsModel, specs: Mapping[str, DeviceSpec]
    ) -> list[str]:
        """Apply a new configuration; return the ids of restarted devices.

        Devices whose spec and schedule are unchanged keep their task and
        their connection.
        """
        old_settings, old_specs = self.settings, self.specs
        self.settings, self.specs = settings, dict(specs)
        self.health.reconfigure(settings.health, settings.assets)
        restarted: list[str] = []
        for device_id in list(self._tasks):
            same = (
                device_id in specs
                and specs[device_id] == old_specs.get(device_id)
                and settings.devices[device_id] == old_settings.devices[device_id]
            )
            if not same:
                await self._stop_device(device_id)
                restarted.append(device_id)
                if device_id not in specs:
                    del self.runners[device_id]
        for device_id, spec in self.specs.items():
            if device_id not in self._tasks and settings.devices[device_id].enabled:
                self._start_device(device_id, spec)
        return restarted

    def request_waveform(self, asset: str) -> bool:
        """Ask every device of ``asset`` for a capture now; False if none."""
        found = False
        for runner in self.runners.values():
            if any(w.asset == asset for w in runner.spec.waveforms):
                runner.request_waveform()
                found = True
        return found

    def _start_device(self, device_id: str, spec: DeviceSpec) -> None:
        device = self.settings.devices[device_id]
        schedule = Schedule(
            poll_interval_s=device.poll_interval,
            waveform_interval_s=device.waveform_interval,
        )
        runner = DeviceRunner(spec, schedule, self._factory, self)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop), name=f"device:{device_id}")
        self.runners[device_id] = runner
        self._tasks[device_id] = (task, stop)
        if self._beats is not None:
            self._beats.register(device_id)

    async def _stop_device(self, device_id: str) -> None:
        task, stop = self._tasks.pop(device_id)
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._beats is not None:
            self._beats.unregister(device_id)

    async def _drained(self) -> None:
        while self._queue.qsize() or self._busy:
            await asyncio.sleep(0.05)

    # --- acquisition sink ---------------------------------------------------------

    def beat(self, device_id: str) -> None:
        if self._beats is not None:
            self._beats.beat(device_id)

    def readings(self, device_id: str, readings: Sequence[Reading]) -> None:
        """Publish readings live, batch them for the outbox and judge the
        ones that are health indicators."""
        health_values: dict[str, dict[str, float]] = {}
        stamps: dict[str, datetime] = {}
        for reading in readings:
            self.counters.readings += 1
            if self.publisher is not None:
                try:
                    self.publisher.publish_reading(reading)
                except (ValueError, TypeError) as exc:
                    # An invalid topic level or a naive timestamp: the
                    # reading cannot go live, but the others still do.
                    self._reject_reading(device_id, reading, exc)
            value = _finite(reading.value)
            if value is None:
                # The status and the live view must not keep showing the
                # last good value of a point that now reads bad.
                view = self.assets.get(reading.asset)
                if view is not None:
                    view.values.pop(reading.point, None)
                continue
            if reading.timestamp.utcoffset() is None:
                continue
            self.assets.setdefault(reading.asset, AssetView()).values[reading.point] = (
                value
            )
            self._measure(
                reading.asset,
                reading.point,
                value,
                reading.unit,
                reading.timestamp,
                reading.quality.label(),
                Priority.INDICATOR,
            )
            if reading.quality.is_good:
                self._latest[(reading.asset, reading.point)] = value
                if self._judged(reading.asset, reading.point):
                    health_values.setdefault(reading.asset, {})[reading.point] = value
                    stamp = stamps.get(reading.asset, reading.timestamp)
                    stamps[reading.asset] = max(stamp, reading.timestamp)
        for asset, values in health_values.items():
            self._judge(asset, stamps[asset], values)

    def _reject_reading(self, device_id: str, reading: Reading, exc: Exception) -> None:
        self.counters.readings_rejected += 1
        key = (device_id, reading.point)
        if key not in self._rejected_points:
            self._rejected_points.add(key)
            logger.warning(
                "pipeline.reading_rejected",
                extra={
                    "device": device_id,
                    "asset": reading.asset,
                    "point": reading.point,
                    "cause": str(exc),
                },
            )

    def waveform(self, device_id: str, waveform: Waveform) -> None:
        """Queue a waveform for analysis, dropping the oldest when full.

        A waveform whose quality is bad is counted as rejected and not
        analysed, because its indicators would be judged as evidence.
        """
        self.counters.waveforms_received += 1
        if waveform.quality.status is QualityStatus.BAD:
            self._reject(waveform, ValueError(f"quality {waveform.quality.label()}"))
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.counters.waveforms_dropped += 1
            logger.warning(
                "pipeline.waveform_dropped",
                extra={"device": device_id, "dropped": self.counters.waveforms_dropped},
            )
        self._queue.put_nowait(waveform)

    def _judged(self, asset: str, point: str) -> bool:
        settings = self.settings.assets.get(asset)
        configured = settings is not None and point in settings.thresholds
        return configured or point in SCALAR_HEALTH_POINTS

    # --- analysis -------------------------------------------------------------------

    async def _analyse_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waveform = await self._queue.get()
            self._busy += 1
            try:
                asset = self.settings.assets.get(waveform.asset, AssetSettings())
                rpm = self._rpm(waveform, asset)
                result = await loop.run_in_executor(
                    self._executor, analyse_waveform, waveform, asset, rpm
                )
            except ValueError as exc:
                self._reject(waveform, exc)
                continue
            except Exception:
                # A defect in analysis must not end the worker: log it with
                # its traceback once per device and keep analysing.
                self.counters.waveforms_rejected += 1
                if waveform.source not in self._failed_devices:
                    self._failed_devices.add(waveform.source)
                    logger.exception(
                        "pipeline.analysis_failed",
                        extra={"device": waveform.source, "asset": waveform.asset},
                    )
                continue
            finally:
                self._busy -= 1
            self._rejected_devices.discard(waveform.source)
            self.counters.waveforms_analysed += 1
            self._record(waveform, result)

    def _rpm(self, waveform: Waveform, asset: AssetSettings) -> float | None:
        if asset.rpm is not None:
            return asset.rpm
        if asset.rpm_point is not None:
            return self._latest.get((waveform.asset, asset.rpm_point))
        return waveform.rpm

    def _reject(self, waveform: Waveform, exc: ValueError) -> None:
        self.counters.waveforms_rejected += 1
        if waveform.source not in self._rejected_devices:
            self._rejected_devices.add(waveform.source)
            logger.warning(
                "pipeline.waveform_rejected",
                extra={
                    "device": waveform.source,
                    "asset": waveform.asset,
                    "point": waveform.point,
                    "cause": str(exc),
                },
            )

    def _confirm_fault(self, asset: str, result: WaveformResult) -> WaveformResult:
        """Re-rate the bearing fault with the diagnoses of earlier waveforms."""
        if BEARING_FAULT_INDICATOR not in result.health_values:
            return result
        lines = result.summary.get("envelope_lines") or []
        value = self._fault_confirmations.setdefault(asset, FaultConfirmation()).update(
            str(result.summary.get("diagnosis")),
            float(result.summary.get("confidence") or 0.0),
            max((line["snr_db"] for line in lines), default=None),
        )
        return dataclasses.replace(
            result,
            measurements={**result.measurements, BEARING_FAULT_INDICATOR: (value, "")},
            health_values={**result.health_values, BEARING_FAULT_INDICATOR: value},
        )

    def _record(self, waveform: Waveform, result: WaveformResult) -> None:
        result = self._confirm_fault(waveform.asset, result)
        view = self.assets.setdefault(waveform.asset, AssetView())
        view.analysis = result.summary
        for name, (value, unit) in result.measurements.items():
            view.values[name] = value
            self._measure(
                waveform.asset,
                name,
                value,
                unit,
                waveform.timestamp,
                waveform.quality.label(),
                Priority.INDICATOR,
            )
        assessment = self._judge(
            waveform.asset, waveform.timestamp, result.health_values
        )
        if self.publisher is not None:
            self.publisher.publish_health(
                waveform.asset,
                {
                    "ts": waveform.timestamp.isoformat(),
                    **result.summary,
                    "severity": assessment.severity.label,
                    "score": round(assessment.score, 1),
                },
            )

    # --- health and outbox ------------------------------------------------------------

    def _judge(
        self, asset: str, timestamp: datetime, values: Mapping[str, float]
    ) -> Assessment:
        view = self.assets.setdefault(asset, AssetView())
        before = view.severity
        assessment = self.health.assess(asset, timestamp, values)
        view.severity = assessment.severity.label
        view.score = round(assessment.score, 1)
        view.episode_id = assessment.episode_id

        # One priority for every point of a series: the outbox delivers by
        # priority first, and an earlier point sent after a later one is
        # rejected by the API as not increasing, so it would be lost.
        priority = Priority.INDICATOR
        self._measure(
            asset, "health_score", assessment.score, "%", timestamp, "good", priority
        )
        self._measure(
            asset,
            "health_severity",
            float(assessment.severity),
            "",
            timestamp,
            "good",
            priority,
        )
        request = assessment.maintenance_request
        if request is not None:
            self.counters.maintenance_requests += 1
            self._pending.append(
                OutboxItem(
                    kind="maintenance_request",
                    priority=Priority.ALARM,
                    payload={
                        "asset": request.asset,
                        "priority": request.priority,
                        "title": request.title,
                        "description": request.description,
                        "source_event_id": request.episode_id,
                    },
                )
            )
        # The alarm topic is retained: publish the state once per asset,
        # then on every event or change of severity.
        first = asset not in self._alarm_published
        changed = assessment.events or before != view.severity
        if self.publisher is not None and (first or changed):
            self._publish_alarm(assessment)
        return assessment

    def _publish_alarm(self, assessment: Assessment) -> None:
        assert self.publisher is not None
        self._alarm_published.add(assessment.asset)
        self.publisher.publish_alarm(
            assessment.asset,
            {
                "ts": assessment.timestamp.isoformat(),
                "severity": assessment.severity.label,
                "score": round(assessment.score, 1),
                "episode_id": assessment.episode_id,
                "active": [
                    {
                        "indicator": s.indicator,
                        "severity": s.severity.label,
                        "event_id": s.event_id,
                        "value": s.value,
                    }
                    for s in assessment.indicators.values()
                    if s.severity is not Severity.OK
                ],
                "events": [e.to_dict() for e in assessment.events],
            },
        )

    def _measure(
        self,
        asset: str,
        name: str,
        value: float,
        unit: str,
        timestamp: datetime,
        quality: str,
        priority: Priority,
    ) -> None:
        key = (asset, name)
        last = self._last_ts.get(key)
        if last is not None and timestamp <= last:
            self.counters.measurements_skipped += 1
            return
        self._last_ts[key] = timestamp
        self.counters.measurements_produced += 1
        self._pending.append(
            OutboxItem(
                kind="measurement",
                priority=priority,
                payload={
                    "asset": asset,
                    "name": name,
                    "value": value,
                    "unit": unit,
                    "timestamp": timestamp.isoformat(),
                    "quality": quality.split("/")[0],
                },
            )
        )

    async def _flush_forever(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SCALAR_FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        items, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self.outbox.put_many, items)
            if self.on_stored is not None:
                self.on_stored()
        except Exception as exc:  # OutboxError, and nothing may stop the loop
            self.counters.outbox_errors += 1
            # Keep the items for the next flush, but never more than a cap,
            # because a disk that stays full must not exhaust memory.
            self._pending = (items + self._pending)[-MAX_PENDING_ITEMS:]
            logger.error(
                "pipeline.outbox_write_failed",
                extra={"items": len(items), "cause": str(exc)},
            )


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
