"""An OPC UA server that replays real bearing recordings, with faults.

Each sensor is a folder ``Objects/Sensors/<name>`` in the simulator's
namespace (``urn:cmagent:sim`` by default) with these variables, whose
string node ids are ``<name>.<Variable>``:

=================  ============================================================
``Waveform``       Double array, the newest N samples of the recording in g
``SampleRate``     Double, Hz
``Rpm``            Double, the recorded shaft speed
``Sequence``       UInt32, incremented with each new waveform
``VelocityRms``    Double, mm/s over 10-1000 Hz of the current waveform
``AccelerationRms`` Double, g, of the current waveform
``Temperature``    Double, degrees Celsius
=================  ============================================================

The recording plays in real time: every ``update_period_s`` the waveform
moves on by that many seconds of samples and wraps at the end. Clients
connect through a :class:`~drivers.sim.opcua_relay.FaultRelay`, so the
simulator can delay, mute or cut connections, and can restart its server
with other namespaces registered first so namespace indices move while
browse paths and ``nsu=`` node ids stay the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
from asyncua import Server, ua
from numpy.typing import NDArray

from drivers.sim.opcua_relay import FaultRelay
from drivers.sim.recordings import Recording, load_recording

logger = logging.getLogger(__name__)

SIM_NAMESPACE_URI: Final = "urn:cmagent:sim"
SERVER_APPLICATION_URI: Final = "urn:cmagent:sim:server"
SENSORS_FOLDER: Final = "Sensors"
"""Folder below Objects that contains one object per sensor."""
SENSOR_PROFILE: Final = "vib-opcua"
"""Device profile in ``config/devices/`` that reads a simulated sensor."""
STANDARD_GRAVITY_MM_S2: Final = 9806.65
VELOCITY_BAND_HZ: Final = (10.0, 1000.0)

# Registered ahead of the simulator's namespace on a reordering restart, so
# its index moves up by this many places.
_DISPLACING_NAMESPACES: Final = (
    "urn:cmagent:sim:displaced:a",
    "urn:cmagent:sim:displaced:b",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSensorConfig:
    """One simulated vibration sensor.

    ``recording`` names a shipped recording (see
    :func:`drivers.sim.recordings.recording_names`); ``waveform_samples`` is
    the length of the ``Waveform`` array.
    """

    name: str = "Motor4"
    recording: str = "inner_race_007_105"
    waveform_samples: int = 65536
    temperature_c: float = 48.0


DEFAULT_SENSORS: Final = (SimSensorConfig(),)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedSensor:
    """One sensor of the simulator, as described when it starts.

    ``browse_path`` starts below the Objects folder, and every name in it
    is in the simulator's namespace.
    """

    browse_path: tuple[str, ...]
    model: str = "vibration sensor"
    recording: str
    profile: str = SENSOR_PROFILE


@dataclass(slots=True, kw_only=True)
class _SensorState:
    config: SimSensorConfig
    recording: Recording
    sequence: int = 0
    window_end: int = 0


def velocity_rms_mm_s(samples_g: NDArray[np.float64], fs_hz: float) -> float:
    """Compute velocity RMS in mm/s over 10-1000 Hz from acceleration in g.

    Integrates in the frequency domain (divides each bin by j*2*pi*f) and
    sums the band with Parseval's theorem for a one-sided spectrum.
    """
    count = samples_g.size
    spectrum = np.fft.rfft(samples_g * STANDARD_GRAVITY_MM_S2)
    freqs = np.fft.rfftfreq(count, d=1.0 / fs_hz)
    band = (freqs >= VELOCITY_BAND_HZ[0]) & (freqs <= VELOCITY_BAND_HZ[1])
    velocity = spectrum[band] / (2.0 * np.pi * freqs[band])
    return float(np.sqrt(2.0 * np.sum(np.abs(velocity) ** 2)) / count)


class OpcUaSimulator:
    """An OPC UA vibration sensor server on loopback.

    Args:
        host: address to listen on.
        port: public port; 0 picks a free one, read back from :attr:`port`.
        sensors: the sensors to serve; one ``Motor4`` sensor replaying
            ``inner_race_007_105`` when None.
        namespace_uri: the namespace of the sensor nodes.
        certificate_path: server certificate (PEM or DER). With it and
            ``private_key_path`` the server also offers Basic256Sha256 Sign
            and SignAndEncrypt, and accepts any client certificate.
        private_key_path: the server certificate's private key (PEM).
        update_period_s: how often a new waveform is published.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        sensors: Sequence[SimSensorConfig] | None = None,
        *,
        namespace_uri: str = SIM_NAMESPACE_URI,
        certificate_path: Path | str | None = None,
        private_key_path: Path | str | None = None,
        update_period_s: float = 2.0,
    ) -> None:
        configs = tuple(sensors) if sensors is not None else DEFAULT_SENSORS
        self.host = host
        self.namespace_uri = namespace_uri
        self.update_period_s = update_period_s
        self._certificate_path = certificate_path
        self._private_key_path = private_key_path
        self._relay = FaultRelay(host, port)
        self._server: Server | None = None
        self._namespace_index = 0
        self._updater: asyncio.Task[None] | None = None
        self._statuses: dict[tuple[str, str], ua.StatusCode] = {}
        self._sensors = [
            _SensorState(config=c, recording=load_recording(c.recording))
            for c in configs
        ]
        self._started_at = time.monotonic()

    # --- lifecycle ------------------------------------------------------------

    @property
    def port(self) -> int:
        """The public port clients connect to."""
        return self._relay.port

    @property
    def endpoint(self) -> str:
        """The endpoint URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}/cmagent/sim"

    @property
    def namespace_index(self) -> int:
        """The current index of :attr:`namespace_uri` in the NamespaceArray."""
        return self._namespace_index

    def served_sensors(self) -> list[ServedSensor]:
        """Describe every sensor the simulator serves."""
        return [
            ServedSensor(
                browse_path=(SENSORS_FOLDER, state.config.name),
                recording=state.recording.name,
            )
            for state in self._sensors
        ]

    async def start(self) -> None:
        """Start the relay and the OPC UA server behind it."""
        await self._relay.start()
        await self._start_server(extra_namespaces=())

    async def stop(self) -> None:
        """Stop the server and the relay, closing every client connection."""
        await self._stop_server()
        await self._relay.stop()

    async def restart(self, reorder_namespaces: bool = False) -> None:
        """Replace the server by a new instance on the same public port.

        Clients lose their connection and session. With
        ``reorder_namespaces`` the new server registers other namespaces
        first, so the sensor namespace gets a higher index.
        """
        await self._stop_server()
        await self._relay.drop_connections()
        extra = _DISPLACING_NAMESPACES if reorder_namespaces else ()
        await self._start_server(extra_namespaces=extra)

    # --- faults ------------------------------------------------------------------

    def stop_answering(self) -> None:
        """Keep connections open but send nothing until :meth:`resume_answering`."""
        self._relay.stop_answering()

    def resume_answering(self) -> None:
        """Deliver held-back responses and respond normally again."""
        self._relay.resume_answering()

    def set_delay(self, seconds: float) -> None:
        """Delay every block of bytes the server sends by ``seconds``."""
        self._relay.delay_s = seconds

    async def drop_connections(self) -> None:
        """Close every client connection; the server keeps running."""
        await self._relay.drop_connections()

    async def silence_subscriptions(self) -> int:
        """Stop every subscription from publishing, keep connections open.

        The subscriptions stay registered, so a client sees neither data
        changes nor keep-alives and no error. Returns how many were stopped.
        """
        server = self._require_server()
        subscriptions = server.iserver.subscription_service.subscriptions
        for subscription in list(subscriptions.values()):
            await subscription.stop()
        return len(subscriptions)

    async def set_status(self, sensor: str, variable: str, status: str) -> None:
        """Serve ``variable`` of ``sensor`` with an OPC UA status code.

        ``status`` is a status code name such as ``BadSensorFailure``; ``Good``
        clears the fault. The value keeps updating under that status.
        """
        code = ua.StatusCode(getattr(ua.StatusCodes, status))
        if code.is_good():
            self._statuses.pop((sensor, variable), None)
        else:
            self._statuses[(sensor, variable)] = code
        state = self._find_sensor(sensor)
        await self._write_scalars(state)

    # --- server ------------------------------------------------------------------

    async def _start_server(self, extra_namespaces: Sequence[str]) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("cmagent OPC UA simulator")
        await server.set_application_uri(SERVER_APPLICATION_URI)
        server.socket_address = (self.host, 0)
        await self._configure_security(server)

        for uri in extra_namespaces:
            await server.register_namespace(uri)
        self._namespace_index = await server.register_namespace(self.namespace_uri)
        await self._add_nodes(server)
        await server.start()

        assert server.bserver is not None
        self._relay.upstream_port = server.bserver.port
        self._server = server
        for state in self._sensors:
            await self._publish_waveform(state)
        self._updater = asyncio.create_task(self._update_loop())
        logger.info(
            "opcua_sim.started",
            extra={"endpoint": self.endpoint, "namespace_index": self._namespace_index},
        )

    async def _configure_security(self, server: Server) -> None:
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self._certificate_path is not None and self._private_key_path is not None:
            await server.load_certificate(str(self._certificate_path))
            await server.load_private_key(str(self._private_key_path))
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        server.set_security_policy(policies)

    async def _add_nodes(self, server: Server) -> None:
        idx = self._namespace_index
        folder = await server.nodes.objects.add_folder(
            ua.NodeId(SENSORS_FOLDER, idx), ua.QualifiedName(SENSORS_FOLDER, idx)
        )
        for state in self._sensors:
            name = state.config.name
            sensor = await folder.add_object(
                ua.NodeId(name, idx), ua.QualifiedName(name, idx)
            )
            initial = {
                "Waveform": ua.Variant([0.0], ua.VariantType.Double),
                "SampleRate": ua.Variant(state.recording.fs_hz, ua.VariantType.Double),
                "Rpm": ua.Variant(state.recording.rpm, ua.VariantType.Double),
                "Sequence": ua.Variant(0, ua.VariantType.UInt32),
                "VelocityRms": ua.Variant(0.0, ua.VariantType.Double),
                "AccelerationRms": ua.Variant(0.0, ua.VariantType.Double),
                "Temperature": ua.Variant(
                    state.config.temperature_c, ua.VariantType.Double
                ),
            }
            for variable, value in initial.items():
                await sensor.add_variable(
                    ua.NodeId(f"{name}.{variable}", idx),
                    ua.QualifiedName(variable, idx),
                    value,
                )

    async def _stop_server(self) -> None:
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
            self._updater = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def _require_server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the OPC UA simulator is not running; call start()")
        return self._server

    def _find_sensor(self, name: str) -> _SensorState:
        for state in self._sensors:
            if state.config.name == name:
                return state
        names = [s.config.name for s in self._sensors]
        raise KeyError(f"unknown sensor {name!r}; expected one of {names}")

    # --- replay ------------------------------------------------------------------

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self.update_period_s)
            for state in self._sensors:
                await self._publish_waveform(state)

    async def _publish_waveform(self, state: _SensorState) -> None:
        count = state.config.waveform_samples
        elapsed_s = time.monotonic() - self._started_at
        state.window_end = count + int(elapsed_s * state.recording.fs_hz)
        state.sequence += 1
        await self._write_scalars(state)

    def window(self, sensor: str) -> NDArray[np.float64]:
        """Return the samples currently served as ``sensor``'s waveform, in g."""
        state = self._find_sensor(sensor)
        return self._window_of(state)

    @staticmethod
    def _window_of(state: _SensorState) -> NDArray[np.float64]:
        count = state.config.waveform_samples
        positions = np.arange(state.window_end - count, state.window_end)
        samples = np.take(state.recording.samples, positions, mode="wrap")
        return samples.astype(np.float64)

    async def _write_scalars(self, state: _SensorState) -> None:
        server = self._server
        if server is None:
            return
        samples = self._window_of(state)
        fs_hz = state.recording.fs_hz
        elapsed_s = time.monotonic() - self._started_at
        temperature_c = state.config.temperature_c + 0.5 * math.sin(elapsed_s / 60)
        values = {
            "Waveform": ua.Variant(samples.tolist(), ua.VariantType.Double),
            "Sequence": ua.Variant(state.sequence, ua.VariantType.UInt32),
            "VelocityRms": ua.Variant(
                velocity_rms_mm_s(samples, fs_hz), ua.VariantType.Double
            ),
            "AccelerationRms": ua.Variant(
                float(np.sqrt(np.mean(samples**2))), ua.VariantType.Double
            ),
            "Temperature": ua.Variant(temperature_c, ua.VariantType.Double),
        }

        now = datetime.now(UTC)
        name = state.config.name
        for variable, value in values.items():
            status = self._statuses.get((name, variable), ua.StatusCode())
            data_value = ua.DataValue(
                Value=value, StatusCode=status, SourceTimestamp=now, ServerTimestamp=now
            )
            node_id = ua.NodeId(f"{name}.{variable}", self._namespace_index)
            await server.write_attribute_value(node_id, data_value)
