"""``cmagent sim`` start-up failures, run as a user runs the command."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
