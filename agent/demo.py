"""``cmagent demo``: a simulated plant, the agent and its services, together.

:class:`DemoPlant` starts the Modbus simulator (units 1, 2, 3 and 10), the
OPC UA simulator (``Motor4``), the sandbox integration API with the demo's
asset tags and a fresh token (written 0600 into the state directory and
handed to the agent as its token file), an MQTT broker (Mosquitto when
installed, else an embedded one, unless an existing broker is given), a
real MQTT subscriber that counts messages, and the agent itself, in this
process, with a generated configuration. Every part listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agent.broker import BrokerChoice
from agent.demo_config import DEMO_ASSETS, GATEWAY_ID, demo_config_text
from agent.demo_mqtt import MqttCounter
from agent.pipeline_runtime import AgentRuntime, load_config

logger = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class Delivered:
    """Measurements and requests the sandbox API stored, read back over HTTP."""

    measurements: list[dict[str, Any]] = field(default_factory=list)
    maintenance_requests: list[dict[str, Any]] = field(default_factory=list)


class DemoPlant:
    """The demo's parts, started and stopped in order.

    Args:
        state_dir: an empty directory for the agent's and sandbox's files.
        mqtt: host and port of an existing broker; None starts one.
        broker: which broker to start when ``mqtt`` is None: ``auto``
            (Mosquitto when installed, else the embedded amqtt broker),
            ``mosquitto`` or ``amqtt``.
        waveform_interval_s: time between waveform captures per sensor.
        warmup_count: values a baseline learns from.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        mqtt: tuple[str, int] | None = None,
        broker: BrokerChoice = "auto",
        waveform_interval_s: float = 5.0,
        warmup_count: int = 4,
    ) -> None:
        self.state_dir = state_dir
        self._mqtt_address = mqtt
        self._broker_choice = broker
        self._waveform_interval_s = waveform_interval_s
        self._warmup_count = warmup_count
        self._token = secrets.token_urlsafe(32)
        self.remote_ids: dict[str, str] = {}
        self.modbus: Any = None
        self.opcua: Any = None
        self.sandbox: Any = None
        self.broker: Any = None
        self.counter: MqttCounter | None = None
        self.runtime: AgentRuntime | None = None
        self.config_path = state_dir / "agent.toml"

    async def start(self) -> None:
        """Start every part; the agent last."""
        from drivers.sim.modbus_server import ModbusSimulator
        from drivers.sim.opcua_server import OpcUaSimulator

        self.modbus = ModbusSimulator("127.0.0.1", 0)
        await self.modbus.start()
        self.opcua = OpcUaSimulator("127.0.0.1", 0)
        await self.opcua.start()
        await self._start_sandbox()
        host, port = await self._start_broker()
        self.counter = MqttCounter(host, port, gateway=GATEWAY_ID)
        # The counter blocks until its subscription is acknowledged, and the
        # embedded broker runs in this event loop, so it must not block it.
        await asyncio.to_thread(self.counter.start)

        self.config_path.write_text(
            demo_config_text(
                state_dir=self.state_dir,
                modbus_port=self.modbus.port,
                opcua_endpoint=self.opcua.endpoint,
                mqtt_host=host,
                mqtt_port=port,
                api_base_url=self.sandbox.base_url,
                token_file=self.state_dir / "uplink-token",
                waveform_interval_s=self._waveform_interval_s,
                warmup_count=self._warmup_count,
            )
        )
        # The demo ignores CMAGENT_ variables of the calling shell, so it
        # always runs the same way.
        config = load_config(self.config_path, environ={})
        self.runtime = AgentRuntime(config, environ={})
        await self.runtime.start()

    async def _start_sandbox(self) -> None:
        from agent.uplink.sandbox import SandboxApi
        from agent.uplink.token import write_secret_file

        write_secret_file(self.state_dir / "uplink-token", self._token)
        self.sandbox = SandboxApi(
            self.state_dir / "sandbox.db",
            tokens=self._token,
            seed_assets=50,
        )
        tags = [item.tag for item in DEMO_ASSETS]
        ids = self.sandbox.add_assets(tags)
        self.remote_ids = {
            remote: item.asset for remote, item in zip(ids, DEMO_ASSETS, strict=True)
        }
        await self.sandbox.start("127.0.0.1", 0)

    async def _start_broker(self) -> tuple[str, int]:
        if self._mqtt_address is not None:
            return self._mqtt_address
        from agent.broker import start_broker

        self.broker = await start_broker("127.0.0.1", 0, prefer=self._broker_choice)
        return self.broker.host, self.broker.port

    async def stop(self, flush_timeout_s: float = 15.0) -> None:
        """Stop the agent (flushing its outbox), then everything else."""
        if self.runtime is not None:
            await self.runtime.stop(flush_timeout_s=flush_timeout_s)
        if self.counter is not None:
            await asyncio.to_thread(self.counter.stop)
        if self.broker is not None:
            await self.broker.stop()
        for part in (self.opcua, self.modbus):
            if part is not None:
                await part.stop()

    async def stop_services(self) -> None:
        """Stop the sandbox API, after its data has been read back."""
        if self.sandbox is not None:
            await self.sandbox.stop()

    async def read_back(self) -> Delivered:
        """Read every stored measurement and maintenance request over HTTP."""
        headers = {"Authorization": f"Bearer {self._token}"}
        base = self.sandbox.base_url
        delivered = Delivered()
        async with aiohttp.ClientSession(headers=headers) as session:
            delivered.measurements = await _all_pages(
                session, f"{base}/api/v1/measurements"
            )
            delivered.maintenance_requests = await _all_pages(
                session, f"{base}/api/v1/maintenance-requests"
            )
        for item in delivered.measurements:
            item["asset"] = self.remote_ids.get(item["asset_id"], item["asset_id"])
        return delivered

    def summary(self, delivered: Delivered) -> dict[str, Any]:
        """Return the figures ``--summary`` writes and the final table shows."""
        assert self.runtime is not None and self.runtime.pipeline is not None
        pipeline = self.runtime.pipeline
        counters = pipeline.counters
        health = pipeline.health.asset_summary()
        assets = {}
        for item in DEMO_ASSETS:
            view = pipeline.assets.get(item.asset)
            analysis = (view.analysis if view else None) or {}
            assets[item.asset] = {
                "expected": item.expected,
                "diagnosis": analysis.get("diagnosis"),
                "confidence": analysis.get("confidence"),
                "iso_zone": analysis.get("iso_zone"),
                "velocity_rms_mm_s": (analysis.get("values") or {}).get(
                    "velocity_rms_mm_s"
                ),
                "severity": health.get(item.asset, {}).get("severity", "ok"),
                "score": health.get(item.asset, {}).get("score"),
            }
        return {
            "waveforms_analysed": counters.waveforms_analysed,
            "waveforms_dropped": counters.waveforms_dropped,
            "measurements_produced": counters.measurements_produced,
            "measurements_delivered": len(delivered.measurements),
            "maintenance_requests": len(delivered.maintenance_requests),
            "mqtt_messages": self.counter.total if self.counter else 0,
            "mqtt_by_kind": self.counter.counts if self.counter else {},
            "assets": assets,
        }


async def _all_pages(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "500"}
        if cursor is not None:
            params["cursor"] = cursor
        async with session.get(url, params=params) as response:
            response.raise_for_status()
            page = await response.json()
        items.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items
