"""OPC UA nodes that the server does not have, or does not have yet.

A well-formed reference that matches nothing is a runtime condition: the
device task retries the connection, and a node that the server adds later
is found. Malformed references stay configuration errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest
from asyncua import Server, ua

from agent.devices_runtime import DeviceRunner, DeviceState, Schedule
from drivers.base import Reading, Waveform
from drivers.errors import DriverConfigError
from drivers.opcua import DriverState, OpcUaDriver
from drivers.opcua_errors import NodeNotFoundError
from drivers.sim.opcua_server import OpcUaSimulator
from drivers.spec import OpcUaNodeRef, OpcUaPointSpec, OpcUaSpec, OpcUaWaveformSpec

SIM = "{urn:cmagent:sim}"
GROWN_URI = "urn:test:grown"
GROWN = "{" + GROWN_URI + "}"


def device_spec(endpoint: str, root: Sequence[str], *, prefix: str = SIM) -> OpcUaSpec:
    """Return a device whose points and waveform are all under ``root``."""

    def under_root(name: str) -> OpcUaNodeRef:
        return OpcUaNodeRef(browse_path=(*root, f"{prefix}{name}"))

    points = (
        OpcUaPointSpec(name="rpm", asset="m1", node=under_root("Rpm")),
        OpcUaPointSpec(name="temperature", asset="m1", node=under_root("Temperature")),
    )
    waveform = OpcUaWaveformSpec(
        name="accel",
        asset="m1",
        samples=under_root("Waveform"),
        sample_rate=under_root("SampleRate"),
    )
    return OpcUaSpec(
        device_id="m1-ua",
        endpoint=endpoint,
        connect_timeout_s=5.0,
        request_timeout_s=2.0,
        publishing_interval_s=0.2,
        use_subscriptions=False,
        points=points,
        waveforms=(waveform,),
    )


@pytest.fixture
async def simulator() -> AsyncIterator[OpcUaSimulator]:
    sim = OpcUaSimulator(update_period_s=60.0)
    await sim.start()
    yield sim
    await sim.stop()


class GrowingServer:
    """An asyncua server that starts empty and gets its nodes later."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.index = 0

    @property
    def endpoint(self) -> str:
        assert self.server.bserver is not None
        return f"opc.tcp://127.0.0.1:{self.server.bserver.port}/grown"

    async def add_namespace_and_folder(self) -> ua.NodeId:
        self.index = await self.server.register_namespace(GROWN_URI)
        folder = await self.server.nodes.objects.add_folder(
            ua.NodeId("Sensors", self.index), ua.QualifiedName("Sensors", self.index)
        )
        return folder.nodeid

    async def add_variables(self, values: dict[str, object]) -> None:
        folder = self.server.get_node(ua.NodeId("Sensors", self.index))
        for name, value in values.items():
            await folder.add_variable(
                ua.NodeId(f"Sensors.{name}", self.index),
                ua.QualifiedName(name, self.index),
                value,
            )


@pytest.fixture
async def growing() -> AsyncIterator[GrowingServer]:
    server = Server()
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/grown")
    server.socket_address = ("127.0.0.1", 0)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    await server.start()
    yield GrowingServer(server)
    await server.stop()


GROWN_VALUES: dict[str, object] = {
    "Rpm": ua.Variant(1797.0, ua.VariantType.Double),
    "Temperature": ua.Variant(48.5, ua.VariantType.Double),
    "Waveform": ua.Variant([0.5, -0.5, 0.25], ua.VariantType.Double),
    "SampleRate": ua.Variant(12000.0, ua.VariantType.Double),
}


class TestNodeNotFound:
    async def test_wrong_root_fails_connect(self, simulator: OpcUaSimulator) -> None:
        root = (f"{SIM}Sensors", f"{SIM}Motor9")
        opcua = OpcUaDriver(device_spec(simulator.endpoint, root))
        with pytest.raises(NodeNotFoundError) as caught:
            await opcua.connect()
        state = opcua.state
        await opcua.close()

        error = caught.value
        assert not isinstance(error, DriverConfigError)
        assert error.device == "m1-ua"
        assert error.endpoint == simulator.endpoint
        assert len(error.missing) == 4
        assert state is DriverState.DISCONNECTED
        message = str(error)
        assert simulator.endpoint in message
        assert f"/{SIM}Sensors/{SIM}Motor9/{SIM}Rpm" in message
        assert "BadNoMatch" in message
        # The simulator serves one sensor folder, Motor4, under Sensors.
        assert f"deepest element found is /{SIM}Sensors," in message
        assert f"which contains {SIM}Motor4" in message
        assert "browse_root" in message

    async def test_missing_namespace_names_uris(self) -> None:
        other = OpcUaSimulator(update_period_s=60.0, namespace_uri="urn:other")
        await other.start()
        try:
            root = (f"{SIM}Sensors", f"{SIM}Motor4")
            opcua = OpcUaDriver(device_spec(other.endpoint, root))
            with pytest.raises(NodeNotFoundError) as caught:
                await opcua.connect()
            await opcua.close()
        finally:
            await other.stop()

        message = str(caught.value)
        assert "namespace 'urn:cmagent:sim' not on server" in message
        assert "'urn:other'" in message
        assert "urn:other" in caught.value.namespaces

    async def test_malformed_reference_stays_config_error(self) -> None:
        spec = device_spec("opc.tcp://127.0.0.1:4840", (f"{SIM}Sensors",))
        bad = OpcUaPointSpec(
            name="rpm", asset="m1", node=OpcUaNodeRef(node_id="ns=2;s=Rpm")
        )
        with pytest.raises(DriverConfigError):
            OpcUaDriver(
                OpcUaSpec(
                    device_id=spec.device_id, endpoint=spec.endpoint, points=(bad,)
                )
            )

    async def test_partly_missing_logs_one_line(
        self, simulator: OpcUaSimulator, caplog: pytest.LogCaptureFixture
    ) -> None:
        root = (f"{SIM}Sensors", f"{SIM}Motor4")
        spec = device_spec(simulator.endpoint, root)
        ghosts = tuple(
            OpcUaPointSpec(
                name=name,
                asset="m1",
                node=OpcUaNodeRef(browse_path=(*root, f"{SIM}{name}")),
            )
            for name in ("Ghost1", "Ghost2", "Ghost3")
        )
        opcua = OpcUaDriver(
            OpcUaSpec(
                device_id=spec.device_id,
                endpoint=spec.endpoint,
                use_subscriptions=False,
                points=(*spec.points, *ghosts),
            )
        )
        with caplog.at_level(logging.WARNING, logger="drivers.opcua"):
            await opcua.connect()
        readings = {r.point: r for r in await opcua.read_points()}
        await opcua.close()

        records = [r for r in caplog.records if r.name == "drivers.opcua"]
        assert [r.getMessage() for r in records] == ["opcua.nodes_not_found"]
        assert records[0].missing == 3
        assert records[0].configured == 5
        assert f"/{SIM}Sensors/{SIM}Motor4/{SIM}Ghost1 and 2 more" in (records[0].cause)
        assert readings["rpm"].quality.is_good
        assert not readings["Ghost2"].quality.is_good

    async def test_missing_waveform_node_not_config_error(
        self, simulator: OpcUaSimulator
    ) -> None:
        root = (f"{SIM}Sensors", f"{SIM}Motor4")
        spec = device_spec(simulator.endpoint, root)
        waveform = OpcUaWaveformSpec(
            name="accel",
            asset="m1",
            samples=OpcUaNodeRef(browse_path=(*root, f"{SIM}Waveform2")),
            sample_rate=spec.waveforms[0].sample_rate,
        )
        opcua = OpcUaDriver(
            OpcUaSpec(
                device_id=spec.device_id,
                endpoint=spec.endpoint,
                use_subscriptions=False,
                points=spec.points,
                waveforms=(waveform,),
            )
        )
        await opcua.connect()
        with pytest.raises(NodeNotFoundError) as caught:
            await opcua.read_waveform("accel")
        await opcua.close()

        assert not isinstance(caught.value, DriverConfigError)
        assert f"{SIM}Waveform2" in str(caught.value)
        assert "samples" in str(caught.value)


class TestGrowingAddressSpace:
    async def test_nodes_found_once_added(self, growing: GrowingServer) -> None:
        opcua = OpcUaDriver(
            device_spec(growing.endpoint, (f"{GROWN}Sensors",), prefix=GROWN)
        )

        with pytest.raises(NodeNotFoundError, match=f"namespace '{GROWN_URI}'"):
            await opcua.connect()

        await growing.add_namespace_and_folder()
        with pytest.raises(NodeNotFoundError) as caught:
            await opcua.connect()
        assert f"deepest element found is /{GROWN}Sensors, which is empty" in (
            str(caught.value)
        )

        await growing.add_variables(GROWN_VALUES)
        await opcua.connect()
        readings = {r.point: r for r in await opcua.read_points()}
        waveform = await opcua.read_waveform("accel")
        await opcua.close()

        assert readings["rpm"].value == 1797.0
        assert readings["temperature"].value == 48.5
        assert waveform.fs_hz == 12000.0
        assert waveform.samples.tolist() == [0.5, -0.5, 0.25]

    async def test_long_folder_listing_truncated(self, growing: GrowingServer) -> None:
        await growing.add_namespace_and_folder()
        names = [f"Channel{number:02d}" for number in range(1, 16)]
        await growing.add_variables(
            {name: ua.Variant(0.0, ua.VariantType.Double) for name in names}
        )
        opcua = OpcUaDriver(
            device_spec(growing.endpoint, (f"{GROWN}Sensors",), prefix=GROWN)
        )
        with pytest.raises(NodeNotFoundError) as caught:
            await opcua.connect()
        await opcua.close()

        message = str(caught.value)
        listed = [name for name in names if f"{GROWN}{name}" in message]
        # The server returns children in the order they were added. The
        # asyncua 2.1 server ignores the requested maximum and returns all
        # 15, so the driver counts the 5 it leaves out.
        assert listed == names[:10]
        assert f"{GROWN}Channel10 and 5 more." in message

    async def test_device_task_retries_until_found(
        self, growing: GrowingServer
    ) -> None:
        spec = device_spec(growing.endpoint, (f"{GROWN}Sensors",), prefix=GROWN)
        sink = RecordingSink()
        schedule = Schedule(
            poll_interval_s=0.1,
            waveform_interval_s=60.0,
            backoff_initial_s=0.1,
            backoff_max_s=0.2,
        )
        runner = DeviceRunner(spec, schedule, OpcUaDriver, sink)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await wait_for_state(runner, DeviceState.DOWN)
            assert runner.last_error is not None
            assert "not on server" in runner.last_error

            await growing.add_namespace_and_folder()
            await growing.add_variables(GROWN_VALUES)
            await wait_for_state(runner, DeviceState.CONNECTED)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10.0)

        good = [r for r in sink.received if r.point == "rpm" and r.quality.is_good]
        assert good
        assert good[-1].value == 1797.0
        assert sink.waveforms[-1].fs_hz == 12000.0


class RecordingSink:
    """A sink that stores the readings and waveforms of a device task."""

    def __init__(self) -> None:
        self.received: list[Reading] = []
        self.waveforms: list[Waveform] = []

    def readings(self, device_id: str, readings: Sequence[Reading]) -> None:
        self.received.extend(readings)

    def waveform(self, device_id: str, waveform: Waveform) -> None:
        self.waveforms.append(waveform)

    def beat(self, device_id: str) -> None:
        pass


async def wait_for_state(
    runner: DeviceRunner, state: DeviceState, timeout_s: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while runner.state is not state:
        if loop.time() > deadline:
            raise AssertionError(
                f"device state {runner.state.value}, expected {state.value} "
                f"within {timeout_s} s; last error {runner.last_error!r}"
            )
        await asyncio.sleep(0.05)
