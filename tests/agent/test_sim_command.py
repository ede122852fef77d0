"""``cmagent sim``, run as a user runs the command: start-up output and
failures."""

from __future__ import annotations

import json
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from asyncua import Client

from agent.cli import main

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def run_cmagent(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port with a listening socket on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class TestSimCommand:
    @pytest.mark.parametrize("kind", ["modbus", "opcua"])
    def test_port_in_use_is_reported(self, kind: str, busy_port: int) -> None:
        result = run_cmagent("sim", kind, "--port", str(busy_port))
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"cmagent sim: cannot listen on 127.0.0.1:{busy_port}: Address "
            "already in use; choose another --port, or 0 for any free one"
        ]

    @pytest.mark.parametrize("kind", ["modbus", "opcua"])
    @pytest.mark.parametrize("port", ["70000", "-1", "any"])
    def test_rejects_port_out_of_range(self, kind: str, port: str) -> None:
        result = run_cmagent("sim", kind, "--port", port)
        assert result.returncode == 2
        assert "argument --port: expected an integer from 0 to 65535" in result.stderr
        assert f"found {port!r}" in result.stderr
        assert "Traceback" not in result.stderr


class RunningSim:
    """A ``cmagent sim`` process and the lines it printed when it started."""

    def __init__(self, kind: str, line_count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "sim", kind, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.lines = self._read_lines(line_count)
        match = re.search(r"127\.0\.0\.1:(\d+)", self.lines[0])
        assert match is not None, f"no 127.0.0.1:PORT in {self.lines[0]!r}"
        self.port = int(match.group(1))

    def _read_lines(self, count: int) -> list[str]:
        # A reader thread, so a simulator that prints less cannot hang the test.
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None

        def read() -> None:
            for _ in range(count):
                lines.put(stdout.readline().rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        try:
            return [lines.get(timeout=START_TIMEOUT_S) for _ in range(count)]
        except queue.Empty:
            self.stop()
            pytest.fail(f"expected {count} start lines within {START_TIMEOUT_S} s")

    def stop(self) -> str:
        """Stop the process and return what it wrote to standard error."""
        # SIGTERM, because a test runner started in the background may pass
        # on an ignored SIGINT, which would leave the simulator running.
        self.process.terminate()
        _, err = self.process.communicate(timeout=10)
        return err


@pytest.fixture
def modbus_sim() -> Iterator[RunningSim]:
    sim = RunningSim("modbus", line_count=5)
    yield sim
    if sim.process.poll() is None:
        sim.stop()


@pytest.fixture
def opcua_sim() -> Iterator[RunningSim]:
    sim = RunningSim("opcua", line_count=4)
    yield sim
    if sim.process.poll() is None:
        sim.stop()


class TestSimStartOutput:
    def test_modbus_lists_units_and_profiles(self, modbus_sim: RunningSim) -> None:
        assert modbus_sim.lines == [
            f"simulator serving Modbus TCP on 127.0.0.1:{modbus_sim.port}; "
            "Ctrl-C stops it",
            "  unit 1: vibration sensor replaying normal_97, profile vib-triax-modbus",
            "  unit 2: vibration sensor replaying outer_race_021_234, profile "
            "vib-triax-modbus",
            "  unit 3: vibration sensor replaying inner_race_021_209, profile "
            "vib-triax-modbus",
            "  unit 10: oil-condition sensor, profile oil-modbus",
        ]

    @pytest.mark.parametrize(
        ("unit", "low", "high"),
        [
            # Velocity RMS in mm/s at input register 0 of vib-triax-modbus.
            (1, 0.0, 100.0),
            (2, 0.0, 100.0),
            (3, 0.0, 100.0),
            # Particles > 4 µm per mL at input register 0 of oil-modbus.
            (10, 0.0, 3_000_000.0),
        ],
    )
    def test_modbus_units_answer_as_listed(
        self,
        modbus_sim: RunningSim,
        capsys: pytest.CaptureFixture[str],
        unit: int,
        low: float,
        high: float,
    ) -> None:
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port",
             str(modbus_sim.port), "--unit", str(unit), "--function", "4",
             "--address", "0", "--count", "2", "--json"]
        )  # fmt: skip
        output = json.loads(capsys.readouterr().out)
        assert status == 0
        # Both profiles read float32 values with the default big/big order.
        assert low <= output["decoded"]["float32"]["ABCD"] <= high

    def test_opcua_lists_endpoint_namespace_and_paths(
        self, opcua_sim: RunningSim
    ) -> None:
        assert opcua_sim.lines == [
            f"simulator serving OPC UA on opc.tcp://127.0.0.1:{opcua_sim.port}"
            "/cmagent/sim; Ctrl-C stops it",
            "  namespace urn:cmagent:sim",
            "  Sensors/Motor4: vibration sensor replaying inner_race_007_105, "
            "profile vib-opcua with",
            '    browse_root = ["{urn:cmagent:sim}Sensors", "{urn:cmagent:sim}Motor4"]',
        ]

    async def test_opcua_browse_root_exists(self, opcua_sim: RunningSim) -> None:
        endpoint = f"opc.tcp://127.0.0.1:{opcua_sim.port}/cmagent/sim"
        root = json.loads(opcua_sim.lines[3].split("=", 1)[1])
        async with Client(endpoint, timeout=10) as client:
            index = await client.get_namespace_index("urn:cmagent:sim")
            path = [name.replace("{urn:cmagent:sim}", f"{index}:") for name in root]
            sensor = await client.nodes.objects.get_child(path)
            velocity = await sensor.get_child(f"{index}:VelocityRms")
            value = await velocity.read_value()
        assert isinstance(value, float)


class TestSimLogging:
    def test_modbus_sim_prints_no_library_errors(
        self, modbus_sim: RunningSim, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # pymodbus logs a request for a unit it does not serve as ERROR,
        # with a hex dump of the request.
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port",
             str(modbus_sim.port), "--unit", "7", "--address", "0",
             "--timeout", "1s"]
        )  # fmt: skip
        assert status == 1
        assert "GATEWAY TARGET DEVICE FAILED TO RESPOND" in capsys.readouterr().err
        assert modbus_sim.stop() == ""
