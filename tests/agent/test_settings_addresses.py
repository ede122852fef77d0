"""Device addresses: OPC UA endpoints, Modbus hosts and Modicon numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config_check import inspect_config
from agent.profiles import build_device_specs
from agent.settings import load_settings


def write(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` so that ``lines[i]`` is line ``i + 1`` of the file."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def report_lines(
    path: Path, environ: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    report = inspect_config(path, environ=environ or {})
    return [str(p) for p in report.problems], [str(n) for n in report.notes]


def opcua_config(tmp_path: Path, endpoint: str) -> Path:
    return write(
        tmp_path / "agent.toml",
        [
            "[assets.fan]",  # 1
            "[devices.ua]",  # 2
            'driver = "opcua"',  # 3
            'asset = "fan"',  # 4
            f"endpoint = {endpoint!r}",  # 5, a TOML literal string
        ],
    )


def modbus_config(tmp_path: Path, *lines: str) -> Path:
    return write(
        tmp_path / "agent.toml",
        [
            "[assets.pump1]",  # 1
            "[devices.pump1]",  # 2
            'driver = "modbus_tcp"',  # 3
            'asset = "pump1"',  # 4
            *lines,  # 5-
        ],
    )


class TestOpcUaEndpoint:
    @pytest.mark.parametrize(
        ("endpoint", "message"),
        [
            (
                "opc.tcp://127.0.0.1:99999",
                "expected a port from 1 to 65535 in the opc.tcp://HOST:PORT "
                "URL, found 99999 in 'opc.tcp://127.0.0.1:99999'",
            ),
            (
                "opc.tcp://127.0.0.1:0",
                "expected a port from 1 to 65535 in the opc.tcp://HOST:PORT "
                "URL, found 0 in 'opc.tcp://127.0.0.1:0'",
            ),
            (
                "opc.tcp://127.0.0.1:48a0",
                "expected a port from 1 to 65535 in the opc.tcp://HOST:PORT "
                "URL, found '48a0' in 'opc.tcp://127.0.0.1:48a0'",
            ),
            (
                "http://127.0.0.1:14840",
                "expected an opc.tcp://HOST:PORT URL, found "
                "'http://127.0.0.1:14840'; write 'opc.tcp://127.0.0.1:14840'",
            ),
            (
                "127.0.0.1:14840",
                "expected an opc.tcp://HOST:PORT URL, found '127.0.0.1:14840'; "
                "write 'opc.tcp://127.0.0.1:14840'",
            ),
            (
                "opc.tcp://plc7",
                "expected an opc.tcp://HOST:PORT URL, found 'opc.tcp://plc7' "
                "without a port; the standard OPC UA port is 4840, as in "
                "'opc.tcp://plc7:4840'",
            ),
            (
                "opc.tcp://:4840",
                "expected an opc.tcp://HOST:PORT URL, found 'opc.tcp://:4840' "
                "without a valid host; write the server's host name or IP "
                "address before the port",
            ),
            (
                "opc.tcp://::1:4840",
                "expected an opc.tcp://HOST:PORT URL, found "
                "'opc.tcp://::1:4840' without a valid host; write an IPv6 "
                "address in brackets, as in 'opc.tcp://[::1]:4840'",
            ),
        ],
    )
    def test_invalid_endpoint_rejected(
        self, tmp_path: Path, endpoint: str, message: str
    ) -> None:
        path = opcua_config(tmp_path, endpoint)

        problems, _ = report_lines(path)

        assert problems == [f"{path}:5: devices.ua.endpoint: {message}"]

    def test_credentials_in_url_not_echoed(self, tmp_path: Path) -> None:
        secret = "pw-5c0ffee"
        path = opcua_config(tmp_path, f"opc.tcp://operator:{secret}@plc7:4840")

        problems, _ = report_lines(path)

        assert len(problems) == 1
        assert secret not in problems[0]
        assert problems[0].startswith(
            f"{path}:5: devices.ua.endpoint: expected an opc.tcp://HOST:PORT "
            "URL, found a URL with a user name or password in it"
        )

    @pytest.mark.parametrize(
        "endpoint",
        [
            "opc.tcp://127.0.0.1:4840",
            "opc.tcp://plc7.example:1",
            "opc.tcp://[::1]:65535",
            "opc.tcp://127.0.0.1:4840/freeopcua/server/",
        ],
    )
    def test_valid_endpoint_accepted(self, tmp_path: Path, endpoint: str) -> None:
        path = opcua_config(tmp_path, endpoint)

        assert report_lines(path) == ([], [])


class TestModbusHost:
    @pytest.mark.parametrize(
        ("host", "message"),
        [
            ("", "expected a host name or IP address, found ''"),
            (
                "127.0.0.1:15020",
                "expected a host name or IP address without a port, found "
                "'127.0.0.1:15020'; set host = '127.0.0.1' and port = 15020",
            ),
            (
                "[::1]:15020",
                "expected a host name or IP address without a port, found "
                "'[::1]:15020'; set host = '::1' and port = 15020",
            ),
            (
                "[::1]",
                "expected a host name or IP address, found '[::1]'; write an "
                "IPv6 address without brackets, as in host = '::1'",
            ),
            (
                "tcp://plc7:502",
                "expected a host name or IP address without a scheme, found "
                "'tcp://plc7:502'; set host = 'plc7' and port = 502",
            ),
            (
                " plc7",
                "expected a host name or IP address without spaces, found ' plc7'",
            ),
            ("plc7:x", "expected a host name or IP address, found 'plc7:x'"),
        ],
    )
    def test_invalid_host_rejected(
        self, tmp_path: Path, host: str, message: str
    ) -> None:
        path = modbus_config(tmp_path, f"host = {host!r}")

        problems, _ = report_lines(path)

        assert problems == [f"{path}:5: devices.pump1.host: {message}"]

    @pytest.mark.parametrize(
        "host", ["127.0.0.1", "::1", "fe80::1%eth0", "plc-7.plant.example"]
    )
    def test_valid_host_accepted(self, tmp_path: Path, host: str) -> None:
        path = modbus_config(tmp_path, f"host = {host!r}")

        assert report_lines(path) == ([], [])


def point_address(path: Path, device: str, name: str) -> tuple[str, int]:
    specs = build_device_specs(load_settings(path, environ={}))
    (point,) = [p for p in specs[device].points if p.name == name]
    return point.table.value, point.address


class TestModiconSwitch:
    def test_default_converts_with_note(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',  # 5
            "points.status = { table = 'holding', address = 40011 }",  # 6
        )

        assert report_lines(path) == (
            [],
            [
                f"{path}:6: devices.pump1.points.status.address: note: 40011 "
                "is a Modicon holding-register number; using holding offset 10"
            ],
        )
        assert point_address(path, "pump1", "status") == ("holding", 10)

    def test_off_keeps_offsets_without_note(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',
            "modicon_addresses = false",
            "points.sunspec_id = { table = 'holding', address = 40000 }",
            "points.status = { table = 'holding', address = 40011 }",
            "points.power = { address = 40083 }",
        )

        assert report_lines(path) == ([], [])
        assert point_address(path, "pump1", "sunspec_id") == ("holding", 40000)
        assert point_address(path, "pump1", "status") == ("holding", 40011)
        assert point_address(path, "pump1", "power") == ("holding", 40083)

    def test_off_keeps_waveform_offsets(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',
            "modicon_addresses = false",
            "[devices.pump1.waveforms.accel]",
            "block_address = 31001",
            "max_samples = 1024",
            "sample_count_address = 40107",
            "sample_rate_address = 30105",
            "sequence_address = 30103",
            "trigger_address = 40101",
        )

        assert report_lines(path) == ([], [])
        specs = build_device_specs(load_settings(path, environ={}))
        (waveform,) = specs["pump1"].waveforms
        assert waveform.table.value == "input"
        assert waveform.block_address == 31001
        assert waveform.sample_count_address == 40107
        assert waveform.trigger_address == 40101

    def test_environment_turns_conversion_off(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',
            "points.status = { table = 'holding', address = 40011 }",
        )
        environ = {"CMAGENT_DEVICES__PUMP1__MODICON_ADDRESSES": "false"}

        settings = load_settings(path, environ=environ)

        assert settings.devices["pump1"].points["status"].address == 40011

    def test_invalid_switch_reported(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',  # 5
            'modicon_addresses = "sometimes"',  # 6
            "points.status = { address = 40011 }",  # 7
        )

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:6: devices.pump1.modicon_addresses: expected true or "
            "false, found 'sometimes'"
        ]

    def test_profile_switch_covers_its_points_only(self, tmp_path: Path) -> None:
        devices = tmp_path / "devices"
        devices.mkdir()
        write(
            devices / "inverter.toml",
            [
                "[profile]",
                'name = "inverter"',
                'protocol = "modbus"',
                "modicon_addresses = false",
                "[points.sunspec_id]",
                'table = "holding"',
                "address = 40000",
                'type = "uint32"',
                "[points.status]",
                'table = "holding"',
                "address = 40107",
            ],
        )
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',  # 5
            'profile = "inverter"',  # 6
            "points.alarm_word = { address = 40011 }",  # 7
        )

        assert report_lines(path) == (
            [],
            [
                f"{path}:7: devices.pump1.points.alarm_word.address: note: "
                "40011 is a Modicon holding-register number; using holding "
                "offset 10"
            ],
        )
        assert point_address(path, "pump1", "sunspec_id") == ("holding", 40000)
        assert point_address(path, "pump1", "status") == ("holding", 40107)
        assert point_address(path, "pump1", "alarm_word") == ("holding", 10)

    def test_opcua_profile_has_no_switch(self, tmp_path: Path) -> None:
        devices = tmp_path / "devices"
        devices.mkdir()
        profile = write(
            devices / "ua.toml",
            [
                "[profile]",
                'name = "ua"',
                'protocol = "opcua"',
                "modicon_addresses = false",
            ],
        )
        path = write(
            tmp_path / "agent.toml",
            [
                "[assets.fan]",
                "[devices.ua]",
                'driver = "opcua"',
                'asset = "fan"',
                'endpoint = "opc.tcp://127.0.0.1:4840"',
                'profile = "ua"',
            ],
        )

        problems, _ = report_lines(path)

        assert problems == [
            f"{profile}:4: profile.modicon_addresses: unknown key 'modicon_addresses'"
        ]


class TestSixDigitModiconNumber:
    @pytest.mark.parametrize(
        ("number", "table", "offset"),
        [(400001, "holding", 0), (400011, "holding", 10), (365536, "input", 65535)],
    )
    def test_point_address_gets_hint(
        self, tmp_path: Path, number: int, table: str, offset: int
    ) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',  # 5
            f"points.status = {{ address = {number} }}",  # 6
        )
        leading = str(number)[0]

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:6: devices.pump1.points.status.address: expected a value "
            f"<= 65535, found {number}; {number} looks like a six-digit "
            f"Modicon number ({leading}xxxxx is {table} offset xxxxx - 1), so "
            f"write table = {table!r} and address = {offset}"
        ]

    def test_waveform_block_address_gets_hint(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',  # 5
            "[devices.pump1.waveforms.accel]",  # 6
            "block_address = 301001",  # 7
            "max_samples = 1024",  # 8
            "sample_count_address = 0",  # 9
            "sample_rate_address = 2",  # 10
            "sequence_address = 4",  # 11
        )

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:7: devices.pump1.waveforms.accel.block_address: expected a "
            "value <= 65535, found 301001; 301001 looks like a six-digit "
            "Modicon number (3xxxxx is input offset xxxxx - 1), so write "
            "table = 'input' and block_address = 1000"
        ]

    def test_write_address_hint_leaves_table(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path,
            'host = "127.0.0.1"',  # 5
            "[devices.pump1.waveforms.accel]",  # 6
            "block_address = 1000",  # 7
            "max_samples = 1024",  # 8
            "sample_count_address = 0",  # 9
            "sample_rate_address = 2",  # 10
            "sequence_address = 4",  # 11
            "trigger_address = 400101",  # 12
        )

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:12: devices.pump1.waveforms.accel.trigger_address: "
            "expected a value <= 65535, found 400101; 400101 looks like a "
            "six-digit Modicon number (4xxxxx is holding offset xxxxx - 1), so "
            "write trigger_address = 100"
        ]

    def test_other_large_number_has_no_hint(self, tmp_path: Path) -> None:
        path = modbus_config(
            tmp_path, 'host = "127.0.0.1"', "points.status = { address = 500001 }"
        )

        problems, _ = report_lines(path)

        assert problems == [
            f"{path}:6: devices.pump1.points.status.address: expected a value "
            "<= 65535, found 500001"
        ]
