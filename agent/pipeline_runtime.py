"""The running agent: outbox, health, MQTT, uplink, pipeline and status.

:class:`AgentRuntime` assembles the parts from a configuration, starts them
in an order that makes ``READY`` true (outbox open, device tasks started,
whether or not the devices respond), stops them in the reverse order with a
final outbox flush, and applies a reloaded configuration. ``cmagent run``
and ``cmagent demo`` both drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from agent.devices_runtime import DriverFactory
from agent.errors import ConfigError
from agent.health import HealthMonitor
from agent.logging_setup import register_secret
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.pipeline_analysis import iso_boundaries
from agent.settings import AgentSettingsModel, Settings
from agent.state import write_status
from drivers.base import Driver
from drivers.spec import DeviceSpec, OpcUaSpec

logger = logging.getLogger(__name__)

STATUS_INTERVAL_S: Final = 2.0
HEALTH_STATE_FILE: Final = "health.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    """A validated configuration and the device specs built from it."""

    settings: AgentSettingsModel
    specs: dict[str, DeviceSpec]
    path: Path | None


def load_config(
    path: Path | None, *, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Load and validate a configuration file and its device profiles, and
    create the state directory if it is missing.

    Raises:
        ConfigError: the file, a profile or a value is invalid, or the state
            directory cannot be created or written; ``problems`` lists every
            problem found.
    """
    from agent.profiles import build_device_specs
    from agent.settings import load_settings

    settings = load_settings(path, environ=environ)
    prepare_state_dir(settings, environ=environ)
    specs = build_device_specs(settings, path.parent if path else None)
    return LoadedConfig(settings=settings, specs=dict(specs), path=path)


def prepare_state_dir(
    settings: Settings, *, environ: Mapping[str, str] | None = None
) -> None:
    """Create ``gateway.state_dir`` if it is missing and check it is writable.

    Args:
        settings: The validated configuration.
        environ: Environment variables, to name the one that set the
            directory; None means ``os.environ``.

    Raises:
        ConfigError: the directory is a file, cannot be created or cannot
            be written; the problem names the file, line and key.
    """
    from agent.config_check import (
        STATE_DIR_KEY,
        setting_problem,
        state_dir_file_problem,
    )

    state_dir = state_dir_of(settings)
    message = state_dir_file_problem(state_dir)
    if message is None:
        message = _state_dir_access_problem(state_dir)
    if message is None:
        return
    problem = setting_problem(settings, STATE_DIR_KEY, message, environ=environ)
    where = settings.config_path or "the environment"
    raise ConfigError(f"invalid configuration in {where}: 1 problem", [str(problem)])


def _state_dir_access_problem(state_dir: Path) -> str | None:
    """Create ``state_dir`` if needed; return why the agent cannot use it."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return (
            f"cannot create the agent's state directory {state_dir}: "
            f"{exc.strerror}; create it for the service user or set "
            "gateway.state_dir to a directory that user can create"
        )
    if not os.access(state_dir, os.W_OK | os.X_OK):
        return (
            f"cannot write in the agent's state directory {state_dir}; give "
            "the service user write access or set gateway.state_dir to "
            "another directory"
        )
    return None


def default_driver_factory(spec: DeviceSpec) -> Driver:
    """Build the driver for a Modbus (TCP or RTU) or OPC UA device spec."""
    if isinstance(spec, OpcUaSpec):
        from drivers.opcua import OpcUaDriver

        return OpcUaDriver(spec)
    from drivers.modbus import ModbusDriver

    return ModbusDriver(spec)


def state_dir_of(settings: AgentSettingsModel) -> Path:
    return Path(settings.gateway.state_dir)


class AgentRuntime:
    """Everything ``cmagent run`` runs, for one configuration at a time.

    Args:
        config: the validated configuration.
        environ: where the uplink token and MQTT password are looked up.
        driver_factory: builds device drivers (tests may pass their own).
        beats: progress tracker for the systemd watchdog.
        on_reload_request: called on the event loop when an MQTT ``reload``
            command arrives.
    """

    def __init__(
        self,
        config: LoadedConfig,
        *,
        environ: Mapping[str, str] = os.environ,
        driver_factory: DriverFactory = default_driver_factory,
        beats: Any = None,
        on_reload_request: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._environ = environ
        self._factory = driver_factory
        self._beats = beats
        self._on_reload_request = on_reload_request
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.outbox: Outbox | None = None
        self.pipeline: Pipeline | None = None
        self.publisher: Any = None
        self.uplink: Any = None
        self.token_provider: Any = None

    @property
    def settings(self) -> AgentSettingsModel:
        return self.config.settings

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Open the outbox, connect MQTT and the uplink in the background,
        and start the device tasks.

        Raises:
            OutboxError: the outbox database cannot be opened.
            ConfigError: a secret (uplink token, MQTT or OPC UA password)
                or a TLS file is unusable.
        """
        self._event_loop = asyncio.get_running_loop()
        # Before anything opens, so an unusable password leaves nothing behind.
        self.config = self._with_device_passwords(self.config)
        settings = self.settings
        state_dir = state_dir_of(settings)
        state_dir.mkdir(parents=True, exist_ok=True)
        outbox_path = settings.store.path or state_dir / "outbox.db"
        self.outbox = await asyncio.to_thread(
            Outbox, outbox_path, max_bytes=settings.store.max_bytes
        )
        health = HealthMonitor(
            settings.health,
            settings.assets,
            state_path=state_dir / HEALTH_STATE_FILE,
            iso_boundaries=iso_boundaries,
        )
        self.publisher = self._start_mqtt()
        self.pipeline = Pipeline(
            settings,
            self.config.specs,
            outbox=self.outbox,
            health=health,
            driver_factory=self._factory,
            publisher=self.publisher,
            beats=self._beats,
        )
        await self.pipeline.start()
        self._start_uplink()
        self._tasks.append(asyncio.create_task(self._write_status_forever()))
        logger.info(
            "agent.started",
            extra={
                "devices": len(self.config.specs),
                "assets": len(settings.assets),
                "state_dir": str(state_dir),
            },
        )

    async def stop(self, flush_timeout_s: float = 10.0) -> None:
        """Stop acquiring, finish analysis in flight, flush the outbox to the
        API (up to ``flush_timeout_s``), then close everything."""
        if self.pipeline is not None:
            await self.pipeline.stop()
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.uplink is not None and flush_timeout_s > 0:
            # The delivery loop has ended, so this is the only writer left.
            try:
                await self.uplink.flush(flush_timeout_s)
            except Exception as exc:  # a failed flush must not block the stop
                logger.warning("agent.flush_failed", extra={"cause": str(exc)})
            finally:
                await self.uplink.close()
        await self._write_status(running=False)
        if self.publisher is not None:
            await asyncio.to_thread(self.publisher.stop)
        if self.outbox is not None:
            self.outbox.close()
        logger.info("agent.stopped")

    async def reload(self, config: LoadedConfig) -> list[str]:
        """Switch to a new configuration; return the restarted device ids.

        Devices whose settings did not change keep their connections. The
        uplink re-reads its token. When an OPC UA password source is
        unusable, the whole new configuration is rejected and the old one
        stays in use.
        """
        assert self.pipeline is not None
        try:
            config = self._with_device_passwords(config)
        except ConfigError as exc:
            logger.error("agent.reload_rejected", extra={"problem": str(exc)})
            return []
        self.config = config
        restarted = await self.pipeline.reload(config.settings, config.specs)
        if self.uplink is not None and self.uplink.reload_token():
            assert self.token_provider is not None
            register_secret(self.token_provider.load().get_secret_value())
        logger.info(
            "agent.reloaded",
            extra={"restarted": ",".join(restarted) or "none"},
        )
        return restarted

    def progress_summary(self) -> str:
        """Return a one-line summary for systemd's STATUS=."""
        if self.pipeline is None:
            return "starting"
        runners = self.pipeline.runners.values()
        up = sum(r.state.value == "connected" for r in runners)
        counters = self.pipeline.counters
        return (
            f"{up}/{len(runners)} devices connected, "
            f"{counters.waveforms_analysed} waveforms analysed, "
            f"{counters.measurements_produced} measurements"
        )

    # --- parts ----------------------------------------------------------------------

    def _start_mqtt(self) -> Any:
        settings = self.settings
        if not settings.mqtt.enabled:
            return None
        from agent.mqtt import MqttPublisher
        from agent.uplink.token import MQTT_CREDENTIAL, MQTT_ENV_VAR, load_secret

        secret = load_secret(
            MQTT_CREDENTIAL,
            MQTT_ENV_VAR,
            settings.mqtt.password_file,
            environ=self._environ,
        )
        password = None if secret is None else secret.value.get_secret_value()
        if password is not None:
            register_secret(password)
        publisher = MqttPublisher(
            settings.mqtt,
            settings.gateway.id,
            password=password,
            on_command=self._command_from_thread,
        )
        publisher.start()
        return publisher

    def _with_device_passwords(self, config: LoadedConfig) -> LoadedConfig:
        from agent.opcua_passwords import with_opcua_passwords

        specs = with_opcua_passwords(
            config.specs,
            config.settings,
            config_dir=config.path.parent if config.path else None,
            environ=self._environ,
        )
        return dataclasses.replace(config, specs=specs)

    def _start_uplink(self) -> None:
        settings = self.settings
        if not settings.uplink.enabled:
            return
        from agent.uplink.client import Uplink
        from agent.uplink.token import TokenProvider

        self.token_provider = TokenProvider(
            settings.uplink,
            self._environ,
            default_file=state_dir_of(settings) / "uplink-token",
        )
        try:
            register_secret(self.token_provider.load().get_secret_value())
        except ConfigError as exc:
            # The uplink reports the missing token itself and keeps waiting.
            logger.warning("agent.token_unavailable", extra={"cause": str(exc)})
        tags = {
            asset_id: asset.remote_tag or asset_id
            for asset_id, asset in settings.assets.items()
        }
        assert self.outbox is not None
        self.uplink = Uplink(settings.uplink, self.outbox, tags, self.token_provider)
        if self.pipeline is not None:
            self.pipeline.on_stored = self.uplink.notify_stored
        self._tasks.append(asyncio.create_task(self.uplink.run(self._stop)))

    def _command_from_thread(self, command: Any) -> None:
        # Called from paho's network thread: hop to the event loop.
        self._event_loop.call_soon_threadsafe(self._command, command)

    def _command(self, command: Any) -> None:
        name = getattr(command.name, "value", command.name)
        if name == "request-waveform" and self.pipeline is not None:
            found = self.pipeline.request_waveform(command.asset)
            logger.info(
                "agent.waveform_requested",
                extra={"asset": command.asset, "found": found},
            )
        elif name == "reload" and self._on_reload_request is not None:
            self._on_reload_request()

    # --- status ---------------------------------------------------------------------

    async def _write_status_forever(self) -> None:
        while not self._stop.is_set():
            await self._write_status(running=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), STATUS_INTERVAL_S)

    async def _write_status(self, *, running: bool) -> None:
        try:
            # Built on the event loop, which owns the pipeline's state;
            # only the file write goes to a thread.
            snapshot = self.snapshot(running)
            await asyncio.to_thread(write_status, state_dir_of(self.settings), snapshot)
        except (OSError, ValueError) as exc:
            logger.warning("agent.status_write_failed", extra={"cause": str(exc)})

    def snapshot(self, running: bool = True) -> dict[str, Any]:
        """Return the status snapshot (see :mod:`agent.state`)."""
        pipeline = self.pipeline
        devices = {}
        assets: dict[str, Any] = {}
        counters: dict[str, int] = {}
        if pipeline is not None:
            devices = {
                device_id: {
                    "state": runner.state.value,
                    "last_reading_at": _iso(runner.last_reading_at),
                    "last_error": runner.last_error,
                    "bad_points": runner.bad_points_status(),
                }
                for device_id, runner in pipeline.runners.items()
            }
            summary = pipeline.health.asset_summary()
            for asset, view in pipeline.assets.items():
                assets[asset] = {
                    **summary.get(asset, {}),
                    "values": dict(view.values),
                    "analysis": view.analysis,
                }
            counters = pipeline.counters.to_dict()
        return {
            "written_at": datetime.now(UTC).isoformat(),
            "pid": os.getpid(),
            "running": running,
            "gateway": self.settings.gateway.id,
            "devices": devices,
            "assets": assets,
            "outbox": self._outbox_status(),
            "uplink": self._uplink_status(),
            "mqtt": self._mqtt_status(),
            "counters": counters,
        }

    def _outbox_status(self) -> dict[str, Any] | None:
        if self.outbox is None:
            return None
        stats = self.outbox.stats()
        return {
            "depth": stats.depth,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "oldest_age_s": stats.oldest_age_s,
            "delivered": stats.delivered,
            "evicted": stats.evicted,
            "dead_lettered": stats.dead_lettered,
            "depth_by_kind": dict(stats.depth_by_kind),
        }

    def _uplink_status(self) -> dict[str, Any]:
        if self.uplink is None:
            return {"state": "disabled"}
        return {
            "state": getattr(self.uplink.state, "value", str(self.uplink.state)),
            "last_delivery": _iso(self.uplink.last_delivery),
            "delivered_count": self.uplink.delivered_count,
            "delivered_measurements": self.uplink.delivered_by_kind.get(
                "measurement", 0
            ),
        }

    def _mqtt_status(self) -> dict[str, Any]:
        if self.publisher is None:
            return {"state": "disabled"}
        counters = self.publisher.counters
        return {
            "state": self.publisher.state.value,
            "published": counters.published,
            "dropped": counters.dropped,
            "queued": counters.queued,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
