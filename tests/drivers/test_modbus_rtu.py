"""The Modbus RTU driver on a serial line made of pseudo-terminals.

Two socat pty pairs and a relay thread between them form the line:

    simulator ── pty pair ── relay ── pty pair ── driver

The relay forwards bytes both ways and injects the faults of a noisy
field bus: a stray byte between polls, one corrupted byte inside a reply,
and a burst of random noise in both directions.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from drivers.base import Reading
from drivers.errors import DriverConnectError
from drivers.modbus import ModbusDriver
from drivers.modbus_link import acquire_serial_link, release_serial_link
from drivers.sim.modbus_sensors import SimRegisterBank
from drivers.sim.modbus_server import ModbusSimulator
from drivers.spec import DataType, ModbusPointSpec, ModbusRtuSpec

pytestmark = pytest.mark.skipif(
    shutil.which("socat") is None, reason="socat is not installed"
)

NOISE_BYTES_PER_S = 1920
"""Random bytes per second and direction: a saturated 19 200 baud line."""

POLL_S = 0.1
TIMEOUT_S = 0.2
PARITY = "N"
"""The Linux pty driver here rejects parity bits (tcsetattr returns
EINVAL), and a pty transmits none, so both ends use no parity."""


def open_pty_pair(
    directory: Path, name: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start socat joining two new pseudo-terminals; return it and both paths."""
    left, right = directory / f"{name}-left", directory / f"{name}-right"
    process = subprocess.Popen(
        [
            "socat",
            f"pty,raw,echo=0,link={left}",
            f"pty,raw,echo=0,link={right}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5.0
    while not (left.exists() and right.exists()):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"socat did not create {left} and {right}")
        time.sleep(0.01)
    return process, str(left), str(right)


class LineRelay:
    """Forward bytes between two serial ends and inject line faults.

    ``server_end`` faces the simulator and ``client_end`` the driver.
    Faults are requested from the test's thread and applied by the relay
    thread.
    """

    def __init__(self, server_end: str, client_end: str, seed: int = 7) -> None:
        self._server = os.open(server_end, os.O_RDWR | os.O_NOCTTY)
        self._client = os.open(client_end, os.O_RDWR | os.O_NOCTTY)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stray: list[bytes] = []
        self._corrupt_pending = False
        self._noise_started = 0.0
        self._noise_total_bytes = 0
        self._noise_sent_bytes = 0
        self.corrupted_replies = 0
        self.noise_bytes = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stray_byte(self, value: int = 0x55) -> None:
        """Send one byte to the driver outside any reply."""
        with self._lock:
            self._stray.append(bytes([value]))

    def corrupt_next_reply(self) -> None:
        """Flip every bit of one byte inside the next reply."""
        with self._lock:
            self._corrupt_pending = True

    def noise(self, seconds: float) -> None:
        """Send random bytes both ways for ``seconds``, besides the traffic.

        Each direction gets ``NOISE_BYTES_PER_S * seconds`` bytes in all,
        paced by the clock rather than by relay ticks.
        """
        with self._lock:
            self._noise_started = time.monotonic()
            self._noise_total_bytes = int(NOISE_BYTES_PER_S * seconds)
            self._noise_sent_bytes = 0

    def noise_active(self) -> bool:
        with self._lock:
            return self._noise_sent_bytes < self._noise_total_bytes

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2.0)
        os.close(self._server)
        os.close(self._client)

    def _run(self) -> None:
        tick_s = 0.002
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._server, self._client], [], [], tick_s)
            if self._client in readable:
                os.write(self._server, os.read(self._client, 4096))
            if self._server in readable:
                os.write(self._client, self._alter_reply(os.read(self._server, 4096)))
            self._inject()

    def _alter_reply(self, data: bytes) -> bytes:
        with self._lock:
            if not self._corrupt_pending or len(data) < 4:
                return data
            self._corrupt_pending = False
            self.corrupted_replies += 1
        # Byte 3 is inside the register data of a read reply.
        return data[:3] + bytes([data[3] ^ 0xFF]) + data[4:]

    def _inject(self) -> None:
        with self._lock:
            stray, self._stray = self._stray, []
            size = self._noise_due_bytes() - self._noise_sent_bytes
            self._noise_sent_bytes += size
        for byte in stray:
            os.write(self._client, byte)
        if size > 0:
            os.write(self._client, self._random.randbytes(size))
            os.write(self._server, self._random.randbytes(size))
            self.noise_bytes += 2 * size

    def _noise_due_bytes(self) -> int:
        """Return how many bytes per direction the noise should have sent by now."""
        elapsed_s = time.monotonic() - self._noise_started
        return min(self._noise_total_bytes, int(NOISE_BYTES_PER_S * elapsed_s))


class SerialLine:
    """The simulator's and the driver's ends of one relayed line."""

    def __init__(self, server_port: str, client_port: str, relay: LineRelay) -> None:
        self.server_port = server_port
        self.client_port = client_port
        self.relay = relay


@pytest.fixture
def line(tmp_path: Path) -> Iterator[SerialLine]:
    first, sim_end, relay_server_end = open_pty_pair(tmp_path, "sim")
    second, relay_client_end, driver_end = open_pty_pair(tmp_path, "drv")
    relay = LineRelay(relay_server_end, relay_client_end)
    yield SerialLine(sim_end, driver_end, relay)
    relay.close()
    for process in (first, second):
        process.terminate()
        process.wait(timeout=5)


@pytest.fixture
async def served_line(line: SerialLine) -> AsyncIterator[SerialLine]:
    """The line with banks at units 1 and 2 served on its simulator end."""
    simulator = ModbusSimulator(
        sensors=[SimRegisterBank(1, size=200), SimRegisterBank(2, size=200)],
        serial_port=line.server_port,
        parity=PARITY,
    )
    await simulator.start()
    yield line
    await simulator.stop()


# SimRegisterBank stores the value a in register a, so each expected value
# follows from the addresses alone.
POINTS = (
    ModbusPointSpec(name="u16", asset="m1", address=5),
    ModbusPointSpec(name="i32", asset="m1", address=10, data_type=DataType.INT32),
    ModbusPointSpec(name="f32", asset="m1", address=40, data_type=DataType.FLOAT32),
)
EXPECTED = {
    "u16": 5,
    "i32": (10 << 16) | 11,
    "f32": struct.unpack(">f", bytes([0x00, 40, 0x00, 41]))[0],
}


def rtu_spec(port: str, unit_id: int, **kwargs: object) -> ModbusRtuSpec:
    options: dict[str, object] = {
        "device_id": f"unit{unit_id}",
        "serial_port": port,
        "unit_id": unit_id,
        "parity": PARITY,
        "timeout_s": TIMEOUT_S,
        "retries": 1,
        "points": POINTS,
    }
    options.update(kwargs)
    return ModbusRtuSpec(**options)  # type: ignore[arg-type]


def check_values(readings: Sequence[Reading]) -> bool:
    """Assert that no reading carries a wrong value; return whether all are good."""
    for reading in readings:
        if reading.quality.is_good:
            assert reading.value == EXPECTED[reading.point], reading
        else:
            assert reading.value is None, reading
    return all(r.quality.is_good for r in readings)


async def cycles_until_good(driver: ModbusDriver, limit: int) -> int:
    """Poll until every reading is good; return the cycles it took."""
    for cycle in range(1, limit + 1):
        if check_values(await driver.read_points()):
            return cycle
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"no good poll within {limit} cycles")


class TestRtuLineFaults:
    async def test_clean_line_reads_expected_values(
        self, served_line: SerialLine
    ) -> None:
        driver = ModbusDriver(rtu_spec(served_line.client_port, 1))
        await driver.connect()
        readings = await driver.read_points()
        await driver.close()
        assert check_values(readings)
        assert [r.point for r in readings] == ["u16", "i32", "f32"]

    async def test_stray_byte_between_polls(self, served_line: SerialLine) -> None:
        driver = ModbusDriver(rtu_spec(served_line.client_port, 1))
        await driver.connect()
        for _ in range(3):
            assert await cycles_until_good(driver, 1) == 1
            served_line.relay.stray_byte()
            await asyncio.sleep(POLL_S)
        await driver.close()

    async def test_corrupt_reply_never_yields_value(
        self, served_line: SerialLine
    ) -> None:
        driver = ModbusDriver(rtu_spec(served_line.client_port, 1))
        await driver.connect()
        for _ in range(3):
            served_line.relay.corrupt_next_reply()
            assert await cycles_until_good(driver, 2) <= 2
        await driver.close()
        assert served_line.relay.corrupted_replies == 3

    async def test_recovers_after_random_noise(self, served_line: SerialLine) -> None:
        # Five seconds of noise, as in the field case. Without retries,
        # every request the noise hits shows as a bad poll.
        noise_s = 5.0
        relay = served_line.relay
        driver = ModbusDriver(rtu_spec(served_line.client_port, 1, retries=0))
        await driver.connect()
        assert await cycles_until_good(driver, 1) == 1

        started = time.monotonic()
        relay.noise(noise_s)
        bad_polls = 0
        while relay.noise_active():
            if not check_values(await driver.read_points()):
                bad_polls += 1
            await asyncio.sleep(POLL_S)
        polled_s = time.monotonic() - started
        recovery = await cycles_until_good(driver, 2)
        await driver.close()

        # Both directions carry the full five seconds of noise.
        assert relay.noise_bytes == 2 * int(NOISE_BYTES_PER_S * noise_s)
        assert polled_s >= noise_s
        assert bad_polls >= 1
        assert recovery <= 2


class TestSharedSerialPort:
    async def test_units_share_one_client(self, served_line: SerialLine) -> None:
        drivers = [
            ModbusDriver(rtu_spec(served_line.client_port, unit)) for unit in (1, 2)
        ]
        for driver in drivers:
            await driver.connect()
        first, second = (driver.link for driver in drivers)
        assert first is not None
        assert first is second
        assert first.users == 2

        await drivers[0].close()
        assert first.users == 1
        assert first.connected
        assert check_values(await drivers[1].read_points())

        await drivers[1].close()
        assert not first.connected
        fresh = acquire_serial_link(rtu_spec(served_line.client_port, 1))
        assert fresh is not first
        release_serial_link(fresh)

    async def test_concurrent_connects_open_once(self, served_line: SerialLine) -> None:
        # The agent starts every device task at once, so the units of one
        # port call connect() while the first open is still in progress.
        port = served_line.client_port
        link = acquire_serial_link(rtu_spec(port, 1))
        opens = 0
        library_connect = link.client.connect

        async def counting_connect() -> bool:
            nonlocal opens
            opens += 1
            return await library_connect()

        link.client.connect = counting_connect  # type: ignore[method-assign]
        drivers = [
            ModbusDriver(rtu_spec(port, 1)),
            ModbusDriver(rtu_spec(port, 2)),
            ModbusDriver(rtu_spec(port, 2, device_id="unit2-again")),
        ]
        try:
            results = await asyncio.gather(
                *(driver.connect() for driver in drivers), return_exceptions=True
            )
            assert results == [None, None, None]
            assert opens == 1
            assert link.connected
            for driver in drivers:
                assert driver.link is link
                assert check_values(await driver.read_points())
        finally:
            for driver in drivers:
                await driver.close()
            release_serial_link(link)
        assert not link.connected

    async def test_dead_unit_leaves_others_good(self, served_line: SerialLine) -> None:
        live = [ModbusDriver(rtu_spec(served_line.client_port, u)) for u in (1, 2)]
        dead = ModbusDriver(rtu_spec(served_line.client_port, 9))
        for driver in (*live, dead):
            await driver.connect()

        async def poll(driver: ModbusDriver) -> list[Sequence[Reading]]:
            cycles = []
            for _ in range(3):
                cycles.append(await driver.read_points())
                await asyncio.sleep(POLL_S)
            return cycles

        results = await asyncio.gather(*(poll(d) for d in (*live, dead)))
        for driver in (*live, dead):
            await driver.close()

        *live_cycles, dead_cycles = results
        for cycles in live_cycles:
            assert all(check_values(readings) for readings in cycles)
        for readings in dead_cycles:
            assert all(r.value is None for r in readings)
            assert all(r.quality.reason is not None for r in readings)
            assert all("unit 9" in r.quality.detail for r in readings)


class TestLateReply:
    async def test_late_reply_not_taken_for_next(self, line: SerialLine) -> None:
        simulator = ModbusSimulator(
            sensors=[SimRegisterBank(1, size=200)],
            serial_port=line.server_port,
            parity=PARITY,
        )
        await simulator.start()
        # Two single-register blocks: replies differ only in their value.
        points = (
            ModbusPointSpec(name="near", asset="m1", address=5),
            ModbusPointSpec(name="far", asset="m1", address=150),
        )
        driver = ModbusDriver(rtu_spec(line.client_port, 1, points=points, retries=0))
        await driver.connect()
        simulator.set_delay(1.5 * TIMEOUT_S)
        readings = await driver.read_points()
        simulator.set_delay(0.0)
        await asyncio.sleep(3 * TIMEOUT_S)
        after = await driver.read_points()
        await driver.close()
        await simulator.stop()

        for reading in readings:
            assert reading.value in (None, {"near": 5, "far": 150}[reading.point])
        assert [r.value for r in after] == [5, 150]


# Run by a user outside the port's group, it prints the message that
# such a user gets.
CONNECT_AS_USER = """
import asyncio, sys
from drivers.errors import DriverConnectError
from drivers.modbus import ModbusDriver
from drivers.spec import ModbusPointSpec, ModbusRtuSpec

spec = ModbusRtuSpec(
    device_id="unit1", serial_port=sys.argv[1], unit_id=1, parity="N",
    points=(ModbusPointSpec(name="u16", asset="m1", address=5),),
)
try:
    asyncio.run(ModbusDriver(spec).connect())
except DriverConnectError as exc:
    print(exc)
"""


def can_drop_privileges() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    try:
        pwd.getpwnam("nobody")
        grp.getgrnam("dialout")
    except KeyError:
        return False
    return True


def importable_as_nobody() -> bool:
    """Whether the user nobody can import the project from this checkout.

    A checkout below a directory private to root (mktemp -d makes one with
    mode 0700) cannot be read after the privileges are dropped.
    """
    nobody = pwd.getpwnam("nobody")
    result = subprocess.run(
        ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
         "--clear-groups", sys.executable, "-B", "-c", "import drivers.modbus"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    return result.returncode == 0


class TestSerialPortErrors:
    async def test_missing_port_gives_os_reason(self, tmp_path: Path) -> None:
        port = str(tmp_path / "ttyNOPE")
        driver = ModbusDriver(rtu_spec(port, 1))
        with pytest.raises(DriverConnectError) as caught:
            await driver.connect()
        await driver.close()

        message = str(caught.value)
        assert f"cannot connect to {port}: no such file or directory" in message
        assert "check serial_port" in message
        assert caught.value.device == "unit1"

    @pytest.mark.skipif(
        not can_drop_privileges(),
        reason="needs root, setpriv, the user nobody and the group dialout",
    )
    def test_port_of_other_group_names_dialout(self) -> None:
        if not importable_as_nobody():
            pytest.skip("the checkout is not readable by the user nobody")
        # tmp_path is private to root, so the pty links go in a directory
        # that the unprivileged user can search.
        with tempfile.TemporaryDirectory() as directory:
            os.chmod(directory, 0o755)
            socat, _, port = open_pty_pair(Path(directory), "line")
            try:
                nobody = pwd.getpwnam("nobody")
                device = os.path.realpath(port)
                os.chown(device, 0, grp.getgrnam("dialout").gr_gid)
                os.chmod(device, 0o660)
                result = subprocess.run(
                    [
                        "setpriv",
                        f"--reuid={nobody.pw_uid}",
                        f"--regid={nobody.pw_gid}",
                        "--clear-groups",
                        sys.executable,
                        "-B",
                        "-c",
                        textwrap.dedent(CONNECT_AS_USER),
                        port,
                    ],
                    cwd=Path(__file__).resolve().parents[2],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            finally:
                socat.terminate()
                socat.wait(timeout=5)

        assert result.returncode == 0, result.stderr
        message = result.stdout
        assert f"cannot connect to {port}: permission denied" in message
        assert "group dialout" in message
        assert "add the user that runs cmagent to group 'dialout'" in message
        assert "SupplementaryGroups=dialout" in message
