"""Fixtures of the fault-injection suite: a plant on loopback and the real agent.

:class:`FaultPlant` starts the Modbus and OPC UA simulators, the sandbox
integration API and a real Mosquitto on free loopback ports, in the test's
event loop, writes a configuration file, and runs the agent as a separate
process (``python -m agent run --config ...``) that the tests stop, kill and
signal like a service manager would.

Counting what the agent produced does not rely on the agent's own counters:
before the agent first starts, the test creates the outbox database and adds
an ``AFTER INSERT`` trigger that copies every measurement row into an audit
table. The copy commits in the same transaction as the row, so the audit
table lists exactly the measurements the agent ever committed, even across
SIGKILL, eviction and delivery (which delete the original rows).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.demo_config import DEMO_ASSETS, demo_config_text
from agent.outbox import Outbox
from agent.uplink.sandbox import SandboxApi
from agent.uplink.token import write_secret_file
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.opcua_server import OpcUaSimulator
from tests.mosquitto import MosquittoBroker

REPO = Path(__file__).resolve().parents[2]

MeasurementKey = tuple[str, str, str]
"""A measurement's identity in the integration API: asset, name, timestamp."""

_AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS audit_measurements (
    item_id INTEGER PRIMARY KEY,
    payload TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_measurement_insert AFTER INSERT ON items
WHEN NEW.kind = 'measurement'
BEGIN
    INSERT INTO audit_measurements (item_id, payload)
        VALUES (NEW.id, NEW.payload);
END;
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: fault-injection runs of the real agent process"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Tally:
    """What the agent committed to its outbox against what the API stored."""

    produced: Counter[MeasurementKey]
    stored: Counter[MeasurementKey]
    pending: int
    evicted: int
    dead_lettered: int

    @property
    def lost(self) -> int:
        """Produced measurements neither stored nor still waiting."""
        return len(set(self.produced) - set(self.stored)) - self.pending

    @property
    def duplicated(self) -> int:
        """Extra copies of a measurement, in the outbox or in the API."""
        extra_produced = sum(n - 1 for n in self.produced.values())
        extra_stored = sum(n - 1 for n in self.stored.values())
        return extra_produced + extra_stored

    @property
    def unexpected(self) -> int:
        """Stored measurements the outbox never held."""
        return len(set(self.stored) - set(self.produced))

    def row(self) -> dict[str, int]:
        return {
            "produced": len(self.produced),
            "stored": len(self.stored),
            "pending": self.pending,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "evicted": self.evicted,
            "dead_lettered": self.dead_lettered,
        }


class AgentProcess:
    """The agent as a child process, with its log in a file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        env = {key: value for key, value in os.environ.items() if key[:8] != "CMAGENT_"}
        env["PYTHONPATH"] = str(REPO)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent",
                    "run",
                    "--config",
                    str(self.config_path),
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def kill(self) -> int:
        """Send SIGKILL and return the exit status."""
        self.send(signal.SIGKILL)
        return await self.wait(10.0)

    async def stop(self, timeout_s: float = 30.0) -> int:
        """Send SIGTERM (the agent flushes its outbox) and return the exit status."""
        if not self.running:
            return self.process.returncode if self.process else 0
        self.send(signal.SIGTERM)
        return await self.wait(timeout_s)

    async def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"agent did not exit within {timeout_s} s; log tail:\n"
                    + self.log_tail()
                )
            await asyncio.sleep(0.05)
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class FaultPlant:
    """The simulated plant, the sandbox API, a broker and the agent process.

    Args:
        state_dir: an empty directory for every file of the run.
        broker: a running Mosquitto.
    """

    def __init__(self, state_dir: Path, broker: MosquittoBroker) -> None:
        self.state_dir = state_dir
        self.broker = broker
        self.token = secrets.token_urlsafe(32)
        self.token_file = state_dir / "uplink-token"
        self.config_path = state_dir / "agent.toml"
        self.outbox_path = state_dir / "outbox.db"
        self.modbus = ModbusSimulator("127.0.0.1", 0)
        self.opcua = OpcUaSimulator("127.0.0.1", 0)
        self.sandbox = SandboxApi(
            state_dir / "sandbox.db", tokens=self.token, seed_assets=5
        )
        self.asset_of_remote: dict[str, str] = {}
        self.agent = AgentProcess(self.config_path, state_dir / "agent.log")
        self.audit = True

    async def start_services(self) -> None:
        await self.modbus.start()
        await self.opcua.start()
        write_secret_file(self.token_file, self.token)
        tags = [item.tag for item in DEMO_ASSETS] + [SPARE_TAG]
        assets = [item.asset for item in DEMO_ASSETS] + [SPARE_ASSET]
        ids = self.sandbox.add_assets(tags)
        self.asset_of_remote = dict(zip(ids, assets, strict=True))
        await self.sandbox.start("127.0.0.1", 0)

    async def stop_services(self) -> None:
        if self.agent.running:
            self.agent.send(signal.SIGKILL)
            await self.agent.wait(10.0)
        await self.sandbox.stop()
        await self.opcua.stop()
        await self.modbus.stop()

    def write_config(
        self,
        *,
        modbus_port: int | None = None,
        max_bytes: int | None = None,
        extra: str = "",
        waveform_interval_s: float = 3.0,
        outbox_path: Path | None = None,
    ) -> None:
        """Write the agent's configuration: the demo plant plus ``extra``."""
        text = demo_config_text(
            state_dir=self.state_dir,
            modbus_port=modbus_port or self.modbus.port,
            opcua_endpoint=self.opcua.endpoint,
            mqtt_port=self.broker.port,
            api_base_url=self.sandbox.base_url,
            token_file=self.token_file,
            waveform_interval_s=waveform_interval_s,
            warmup_count=3,
        )
        text = text.replace('level = "INFO"', 'level = "INFO"\nformat = "text"', 1)
        if max_bytes is not None:
            text = text.replace("[store]\n", f"[store]\nmax_bytes = {max_bytes}\n", 1)
        if outbox_path is not None:
            default = f'path = "{self.outbox_path}"'
            text = text.replace(default, f'path = "{outbox_path}"', 1)
            self.outbox_path = outbox_path
        self.config_path.write_text(text + extra)

    def install_audit(self) -> None:
        """Create the outbox database with the audit trigger in it."""
        Outbox(self.outbox_path, max_bytes=1 << 30).close()
        with sqlite3.connect(self.outbox_path) as conn:
            conn.executescript(_AUDIT_SQL)
        conn.close()

    async def start_agent(self) -> None:
        """Start the agent and wait until it wrote its first status snapshot."""
        if self.audit and not self.outbox_path.exists():
            self.install_audit()
        started = time.monotonic()
        self.agent.start()
        await self.wait_for(
            lambda: (self.status() or {}).get("pid") == self.agent.process.pid,  # type: ignore[union-attr]
            30.0,
            "the agent's first status snapshot",
        )
        self.start_s = time.monotonic() - started

    # --- reading the outcome ------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def produced(self) -> Counter[MeasurementKey]:
        """Measurements the agent committed to its outbox, from the audit table."""
        with _read_only(self.outbox_path) as conn:
            rows = conn.execute("SELECT payload FROM audit_measurements").fetchall()
        keys: Counter[MeasurementKey] = Counter()
        for (payload,) in rows:
            item = json.loads(payload)
            keys[(item["asset"], item["name"], item["timestamp"])] += 1
        return keys

    def outbox_counts(self) -> dict[str, int]:
        """Measurements still queued and the outbox's own counters."""
        with _read_only(self.outbox_path) as conn:
            pending = conn.execute(
                "SELECT count(*) FROM items WHERE kind = 'measurement'"
            ).fetchone()[0]
            counters = dict(conn.execute("SELECT name, value FROM counters"))
        return {"pending": pending, **counters}

    def stored(self) -> Counter[MeasurementKey]:
        """Measurements the sandbox API stored, read from its database."""
        keys: Counter[MeasurementKey] = Counter()
        cursor = 0
        while True:
            page, last = self.sandbox.store.measurement_page(None, cursor, 1000)
            for row in page:
                asset = self.asset_of_remote.get(row["asset_id"], row["asset_id"])
                keys[(asset, row["name"], row["timestamp"])] += 1
            if last is None:
                return keys
            cursor = last

    def stored_count(self, asset: str | None = None) -> int:
        stored = self.stored()
        if asset is None:
            return len(stored)
        return sum(1 for key in stored if key[0] == asset)

    def tally(self) -> Tally:
        counts = self.outbox_counts()
        return Tally(
            produced=self.produced(),
            stored=self.stored(),
            pending=counts["pending"],
            evicted=counts["evicted"],
            dead_lettered=counts["dead_lettered"],
        )

    async def wait_for(
        self, condition: Callable[[], bool], timeout_s: float, what: str
    ) -> float:
        """Poll ``condition`` until true; return the seconds it took."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; agent log"
                    f" tail:\n{self.agent.log_tail()}"
                )
            if self.agent.process is not None and not self.agent.running:
                raise AssertionError(
                    f"agent exited with {self.agent.process.returncode} while"
                    f" waiting for {what}:\n{self.agent.log_tail()}"
                )
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def wait_stored_growth(self, asset: str, timeout_s: float) -> float:
        """Wait until the API stores a new measurement of ``asset``."""
        before = self.stored_count(asset)
        return await self.wait_for(
            lambda: self.stored_count(asset) > before,
            timeout_s,
            f"a new measurement of {asset} in the API",
        )

    async def drain_and_stop(self, timeout_s: float = 40.0) -> Tally:
        """Wait until the outbox is empty, stop the agent, and tally."""
        await self.wait_for(
            lambda: self.outbox_counts()["pending"] == 0,
            timeout_s,
            "an empty outbox",
        )
        status = await self.agent.stop()
        assert status == 0, self.agent.log_tail()
        return self.tally()


SPARE_ASSET = "pump-spare"
SPARE_TAG = "DEMO-PUMP-05"


def spare_device_text(
    *, port: int, unit_id: int, timeout_s: float = 1.0, profile: str = "oil-modbus"
) -> str:
    """Return TOML for one more asset whose sensor is at ``port``/``unit_id``."""
    return f"""
[assets.{SPARE_ASSET}]
name = "Spare pump"
remote_tag = "{SPARE_TAG}"

[devices.{SPARE_ASSET}-sensor]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = {unit_id}
asset = "{SPARE_ASSET}"
profile = "{profile}"
poll_interval = "1s"
timeout = "{timeout_s}s"
connect_timeout = "{timeout_s}s"
"""


class _read_only:
    """A read-only connection to an SQLite file, closed on exit."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def __enter__(self) -> sqlite3.Connection:
        return self._conn

    def __exit__(self, *exc_info: object) -> None:
        self._conn.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
async def plant(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[FaultPlant]:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    running = FaultPlant(state_dir, broker)
    await running.start_services()
    try:
        yield running
    finally:
        await running.stop_services()


class TcpProxy:
    """A loopback TCP proxy whose forwarding can be switched off.

    While black-holed, connections stay open and every byte in either
    direction is read and discarded, as on a link whose far end vanished
    without a reset.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forwarding = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer),
            self._pipe(up_reader, writer),
            return_exceptions=True,
        )
        for each in (writer, up_writer):
            self._writers.discard(each)
            each.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(65536):
            if self.forwarding:
                writer.write(data)
                await writer.drain()
        writer.close()


class SilentDevice:
    """A listening socket that accepts connections and never answers."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass


REPORT_ENV = "CMAGENT_FAULTS_REPORT"


def record(
    scenario: str,
    tally: Tally,
    *,
    faults: int,
    recover_s: float | None,
    note: str = "",
) -> None:
    """Append one scenario's figures to the JSON-lines file named by
    ``CMAGENT_FAULTS_REPORT``, when set (the reliability document's table)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    row = {
        "scenario": scenario,
        "faults": faults,
        **tally.row(),
        "recover_s": None if recover_s is None else round(recover_s, 1),
        "note": note,
    }
    with open(path, "a", encoding="utf-8") as report:
        report.write(json.dumps(row) + "\n")
