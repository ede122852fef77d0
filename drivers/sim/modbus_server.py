"""A Modbus TCP or RTU server that serves simulated sensors.

The server uses pymodbus' :class:`ModbusTcpServer` or
:class:`ModbusSerialServer` with a datastore of our own that computes
registers when they are read, which is what lets a recording replay in
real time. Fault switches let tests break it on purpose: dropped
connections, silence, exception codes, NaN values, slow replies, restarts.

Tested with pymodbus 3.16, whose server accepts a ``ModbusServerContext``
subclass with ``old_simulator`` set and calls its ``async_getValues`` and
``async_setValues``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from drivers.sim.modbus_sensors import (
    CAPTURE_BLOCK,
    RegisterMap,
    SimOilSensor,
    SimRegisterBank,
    SimSensor,
    SimVibrationSensor,
)
from drivers.spec import RegisterTable

logger = logging.getLogger(__name__)

TABLE_OF_FUNCTION: Final = {
    1: RegisterTable.COIL,
    2: RegisterTable.DISCRETE_INPUT,
    3: RegisterTable.HOLDING,
    4: RegisterTable.INPUT,
    5: RegisterTable.COIL,
    6: RegisterTable.HOLDING,
    22: RegisterTable.HOLDING,
    23: RegisterTable.HOLDING,
}
"""Table read through ``async_getValues`` for each function code.

pymodbus 3.16 reads from the datastore for writes 5 and 6 too, because it
echoes the written value from there, and for the mask write 22, which
changes bits of the value it reads.
"""


def default_sensors() -> list[SimSensor]:
    """Return the demo set: three bearings and one oil sensor."""
    return [
        SimVibrationSensor(1, "normal_97"),
        SimVibrationSensor(2, "outer_race_021_234"),
        SimVibrationSensor(3, "inner_race_021_209"),
        SimOilSensor(10),
    ]


PROFILE_OF_SENSOR: Final[dict[type[SimSensor], str]] = {
    SimVibrationSensor: "vib-triax-modbus",
    SimOilSensor: "oil-modbus",
}
"""Device profile in ``config/devices/`` that reads each sensor model."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedUnit:
    """One unit id of the simulator, as described when it starts.

    ``recording`` is the recording a vibration sensor replays. ``profile``
    is the shipped device profile that reads the unit. Either is None when
    it does not apply.
    """

    unit_id: int
    model: str
    recording: str | None = None
    profile: str | None = None


def describe_sensor(sensor: SimSensor) -> ServedUnit:
    """Describe what ``sensor`` serves and which profile reads it."""
    if isinstance(sensor, SimVibrationSensor):
        model = "vibration sensor"
        recording: str | None = sensor.recording.name
    elif isinstance(sensor, SimOilSensor):
        model, recording = "oil-condition sensor", None
    else:
        model, recording = "register bank", None
    return ServedUnit(
        unit_id=sensor.unit_id,
        model=model,
        recording=recording,
        profile=PROFILE_OF_SENSOR.get(type(sensor)),
    )


def _flatten(blocks: dict[int, list[int]]) -> dict[int, int]:
    return {
        start + i: value
        for start, values in blocks.items()
        for i, value in enumerate(values)
    }


class _SensorContext(ModbusServerContext):
    """The datastore: one sensor per unit id, registers computed on read."""

    def __init__(self, simulator: ModbusSimulator) -> None:
        # The parent constructor builds static blocks that are not used here.
        self.simulator = simulator
        self.old_simulator = True
        self.simdevices = []

    def device_ids(self) -> list[int]:
        return list(self.simulator.sensors)

    def _sensor(self, device_id: int) -> SimSensor:
        sensor = self.simulator.sensors.get(device_id)
        if sensor is None:
            raise NoSuchIdException(f"no simulated sensor at unit {device_id}")
        return sensor

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        sensor = self._sensor(device_id)
        if self.simulator.delay_s:
            await asyncio.sleep(self.simulator.delay_s)
        code = self.simulator.exceptions.get(device_id)
        if code is not None:
            return ExcCodes(code)
        garbage = device_id in self.simulator.garbage

        table = TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if not sensor.register_map.covers(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS

        if isinstance(sensor, SimRegisterBank):
            return sensor.bank(address, count)
        if table is RegisterTable.INPUT:
            if isinstance(sensor, SimVibrationSensor) and address >= CAPTURE_BLOCK:
                block = sensor.block_registers(address - CAPTURE_BLOCK, count)
                return [int(v) for v in block]
            registers = _flatten(sensor.input_registers(garbage))
        else:
            registers = _flatten(sensor.holding_registers())
        # A register inside the map that carries no value reads as 0.
        return [registers.get(a, 0) for a in range(address, address + count)]

    async def async_setValues(
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        sensor = self._sensor(device_id)
        if func_code not in (6, 16):
            return ExcCodes.ILLEGAL_FUNCTION
        problem = sensor.write_holding(address, [int(v) for v in values])
        if problem is not None:
            logger.debug("modbus_sim.write_rejected", extra={"cause": problem})
            return ExcCodes.ILLEGAL_VALUE
        return None


RTU_FRAME_GAP_S: Final = 0.02
"""Line silence after which the serial server starts a new frame.

The RTU standard's gap is 3.5 characters, or 1.75 ms above 19 200 baud.
A pseudo-terminal and the event loop add jitter, so the simulator waits
longer before it drops a partial frame."""


class _RtuRequestHandler(ServerRequestHandler):
    """Serial request handler that drops a partial frame after silence.

    pymodbus 3.16 keeps unparsed bytes until a frame completes, so noise
    that looks like the start of a long frame would swallow the following
    requests. A field device instead starts over after a silent gap.
    """

    _last_receive_s = 0.0

    def datagram_received(self, data: bytes, addr: tuple[str, int] | None) -> None:
        now = time.monotonic()
        if now - self._last_receive_s > RTU_FRAME_GAP_S:
            self.recv_buffer = b""
        self._last_receive_s = now
        super().datagram_received(data, addr)


class _RtuServer(ModbusSerialServer):
    def callback_new_connection(self) -> ServerRequestHandler:
        return _RtuRequestHandler(
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


class ModbusSimulator:
    """Simulated Modbus sensors on TCP (loopback) or on a serial device.

    A read is served only when every address it touches lies inside the
    sensor's register map (see :class:`RegisterMap`). The map of a table
    is a few contiguous ranges, each from the first to the last register
    of one group of related values on the sensor's datasheet. Reserved
    registers inside a range read as 0, so a planned read that spans a
    small gap between two points of one group succeeds. A read that
    touches any address outside every range, including any read of a
    table the sensor has no range in, fails with exception code 2
    (ILLEGAL DATA ADDRESS).

    Args:
        host: address to listen on; keep it on loopback in tests.
        port: TCP port, 0 to pick a free one (read :attr:`port` after start).
        sensors: the sensors, one per unit id; None serves
            :func:`default_sensors`.
        serial_port: serve Modbus RTU on this serial device instead of TCP.
        baudrate, parity, stopbits, bytesize: serial line settings.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        sensors: Sequence[SimSensor] | None = None,
        *,
        serial_port: str | None = None,
        baudrate: int = 19200,
        parity: str = "E",
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        chosen = list(sensors) if sensors is not None else default_sensors()
        units = [s.unit_id for s in chosen]
        if len(set(units)) != len(units):
            raise ValueError(f"expected distinct unit ids, found {units}")
        self.sensors: dict[int, SimSensor] = {s.unit_id: s for s in chosen}
        self.host = host
        self.port = port
        self.serial_port = serial_port
        self._line = (baudrate, parity, stopbits, bytesize)
        self.exceptions: dict[int, int] = {}
        self.garbage: set[int] = set()
        self.delay_s = 0.0
        self.silent = False
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    def served_units(self) -> list[ServedUnit]:
        """Describe every unit id the simulator serves, in ascending order."""
        return [describe_sensor(self.sensors[unit]) for unit in sorted(self.sensors)]

    async def start(self) -> None:
        """Start serving; with port 0, :attr:`port` is the bound port after."""
        context = _SensorContext(self)
        if self.serial_port is not None:
            baudrate, parity, stopbits, bytesize = self._line
            self._server = _RtuServer(
                context,
                framer=FramerType.RTU,
                port=self.serial_port,
                baudrate=baudrate,
                parity=parity,
                stopbits=stopbits,
                bytesize=bytesize,
                trace_packet=self._trace_packet,
                # On a serial line nobody answers for a missing unit, so the
                # client times out as it would on a field bus.
                ignore_missing_devices=True,
            )
        else:
            self._server = ModbusTcpServer(
                context, address=(self.host, self.port), trace_packet=self._trace_packet
            )
        await self._server.serve_forever(background=True)
        if self.serial_port is None:
            sockets = self._server.transport.sockets  # type: ignore[union-attr]
            self.port = sockets[0].getsockname()[1]
        logger.info(
            "modbus_sim.started",
            extra={"endpoint": self.serial_port or f"{self.host}:{self.port}"},
        )

    async def stop(self) -> None:
        """Stop serving and close every client connection."""
        server, self._server = self._server, None
        if server is not None:
            self.drop_connections(server)
            await server.shutdown()
            # Let the closing transports run their callbacks.
            await asyncio.sleep(0)

    async def restart(self) -> None:
        """Stop and start again on the same port or device."""
        await self.stop()
        await self.start()

    def drop_connections(
        self, server: ModbusTcpServer | ModbusSerialServer | None = None
    ) -> None:
        """Close every client connection; the server keeps listening."""
        target = server or self._server
        if target is None:
            return
        for connection in list(target.active_connections.values()):
            connection.close()

    def stop_answering(self, on: bool) -> None:
        """Read requests but send nothing back while ``on``."""
        self.silent = on

    def set_exception(self, unit_id: int, code: int | None) -> None:
        """Answer every request to ``unit_id`` with exception ``code``."""
        if code is None:
            self.exceptions.pop(unit_id, None)
        else:
            self.exceptions[unit_id] = code

    def set_garbage(self, unit_id: int, on: bool) -> None:
        """Serve NaN in every float value of ``unit_id`` while ``on``."""
        if on:
            self.garbage.add(unit_id)
        else:
            self.garbage.discard(unit_id)

    def set_delay(self, seconds: float) -> None:
        """Delay every answer by ``seconds``."""
        self.delay_s = seconds

    def tear_captures(self, unit_id: int, count: int, after_reads: int = 1) -> None:
        """Make the next ``count`` captures of ``unit_id`` be torn mid-read.

        A new capture replaces the one being read once ``after_reads``
        reads of its sample block have been answered.
        """
        sensor = self.sensors[unit_id]
        if not isinstance(sensor, SimVibrationSensor):
            raise ValueError(f"unit {unit_id} is not a vibration sensor")
        sensor.tears_pending = count
        sensor.tear_after_reads = after_reads

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if sending and self.silent:
            return b""
        return packet


__all__ = [
    "ModbusSimulator",
    "RegisterMap",
    "ServedUnit",
    "SimOilSensor",
    "SimRegisterBank",
    "SimVibrationSensor",
    "default_sensors",
    "describe_sensor",
]
