"""Messages of the OPC UA driver when a connect fails.

Each names the endpoint and the next step to take, and no login that the
endpoint URL may contain.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest

from drivers.base import Reading
from drivers.errors import DriverConnectError, DriverTimeoutError
from drivers.opcua import OpcUaDriver
from drivers.opcua_errors import translate_error
from drivers.spec import OpcUaNodeRef, OpcUaPointSpec, OpcUaSpec

SIM = "{urn:cmagent:sim}"
ROOT = (f"{SIM}Sensors", f"{SIM}Motor4")
RECORDING = "inner_race_007_105"
PUBLISHING_INTERVAL_S = 1.0
NOT_YET = "no value received yet"


def browse(*names: str) -> OpcUaNodeRef:
    return OpcUaNodeRef(browse_path=(*ROOT, *(f"{SIM}{name}" for name in names)))


def make_spec(endpoint: str, **overrides: object) -> OpcUaSpec:
    points = (
        OpcUaPointSpec(name="rpm", asset="motor4", node=browse("Rpm")),
        OpcUaPointSpec(
            name="temperature",
            asset="motor4",
            node=browse("Temperature"),
        ),
        OpcUaPointSpec(
            name="sample_rate",
            asset="motor4",
            node=browse("SampleRate"),
        ),
        OpcUaPointSpec(name="ghost", asset="motor4", node=browse("Ghost")),
    )
    base = OpcUaSpec(
        device_id="motor4-ua",
        endpoint=endpoint,
        connect_timeout_s=5.0,
        request_timeout_s=1.0,
        publishing_interval_s=PUBLISHING_INTERVAL_S,
        points=points,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def by_point(readings: list[Reading]) -> dict[str, Reading]:
    return {reading.point: reading for reading in readings}


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A listening socket that completes TCP handshakes and never replies."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


class TestConnectFailure:
    async def test_refused_port_names_next_step(self, closed_port: int) -> None:
        endpoint = f"opc.tcp://127.0.0.1:{closed_port}/cmagent/sim"
        opcua = OpcUaDriver(make_spec(endpoint))

        with pytest.raises(DriverConnectError) as caught:
            await opcua.connect()

        message = str(caught.value)
        assert endpoint in message
        assert "connection refused" in message
        expected = (
            f"check that an OPC UA server listens on 127.0.0.1 port {closed_port}"
        )
        assert expected in message
        assert "Errno" not in message

    async def test_login_in_endpoint_not_shown(self, closed_port: int) -> None:
        without_login = f"opc.tcp://127.0.0.1:{closed_port}/cmagent/sim"
        endpoint = without_login.replace("//", "//operator:s3cret-pw@", 1)
        opcua = OpcUaDriver(make_spec(endpoint))

        with pytest.raises(DriverConnectError) as caught:
            await opcua.connect()

        message = str(caught.value)
        assert "s3cret-pw" not in message
        assert "operator" not in message
        assert without_login in message

    def test_unresolved_host_names_next_step(self) -> None:
        # A real lookup would query the resolver, so the error is built.
        spec = make_spec("opc.tcp://plc7.plant.example:4840")
        exc = socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        error = translate_error(exc, spec, action="connect")

        message = str(error)
        assert isinstance(error, DriverConnectError)
        assert "opc.tcp://plc7.plant.example:4840" in message
        assert "host name 'plc7.plant.example' could not be resolved" in message
        assert "check the host in the endpoint" in message

    async def test_connect_timeout_names_next_step(self, black_hole: int) -> None:
        endpoint = f"opc.tcp://127.0.0.1:{black_hole}/silent"
        opcua = OpcUaDriver(make_spec(endpoint, connect_timeout_s=0.5))

        with pytest.raises(DriverTimeoutError) as caught:
            await opcua.connect()

        message = str(caught.value)
        assert endpoint in message
        assert "timed out after 0.5 s (connect_timeout)" in message
        assert f"check that 127.0.0.1 port {black_hole} is reachable" in message

    def test_request_timeout_names_next_step(self) -> None:
        # asyncua raises TimeoutError when the TCP connect or a session
        # set-up request gets no response within request_timeout. A firewall
        # that drops packets causes this, and loopback cannot reproduce it.
        endpoint = "opc.tcp://127.0.0.1:4840/cmagent/sim"
        spec = make_spec(endpoint, request_timeout_s=0.3)

        error = translate_error(TimeoutError(), spec, action="connect")

        message = str(error)
        assert isinstance(error, DriverTimeoutError)
        assert endpoint in message
        assert "no response within 0.3 s (request_timeout)" in message
        assert "check that 127.0.0.1 port 4840 is reachable" in message
