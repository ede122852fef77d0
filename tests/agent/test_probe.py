"""``cmagent probe modbus`` against the simulator on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from drivers.codec import decode_block
from drivers.sim.modbus_sensors import SimRegisterBank
from drivers.sim.modbus_server import ModbusSimulator
from drivers.spec import DataType, Endian

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def simulator_port() -> Iterator[tuple[int, ModbusSimulator]]:
    """Run the simulator in its own thread, as the probe runs its own loop."""
    simulator = ModbusSimulator(sensors=[SimRegisterBank(5, size=100)])
    bank = simulator.sensors[5]
    assert isinstance(bank, SimRegisterBank)
    # -1.11 as float32 in CDAB order: 0xBF8E147B with swapped words.
    bank.write_holding(10, [0x147B, 0xBF8E])
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(simulator.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield simulator.port, simulator
    asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(port: int, *options: str) -> int:
    """Run ``cmagent probe modbus`` in this process against ``port``."""
    return main(
        ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port), *options]
    )


class TestProbeModbus:
    def test_json_decodes_every_order(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--unit", "5", "--address", "10", "--count", "4", "--json"]
        )  # fmt: skip
        output = json.loads(capsys.readouterr().out)
        assert status == 0
        assert output["registers"] == [0x147B, 0xBF8E, 12, 13]
        assert output["decoded"]["float32"]["CDAB"] == pytest.approx(-1.11, rel=1e-6)
        assert output["decoded"]["uint16"]["AB"] == 0x147B
        assert output["decoded"]["uint16"]["BA"] == 0x7B14
        assert set(output["decoded"]["float64"]) == {
            "ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA",
        }  # fmt: skip

    def test_table_lists_registers(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--unit", "5", "--address", "10", "--count", "2"]
        )  # fmt: skip
        output = capsys.readouterr().out
        assert status == 0
        assert "0x147B" in output
        assert "CDAB=-1.11" in output

    def test_table_prints_integers_in_full(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--unit", "5", "--address", "10", "--count", "2"]
        )  # fmt: skip
        output = capsys.readouterr().out
        assert status == 0
        # 0x147B, 0xBF8E in ABCD order is 0x147BBF8E = 343654286.
        assert "ABCD=343654286 " in output

    def test_exception_code_is_reported(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--unit", "5", "--address", "99", "--count", "5"]
        )  # fmt: skip
        assert status == 1
        assert "ILLEGAL DATA ADDRESS (2)" in capsys.readouterr().err

    def test_connection_refused_is_reported(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        port = free_port()
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--address", "0", "--timeout", "1s"]
        )  # fmt: skip
        assert status == 1
        err = capsys.readouterr().err
        assert err.startswith("cmagent probe: ")
        assert f"cannot connect to 127.0.0.1:{port}" in err

    def test_timeout_is_reported(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, simulator = simulator_port
        simulator.stop_answering(True)
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--unit", "5", "--address", "0", "--timeout", "0.3s"]
        )  # fmt: skip
        assert status == 1
        assert "no response within 0.3 s" in capsys.readouterr().err


class TestProbeFailureMessages:
    @pytest.mark.parametrize(
        ("code", "name"),
        [
            (10, "GATEWAY PATH UNAVAILABLE"),
            (11, "GATEWAY TARGET DEVICE FAILED TO RESPOND"),
        ],
    )
    def test_gateway_exception_names_unit_and_routing(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
        code: int,
        name: str,
    ) -> None:
        port, simulator = simulator_port
        simulator.set_exception(5, code)
        status = probe(port, "--unit", "5", "--address", "0")
        err = capsys.readouterr().err
        assert status == 1
        assert err.startswith(
            f"cmagent probe: 127.0.0.1:{port} unit 5 function 3 address 0 "
            f"count 4: {name} ({code}); "
        )
        assert "check that --unit 5 is the device's unit id" in err
        assert "the gateway routes unit 5 to the device" in err
        assert "the device is powered and wired" in err

    @pytest.mark.parametrize(
        ("function", "address", "hint"),
        [
            ("3", "40001", "try --function 3 --address 0"),
            ("3", "40101", "try --function 3 --address 100"),
            ("3", "30011", "try --function 4 --address 10"),
            ("4", "49999", "try --function 3 --address 9998"),
        ],
    )
    def test_illegal_address_suggests_modicon_offset(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
        function: str,
        address: str,
        hint: str,
    ) -> None:
        port, _ = simulator_port
        status = probe(
            port, "--unit", "5", "--function", function, "--address", address
        )
        err = capsys.readouterr().err
        assert status == 1
        assert "ILLEGAL DATA ADDRESS (2)" in err
        assert "check --address and --function" in err
        assert f"If {address} is a Modicon register number, {hint}" in err

    def test_illegal_address_without_modicon_hint(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        # The bank serves holding registers 0-99, so 98-101 runs past it.
        port, _ = simulator_port
        status = probe(port, "--unit", "5", "--address", "98")
        err = capsys.readouterr().err
        assert status == 1
        assert "ILLEGAL DATA ADDRESS (2); the device does not serve all of" in err
        assert "holding registers 98-101" in err
        assert "Modicon" not in err

    def test_illegal_single_register_named(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        # The bank serves holding registers 0-99 only.
        port, _ = simulator_port
        status = probe(port, "--unit", "5", "--address", "100", "--count", "1")
        err = capsys.readouterr().err
        assert status == 1
        assert "does not serve all of holding register 100;" in err

    def test_timeout_suggests_unit_and_timeout(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, simulator = simulator_port
        simulator.stop_answering(True)
        status = probe(port, "--unit", "5", "--address", "0", "--timeout", "0.3s")
        err = capsys.readouterr().err
        assert status == 1
        assert f"127.0.0.1:{port} unit 5 function 3 address 0 count 4" in err
        assert "--unit 5 is the device's unit id" in err
        assert "--timeout" in err

    @pytest.mark.parametrize("fault", ["exception", "silence"])
    def test_message_names_no_internal_device(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
        fault: str,
    ) -> None:
        port, simulator = simulator_port
        if fault == "exception":
            simulator.set_exception(5, 11)
        else:
            simulator.stop_answering(True)
        status = probe(port, "--unit", "5", "--address", "0", "--timeout", "0.3s")
        assert status == 1
        assert "device 'probe'" not in capsys.readouterr().err

    def test_json_exception_has_code(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        status = probe(port, "--unit", "5", "--address", "40001", "--json")
        output = json.loads(capsys.readouterr().out)
        assert status == 1
        assert output["error_kind"] == "modbus_exception"
        assert output["exception_code"] == 2
        assert "try --function 3 --address 0" in output["error"]
        assert output["request"] == {
            "host": "127.0.0.1", "port": port, "unit": 5, "function": 3,
            "address": 40001, "count": 4, "timeout_s": 2.0,
        }  # fmt: skip


# The profile settings of each order, from the definitions of byte order
# (the two bytes of a register as sent, or swapped) and word order (the
# most or the least significant register first). None: a 16-bit value has
# one register, so word order has no effect.
PROFILE_SETTINGS = {
    "AB": ("big", None),
    "BA": ("little", None),
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
    "ABCDEFGH": ("big", "big"),
    "GHEFCDAB": ("big", "little"),
    "BADCFEHG": ("little", "big"),
    "HGFEDCBA": ("little", "little"),
}


def wire_bytes(registers: list[int], order: str) -> bytes:
    """Return the value's bytes, most significant first, for ``order``.

    ``order`` lists the value's bytes (A most significant) as they travel
    in ``registers``, high byte of each register first.
    """
    sent = b"".join(register.to_bytes(2, "big") for register in registers)
    by_letter = dict(zip(order, sent, strict=True))
    return bytes(by_letter[letter] for letter in sorted(order))


class TestProbeOrderSettings:
    def test_json_maps_each_order(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        status = probe(port, "--unit", "5", "--address", "10", "--count", "4", "--json")
        output = json.loads(capsys.readouterr().out)
        assert status == 0
        assert output["orders"] == {
            label: {"byte_order": byte_order, "word_order": word_order}
            for label, (byte_order, word_order) in PROFILE_SETTINGS.items()
        }

    @pytest.mark.parametrize("label", ["ABCD", "CDAB", "BADC", "DCBA"])
    def test_settings_decode_like_their_label(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
        label: str,
    ) -> None:
        port, _ = simulator_port
        status = probe(port, "--unit", "5", "--address", "10", "--count", "2", "--json")
        output = json.loads(capsys.readouterr().out)
        settings = output["orders"][label]
        # What a profile point with these settings decodes to.
        configured = decode_block(
            output["registers"],
            DataType.FLOAT32,
            Endian(settings["byte_order"]),
            Endian(settings["word_order"]),
        )[0]
        (expected,) = struct.unpack(">f", wire_bytes(output["registers"], label))
        assert status == 0
        assert output["decoded"]["float32"][label] == pytest.approx(expected)
        assert float(configured) == pytest.approx(expected)

    def test_table_prints_settings_per_order(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        status = probe(port, "--unit", "5", "--address", "10", "--count", "4")
        lines = capsys.readouterr().out.splitlines()
        rows = {
            line[: line.index("byte_order")].strip(): tuple(
                re.findall(r'(?:byte|word)_order = "(\w+)"', line)
            )
            for line in lines
            if "byte_order = " in line
        }
        assert status == 0
        assert rows == {
            "AB, ABCD, ABCDEFGH": ("big", "big"),
            "CDAB, GHEFCDAB": ("big", "little"),
            "BA, BADC, BADCFEHG": ("little", "big"),
            "DCBA, HGFEDCBA": ("little", "little"),
        }
        assert "  word_order has no effect on AB and BA, the 16-bit orders." in lines


def run_cmagent(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent`` as a user would, with Python's own logging."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


class TestProbeModbusArguments:
    @pytest.mark.parametrize(
        ("arguments", "option", "value"),
        [
            (["--unit", "-1"], "--unit", "'-1'"),
            (["--unit", "256"], "--unit", "'256'"),
            (["--unit", "two"], "--unit", "'two'"),
            (["--address", "-1"], "--address", "'-1'"),
            (["--address", "65536"], "--address", "'65536'"),
            (["--port", "0"], "--port", "'0'"),
            (["--port", "70000"], "--port", "'70000'"),
            (["--count", "0"], "--count", "'0'"),
            (["--count", "126"], "--count", "'126'"),
            (["--timeout", "0"], "--timeout", "'0'"),
            (["--timeout", "0ms"], "--timeout", "'0ms'"),
            (["--timeout", "soon"], "--timeout", "'soon'"),
        ],
    )
    def test_rejects_out_of_range_option(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
        arguments: list[str],
        option: str,
        value: str,
    ) -> None:
        port, _ = simulator_port
        base = ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
                "--unit", "5", "--address", "0"]  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *arguments])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert f"argument {option}: expected" in err
        assert f"found {value}" in err
        assert "parse_duration_s" not in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        ("arguments", "advice"),
        [
            (
                ["--host", "127.0.0.1:15020", "--address", "0"],
                "found '127.0.0.1:15020'; use --host 127.0.0.1 --port 15020",
            ),
            (["--host", "", "--address", "0"], "expected a host name"),
            (
                ["--host", "127.0.0.1", "--address", "400001"],
                "six-digit Modicon holding-register number: try --function 3 "
                "--address 0",
            ),
            (
                ["--host", "127.0.0.1", "--address", "300011"],
                "six-digit Modicon input-register number: try --function 4 "
                "--address 10",
            ),
        ],
    )
    def test_rejects_option_with_advice(
        self,
        capsys: pytest.CaptureFixture[str],
        arguments: list[str],
        advice: str,
    ) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["probe", "modbus", *arguments])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert advice in err
        assert "Traceback" not in err

    def test_accepts_ipv6_host(self) -> None:
        from agent.commands.probe import probe_host

        assert probe_host("::1") == "::1"
        assert probe_host("fe80::1:502") == "fe80::1:502"

    def test_five_digit_modicon_address_noted(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        # Some register maps use 40001 as a real offset, so the read goes
        # ahead and only a note names the alternative.
        port, _ = simulator_port
        probe(port, "--unit", "5", "--function", "4", "--address", "40001")
        err = capsys.readouterr().err
        assert (
            "note: 40001 may be a Modicon holding-register number; if the "
            "register map writes it that way, read --function 3 --address 0"
        ) in err

    def test_rejects_block_past_last_register(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        with pytest.raises(SystemExit) as exit_info:
            main(
                ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
                 "--unit", "5", "--address", "65534", "--count", "4", "--json"]
            )  # fmt: skip
        captured = capsys.readouterr()
        assert exit_info.value.code == 2
        assert captured.out == ""
        assert "argument --count" in captured.err
        assert "--address 65534 --count 4" in captured.err
        assert "ends at 65537" in captured.err

    def test_accepts_block_ending_at_last_register(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Nothing listens, so a block that passes validation fails to connect.
        port = free_port()
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--address", "65532", "--count", "4", "--timeout", "1s"]
        )  # fmt: skip
        assert status == 1
        assert "cannot connect" in capsys.readouterr().err

    def test_accepts_unit_zero(
        self,
        simulator_port: tuple[int, ModbusSimulator],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        port, _ = simulator_port
        main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--unit", "0", "--address", "0", "--timeout", "0.5s"]
        )  # fmt: skip
        assert "argument --unit" not in capsys.readouterr().err

    def test_json_failure_prints_error_object(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        port = free_port()
        status = main(
            ["probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
             "--address", "0", "--timeout", "1s", "--json"]
        )  # fmt: skip
        captured = capsys.readouterr()
        output = json.loads(captured.out)
        assert status == 1
        assert output["error"].startswith(f"cannot connect to 127.0.0.1:{port}")
        assert output["error_kind"] == "connect"
        assert output["exception_code"] is None
        assert output["request"]["port"] == port
        assert f"cannot connect to 127.0.0.1:{port}" in captured.err

    def test_refused_connection_prints_one_line(self) -> None:
        port = free_port()
        result = run_cmagent(
            "probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
            "--address", "0", "--timeout", "1s",
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"cmagent probe: cannot connect to 127.0.0.1:{port}: connection "
            "refused; check that a Modbus TCP server listens on that host and "
            "port"
        ]

    def test_unanswered_request_prints_one_line(
        self, simulator_port: tuple[int, ModbusSimulator]
    ) -> None:
        # pymodbus logs a missed response as ERROR with a hex dump of the
        # request, which Python's last-resort handler would print.
        port, simulator = simulator_port
        simulator.stop_answering(True)
        result = run_cmagent(
            "probe", "modbus", "--host", "127.0.0.1", "--port", str(port),
            "--unit", "5", "--address", "0", "--timeout", "0.5s",
        )  # fmt: skip
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith("cmagent probe: ")
        assert "No response received" not in result.stderr
        assert ">>>>>" not in result.stderr

    def test_out_of_range_port_has_no_traceback(self) -> None:
        result = run_cmagent(
            "probe", "modbus", "--host", "127.0.0.1", "--port", "70000",
            "--address", "0",
        )  # fmt: skip
        assert result.returncode == 2
        assert "argument --port" in result.stderr
        assert "'70000'" in result.stderr
        assert "Traceback" not in result.stderr
