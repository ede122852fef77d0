"""Device addresses: OPC UA endpoints, Modbus hosts and Modicon numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config_check import inspect_config


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
