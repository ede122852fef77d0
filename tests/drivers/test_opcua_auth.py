"""OPC UA user name and password login against a real asyncua server.

The server on loopback accepts only user name tokens and checks them with
its own user manager, so anonymous and wrong logins are rejected by the
server itself, as a plant server would.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole

from drivers.errors import DriverConnectError
from drivers.opcua import OpcUaDriver, OpcUaLoginError
from drivers.spec import OpcUaNodeRef, OpcUaPointSpec, OpcUaSpec

NAMESPACE = "urn:cmagent:test:auth"
USERNAME = "maintenance"
PASSWORD = "Vx7-correct-horse-41"
WRONG_PASSWORD = "Qz3-wrong-battery-77"
TEMPERATURE_C = 41.5


class OneUserManager:
    """Accepts exactly one user name and password pair."""

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username == USERNAME and password == PASSWORD:
            return User(role=UserRole.User, name=username)
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    url = f"opc.tcp://127.0.0.1:{free_port()}/cmagent/auth"
    server = Server(user_manager=OneUserManager())  # type: ignore[arg-type]
    await server.init()
    server.set_endpoint(url)
    server.set_security_IDs(["Username"])
    index = await server.register_namespace(NAMESPACE)
    sensor = await server.nodes.objects.add_object(index, "Pump7")
    await sensor.add_variable(
        ua.NodeId("Pump7.Temperature", index), "Temperature", TEMPERATURE_C
    )
    await server.start()
    yield url
    await server.stop()


def make_spec(url: str, *, username: str | None, password: str | None) -> OpcUaSpec:
    point = OpcUaPointSpec(
        name="temperature",
        asset="pump7",
        node=OpcUaNodeRef(node_id=f"nsu={NAMESPACE};s=Pump7.Temperature"),
        unit="°C",
    )
    return OpcUaSpec(
        device_id="pump7-ua",
        endpoint=url,
        username=username,
        password=password,
        connect_timeout_s=5.0,
        request_timeout_s=2.0,
        use_subscriptions=False,
        points=(point,),
    )


class TestOpcUaLogin:
    async def test_right_password_connects_and_reads(self, endpoint: str) -> None:
        driver = OpcUaDriver(make_spec(endpoint, username=USERNAME, password=PASSWORD))
        try:
            await driver.connect()
            readings = await driver.read_points()
        finally:
            await driver.close()

        assert [r.point for r in readings] == ["temperature"]
        assert readings[0].value == pytest.approx(TEMPERATURE_C)

    async def test_wrong_password_names_device_and_user(
        self, endpoint: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        spec = make_spec(endpoint, username=USERNAME, password=WRONG_PASSWORD)
        driver = OpcUaDriver(spec)

        with pytest.raises(OpcUaLoginError) as caught:
            await driver.connect()
        await driver.close()

        error = caught.value
        message = str(error)
        assert isinstance(error, DriverConnectError)
        assert "'pump7-ua'" in message
        assert endpoint in message
        assert f"'{USERNAME}'" in message
        assert "BadUserAccessDenied" in message
        assert error.device == "pump7-ua"
        assert error.endpoint == endpoint
        assert error.username == USERNAME
        assert error.status == "BadUserAccessDenied"
        assert driver.last_error is error

    async def test_wrong_password_never_shown(
        self, endpoint: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        spec = make_spec(endpoint, username=USERNAME, password=WRONG_PASSWORD)
        driver = OpcUaDriver(spec)

        with pytest.raises(OpcUaLoginError) as caught:
            await driver.connect()
        await driver.close()

        error = caught.value
        assert WRONG_PASSWORD not in str(error)
        assert WRONG_PASSWORD not in repr(error)
        assert WRONG_PASSWORD not in repr(vars(error))
        assert WRONG_PASSWORD not in repr(spec)
        assert WRONG_PASSWORD not in caplog.text
        for record in caplog.records:
            assert WRONG_PASSWORD not in repr(vars(record))

    async def test_missing_password_is_rejected(self, endpoint: str) -> None:
        driver = OpcUaDriver(make_spec(endpoint, username=USERNAME, password=None))

        with pytest.raises(OpcUaLoginError) as caught:
            await driver.connect()
        await driver.close()

        assert "without a password" in str(caught.value)

    async def test_anonymous_login_is_rejected(self, endpoint: str) -> None:
        driver = OpcUaDriver(make_spec(endpoint, username=None, password=None))

        with pytest.raises(OpcUaLoginError) as caught:
            await driver.connect()
        await driver.close()

        assert "anonymous login" in str(caught.value)
        assert caught.value.username is None


class TestOpcUaSpecPassword:
    def test_repr_leaves_out_password(self) -> None:
        spec = make_spec(
            "opc.tcp://127.0.0.1:4840", username=USERNAME, password=PASSWORD
        )

        assert PASSWORD not in repr(spec)
        assert "password" not in repr(spec)
        assert USERNAME in repr(spec)
