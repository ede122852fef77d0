"""The OPC UA driver from connect to its first subscribed values.

Covers the readings before a subscription's first publish, the messages of
failed connects, and the check of the endpoint path against the server's
endpoint list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from asyncua.server.internal_subscription import InternalSubscription

from drivers.base import QualityStatus, Reading
from drivers.errors import DriverConnectError, DriverTimeoutError
from drivers.opcua import OpcUaDriver
from drivers.opcua_errors import translate_error
from drivers.sim.opcua_server import OpcUaSimulator
from drivers.sim.recordings import load_recording
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
def late_first_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the simulator send a subscription's first publish one interval late.

    An asyncua 2.1 server publishes at once when a Publish request is
    waiting, so the first values usually arrive while the client connects.
    A server may also send them only at the end of the first publishing
    interval. This fixture starts the publishing loop of each new
    subscription one interval late, through a private method of asyncua 2.1.
    """
    start_loop = InternalSubscription._subscription_loop

    async def start_loop_late(self: InternalSubscription) -> None:
        await asyncio.sleep(self.data.RevisedPublishingInterval / 1000.0)
        await start_loop(self)

    monkeypatch.setattr(InternalSubscription, "_subscription_loop", start_loop_late)


@pytest.fixture
async def simulator() -> AsyncIterator[OpcUaSimulator]:
    sim = OpcUaSimulator(update_period_s=60.0)
    await sim.start()
    yield sim
    await sim.stop()


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


@pytest.mark.usefixtures("late_first_publish")
class TestBeforeFirstPublish:
    async def test_reads_poll_until_first_publish(
        self, simulator: OpcUaSimulator
    ) -> None:
        opcua = OpcUaDriver(make_spec(simulator.endpoint))
        polls: list[dict[str, Reading]] = []
        await opcua.connect()
        connected_at = time.monotonic()
        try:
            for _ in range(4):
                polls.append(by_point(await opcua.read_points()))
                await asyncio.sleep(0.1)
            elapsed_s = time.monotonic() - connected_at
        finally:
            await opcua.close()

        # All four reads came before the first publish.
        assert elapsed_s < PUBLISHING_INTERVAL_S
        recording = load_recording(RECORDING)
        for readings in polls:
            for name in ("rpm", "temperature", "sample_rate"):
                assert readings[name].quality.is_good, readings[name]
            assert readings["rpm"].value == recording.rpm
            assert readings["sample_rate"].value == recording.fs_hz

    async def test_missing_node_keeps_its_reason(
        self, simulator: OpcUaSimulator
    ) -> None:
        opcua = OpcUaDriver(make_spec(simulator.endpoint))
        await opcua.connect()
        try:
            polled = by_point(await opcua.read_points())["ghost"]
            await asyncio.sleep(PUBLISHING_INTERVAL_S * 1.5)
            notified = by_point(await opcua.read_points())["ghost"]
        finally:
            await opcua.close()

        for reading in (polled, notified):
            assert reading.quality.status is QualityStatus.BAD
            assert "BadNoMatch" in reading.quality.detail
            assert NOT_YET not in reading.quality.detail

    async def test_notified_values_after_first_publish(
        self, simulator: OpcUaSimulator
    ) -> None:
        opcua = OpcUaDriver(make_spec(simulator.endpoint))
        await opcua.connect()
        try:
            await asyncio.sleep(PUBLISHING_INTERVAL_S * 1.5)
            # A mute server times a poll out, so good values now come
            # from the subscription.
            simulator.stop_answering()
            readings = by_point(await opcua.read_points())
        finally:
            simulator.resume_answering()
            await opcua.close()

        recording = load_recording(RECORDING)
        assert readings["rpm"].quality.is_good
        assert readings["rpm"].value == recording.rpm
        assert readings["temperature"].quality.is_good
        assert readings["ghost"].quality.status is QualityStatus.BAD


class TestUnmonitoredNode:
    async def test_rejected_item_is_polled(self, simulator: OpcUaSimulator) -> None:
        # An object node has no Value attribute, so the server rejects
        # monitoring it and a Read returns BadAttributeIdInvalid.
        spec = make_spec(simulator.endpoint, publishing_interval_s=0.2)
        folder = OpcUaPointSpec(
            name="folder", asset="motor4", node=OpcUaNodeRef(browse_path=ROOT)
        )
        opcua = OpcUaDriver(dataclasses.replace(spec, points=(*spec.points, folder)))
        await opcua.connect()
        try:
            first = by_point(await opcua.read_points())
            await asyncio.sleep(0.5)
            later = by_point(await opcua.read_points())
        finally:
            await opcua.close()

        for readings in (first, later):
            assert readings["folder"].quality.status is QualityStatus.BAD
            assert readings["folder"].quality.detail == "BadAttributeIdInvalid"
            assert readings["rpm"].quality.is_good


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


def mismatch_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.getMessage() == "opcua.endpoint_url_mismatch"
    ]


class TestEndpointPath:
    async def test_wrong_path_warns_once_per_connect(
        self, simulator: OpcUaSimulator, caplog: pytest.LogCaptureFixture
    ) -> None:
        endpoint = f"opc.tcp://127.0.0.1:{simulator.port}/wrong/path"
        opcua = OpcUaDriver(make_spec(endpoint))

        with caplog.at_level(logging.WARNING, logger="drivers.opcua"):
            await opcua.connect()
            try:
                readings = by_point(await opcua.read_points())
                await opcua.read_points()
                after_first = len(mismatch_records(caplog))
                await opcua.close()
                await opcua.connect()
            finally:
                await opcua.close()

        records = mismatch_records(caplog)
        assert after_first == 1
        assert len(records) == 2
        record = records[0]
        assert record.levelno == logging.WARNING
        assert record.__dict__["device"] == "motor4-ua"
        assert record.__dict__["endpoint"] == endpoint
        assert record.__dict__["server_endpoints"] == [simulator.endpoint]
        assert readings["rpm"].quality.is_good

    @pytest.mark.parametrize("suffix", ["", "/"])
    async def test_server_path_gives_no_warning(
        self,
        simulator: OpcUaSimulator,
        caplog: pytest.LogCaptureFixture,
        suffix: str,
    ) -> None:
        opcua = OpcUaDriver(make_spec(simulator.endpoint + suffix))

        with caplog.at_level(logging.WARNING, logger="drivers.opcua"):
            await opcua.connect()
            await opcua.close()

        assert mismatch_records(caplog) == []
