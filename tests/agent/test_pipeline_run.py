"""``cmagent run`` as a subprocess: readiness, SIGHUP, SIGTERM and exit codes.

The test owns the systemd notify socket (a Unix datagram socket), a Modbus
simulator and the sandbox API, all on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from agent.commands.status import read_outbox
from agent.state import read_status
from agent.uplink.sandbox import SandboxApi
from agent.uplink.token import write_secret_file
from drivers.sim.modbus_server import ModbusSimulator

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
[gateway]
id = "run-test"
state_dir = "{state_dir}"

[devices.vib1]
driver = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = 2
asset = "pump2"
profile = "vib-triax-modbus"
poll_interval = "0.5s"
waveform_interval = "{waveform_interval}"

[assets.pump2]
bearing = "6205"
remote_tag = "RUN-PUMP-2"

[mqtt]
enabled = false

[uplink.sandbox]
base_url = "{base_url}"
token_file = "{token_file}"
"""


class NotifySocket:
    """The receiving end of ``$NOTIFY_SOCKET``, as systemd would bind it."""

    def __init__(self) -> None:
        # Unix socket paths are limited to 108 bytes, so stay short.
        self.directory = tempfile.mkdtemp(prefix="cmrun-", dir="/tmp")
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.directory)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulator]:
    sim = ModbusSimulator("127.0.0.1", 0)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[tuple[SandboxApi, str]]:
    token = secrets.token_urlsafe(24)
    api = SandboxApi(tmp_path / "sandbox.db", tokens=token, seed_assets=3)
    api.add_assets(["RUN-PUMP-2"])
    await api.start("127.0.0.1", 0)
    yield api, token
    await api.stop()


def write_config(
    tmp_path: Path,
    simulator: ModbusSimulator,
    sandbox: tuple[SandboxApi, str],
    waveform_interval: str = "2s",
) -> Path:
    api, token = sandbox
    token_file = tmp_path / "uplink-token"
    write_secret_file(token_file, token)
    path = tmp_path / "agent.toml"
    path.write_text(
        CONFIG.format(
            state_dir=tmp_path / "state",
            port=simulator.port,
            base_url=api.base_url,
            token_file=token_file,
            waveform_interval=waveform_interval,
        )
    )
    return path


async def start_agent(config: Path, notify: NotifySocket) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMAGENT_")}
    env["NOTIFY_SOCKET"] = notify.path
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        "--config",
        str(config),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_until(condition, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def stored_measurements(api: SandboxApi, token: str) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"}
    items: list[dict[str, object]] = []
    cursor = None
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            url = f"{api.base_url}/api/v1/measurements"
            async with session.get(url, params=params) as response:
                page = await response.json()
            items.extend(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return items


@pytest.mark.slow
class TestRunCommand:
    async def test_sigterm_flushes_and_exits_zero(
        self,
        tmp_path: Path,
        notify: NotifySocket,
        simulator: ModbusSimulator,
        sandbox: tuple[SandboxApi, str],
    ) -> None:
        api, token = sandbox
        process = await start_agent(write_config(tmp_path, simulator, sandbox), notify)
        try:
            await wait_until(lambda: "READY=1" in "".join(notify.drain()))
            state_dir = tmp_path / "state"
            await wait_until(
                lambda: (
                    (read_status(state_dir) or {})
                    .get("counters", {})
                    .get("waveforms_analysed", 0)
                    >= 1
                )
            )
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 60)

        status = read_status(tmp_path / "state")
        assert status is not None
        stored = await stored_measurements(api, token)
        log = stderr.decode()
        assert process.returncode == 0, log
        assert "STOPPING=1" in "".join(notify.drain())
        assert status["running"] is False
        assert read_outbox(state_dir / "outbox.db")["depth"] == 0  # type: ignore[index]
        assert len(stored) == status["counters"]["measurements_produced"]
        assert token not in log

    async def test_sighup_keeps_old_config_when_invalid(
        self,
        tmp_path: Path,
        notify: NotifySocket,
        simulator: ModbusSimulator,
        sandbox: tuple[SandboxApi, str],
    ) -> None:
        config = write_config(tmp_path, simulator, sandbox, waveform_interval="1h")
        process = await start_agent(config, notify)
        try:
            await wait_until(lambda: "READY=1" in "".join(notify.drain()))
            good = config.read_text()
            config.write_text(good.replace("poll_interval", "pol_interval"))
            process.send_signal(signal.SIGHUP)
            await wait_until(lambda: "".join(notify.drain()).count("READY=1") >= 2)
            state_dir = tmp_path / "state"
            before = (
                (read_status(state_dir) or {}).get("counters", {}).get("readings", 0)
            )
            await asyncio.sleep(3.0)
            after = (
                (read_status(state_dir) or {}).get("counters", {}).get("readings", 0)
            )
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 60)

        log = stderr.decode()
        assert process.returncode == 0, log
        assert "RELOADING=1" in "".join(notify.messages)
        assert "pol_interval" in log
        assert "agent.reload_kept_old_config" in log
        assert after > before

    async def test_config_warning_shown_with_text(
        self,
        tmp_path: Path,
        notify: NotifySocket,
        simulator: ModbusSimulator,
        sandbox: tuple[SandboxApi, str],
    ) -> None:
        config = write_config(tmp_path, simulator, sandbox, waveform_interval="1h")
        config.write_text(config.read_text() + DISABLED_OPCUA_DEVICE)
        process = await start_agent(config, notify)
        try:
            await wait_until(lambda: "READY=1" in "".join(notify.drain()))
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 60)

        log = stderr.decode()
        assert process.returncode == 0, log
        assert f"warning: {PASSWORD_WARNING}" in log.splitlines()
        assert "environment_mismatch" not in log

    async def test_invalid_config_exits_78(self, tmp_path: Path) -> None:
        config = tmp_path / "agent.toml"
        config.write_text('[gateway]\nid = "x"\n\n[mqtt]\nprot = 1883\n')

        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            "--config",
            str(config),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)

        assert process.returncode == 78
        assert f"{config}:5: mqtt.prot" in stderr.decode()


DISABLED_OPCUA_DEVICE = """
[devices.ua]
driver = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
asset = "pump2"
enabled = false
username = "operator"
"""

PASSWORD_WARNING = (
    "device 'ua' has username 'operator' but no password: provide the "
    "systemd credential opcua-ua-password, set CMAGENT_OPCUA_PASSWORD__UA or "
    "set password_file, unless the server accepts the user name alone"
)


async def run_cli(*args: str) -> tuple[int, str]:
    """Run ``cmagent ARGS`` to its end; return its exit status and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMAGENT_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


class TestStartupProblems:
    async def test_state_dir_that_is_a_file_exits_78(self, tmp_path: Path) -> None:
        config = tmp_path / "agent.toml"
        config.write_text(f'[gateway]\nid = "x"\nstate_dir = "{config}"\n')

        returncode, stderr = await run_cli("run", "--config", str(config))

        assert returncode == 78
        assert "Traceback" not in stderr
        assert stderr.splitlines() == [
            f"{config}:3: gateway.state_dir: expected the agent's state "
            "directory, found a file; set gateway.state_dir to a directory",
            f"cmagent run: invalid configuration in {config}: 1 problem",
        ]

    async def test_uncreatable_state_dir_exits_78(self, tmp_path: Path) -> None:
        # Nothing can be created in /proc, not even by root.
        state_dir = "/proc/cmagent-test-state"
        config = tmp_path / "agent.toml"
        config.write_text(f'[gateway]\nid = "x"\nstate_dir = "{state_dir}"\n')

        returncode, stderr = await run_cli("run", "--config", str(config))

        assert returncode == 78
        assert "Traceback" not in stderr
        assert stderr.splitlines()[0].startswith(
            f"{config}:3: gateway.state_dir: cannot create the agent's state "
            f"directory {state_dir}: "
        )
        assert not Path(state_dir).exists()

    async def test_status_shows_config_warning_text(self, tmp_path: Path) -> None:
        config = tmp_path / "agent.toml"
        state_dir = tmp_path / "state"
        config.write_text(
            f'[gateway]\nstate_dir = "{state_dir}"\n[assets.pump2]\n'
            + DISABLED_OPCUA_DEVICE
        )

        _, stderr = await run_cli("status", "--config", str(config))

        assert stderr.splitlines()[0] == f"warning: {PASSWORD_WARNING}"
        assert "environment_mismatch" not in stderr


class TestStatusCommand:
    async def test_reports_stopped_agent_as_json(
        self,
        tmp_path: Path,
        notify: NotifySocket,
        simulator: ModbusSimulator,
        sandbox: tuple[SandboxApi, str],
    ) -> None:
        process = await start_agent(write_config(tmp_path, simulator, sandbox), notify)
        try:
            await wait_until(lambda: "READY=1" in "".join(notify.drain()))
            await wait_until(lambda: read_status(tmp_path / "state") is not None)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), 60)

        status = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "status",
            "--state-dir",
            str(tmp_path / "state"),
            "--json",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await status.communicate()
        report = json.loads(stdout)

        assert status.returncode == 0
        assert report["running"] is False
        assert report["snapshot"]["devices"]["vib1"]["state"] == "stopped"
        assert report["outbox"]["depth"] == 0
