"""The Modbus TCP and RTU driver.

:class:`ModbusDriver` reads a device's points with as few requests as the
planner allows and turns every failure into bad readings, so one broken
block never hides the others. It does not reconnect on its own: the
agent's device task calls :meth:`ModbusDriver.connect` again, paced by
:class:`drivers.backoff.Backoff`, while :meth:`ModbusDriver.offline_readings`
fills the gap with bad values.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Final

from pymodbus.pdu import ModbusPDU

from drivers.base import Quality, QualityReason, ReadingBatch, ScalarValue, Waveform
from drivers.errors import (
    DriverConfigError,
    DriverConnectError,
    DriverDecodeError,
    DriverError,
    DriverTimeoutError,
)
from drivers.modbus_capture import capture_waveform
from drivers.modbus_decode import BlockDecoder
from drivers.modbus_link import (
    GATEWAY_EXCEPTIONS,
    ModbusExceptionError,
    ModbusLink,
    RequestTarget,
    acquire_serial_link,
    execute,
    open_tcp_link,
    release_serial_link,
    request_arguments,
)
from drivers.planner import FUNCTION_CODE, ReadRequest, plan_reads
from drivers.spec import (
    ModbusRtuSpec,
    ModbusTcpSpec,
    RegisterTable,
    TransactionIdCheck,
)

logger = logging.getLogger(__name__)

_READ_METHODS: Final[dict[RegisterTable, str]] = {
    RegisterTable.COIL: "read_coils",
    RegisterTable.DISCRETE_INPUT: "read_discrete_inputs",
    RegisterTable.HOLDING: "read_holding_registers",
    RegisterTable.INPUT: "read_input_registers",
}
"""pymodbus client method of each table."""

_BIT_FUNCTIONS: Final = frozenset({1, 2})
"""Read coils and read discrete inputs, whose responses carry bits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _PlannedRead:
    """A planned request with what each poll needs to run and decode it."""

    request: ReadRequest
    decoder: BlockDecoder
    size: int
    """Number of points, and so of readings."""
    method: str
    function_code: int
    arguments: dict[str, object]

    @classmethod
    def build(cls, request: ReadRequest, target: RequestTarget) -> _PlannedRead:
        return cls(
            request=request,
            decoder=BlockDecoder(request),
            size=len(request.points),
            method=_READ_METHODS[request.table],
            function_code=request.function_code,
            arguments=request_arguments(target, count=request.count),
        )


class DriverState(enum.Enum):
    """Connection state of one device."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


class ModbusDriver:
    """A Modbus device: one unit id over TCP or on a shared serial port.

    Args:
        spec: the device, its points and its waveform blocks.

    Raises:
        DriverConfigError: the points cannot be planned (a point wider than
            the per-request maximum, or an invalid maximum).
    """

    def __init__(self, spec: ModbusTcpSpec | ModbusRtuSpec) -> None:
        self.spec = spec
        self.device_id = spec.device_id
        self.requests = plan_reads(
            spec.points,
            max_registers=spec.max_registers_per_request,
            max_gap=spec.max_gap_registers,
        )
        self._waveforms = {w.name: w for w in spec.waveforms}
        self._link: ModbusLink | None = None
        self._state = DriverState.DISCONNECTED
        self.last_error: DriverError | None = None
        if isinstance(spec, ModbusTcpSpec):
            self.endpoint = f"{spec.host}:{spec.port}"
            self._tid_check = spec.transaction_id_check
        else:
            self.endpoint = spec.serial_port
            self._tid_check = TransactionIdCheck.LENIENT
        self._target = RequestTarget(
            device=spec.device_id,
            unit_id=spec.unit_id,
            timeout_s=spec.timeout_s,
            retries=spec.retries,
            tid_check=self._tid_check,
        )
        self._plans = [_PlannedRead.build(r, self._target) for r in self.requests]
        # Every poll returns the points in plan order, so these columns of
        # its readings are the same for every poll.
        planned = [p for request in self.requests for p in request.points]
        self._assets = tuple(p.asset for p in planned)
        self._names = tuple(p.name for p in planned)
        self._units = tuple(p.unit for p in planned)

    @property
    def state(self) -> DriverState:
        return self._state

    @property
    def link(self) -> ModbusLink | None:
        """The connection in use, shared with other units on a serial port."""
        return self._link

    async def connect(self) -> None:
        """Open the connection (a shared one for a serial port).

        Raises:
            DriverConnectError: the host or port cannot be opened.
        """
        self._state = DriverState.CONNECTING
        try:
            if self._link is None:
                self._link = self._create_link()
            timeout_s = getattr(self.spec, "connect_timeout_s", self.spec.timeout_s)
            await self._link.open(timeout_s)
        except DriverConnectError as exc:
            self._fail(exc)
            raise DriverConnectError(
                f"device {self.device_id!r}: {exc}", device=self.device_id
            ) from exc
        self._state = DriverState.CONNECTED
        logger.info(
            "modbus.connected",
            extra={"device": self.device_id, "endpoint": self.endpoint},
        )

    def _create_link(self) -> ModbusLink:
        if isinstance(self.spec, ModbusTcpSpec):
            return open_tcp_link(self.spec)
        return acquire_serial_link(self.spec)

    async def close(self) -> None:
        """Close the connection; a shared serial port closes with its last user."""
        link, self._link = self._link, None
        if link is not None:
            if isinstance(self.spec, ModbusTcpSpec):
                link.close()
            else:
                release_serial_link(link)
        self._state = DriverState.DISCONNECTED

    def _fail(self, exc: DriverError) -> None:
        self.last_error = exc
        if isinstance(exc, DriverConnectError):
            self._state = DriverState.DISCONNECTED

    async def read_points(self) -> ReadingBatch:
        """Read every point; return one reading per point, bad ones included.

        The readings are in plan order, and each carries the time its
        block was requested.

        Raises:
            DriverConnectError: the device is not connected. Call
                :meth:`connect`, and report :meth:`offline_readings`.
        """
        if self._link is None or not self._link.connected:
            self._state = DriverState.DISCONNECTED
            raise DriverConnectError(
                f"device {self.device_id!r}: not connected to {self.endpoint}",
                device=self.device_id,
            )

        link = self._link
        timestamps: list[datetime] = []
        values: list[ScalarValue] = []
        qualities: list[Quality] = []
        lost: DriverConnectError | None = None
        for plan in self._plans:
            request = plan.request
            timestamps.extend(repeat(datetime.now(UTC), plan.size))
            if lost is not None:
                self._append_bad(plan, lost, values, qualities)
                continue
            try:
                response = await execute(
                    link,
                    getattr(link.client, plan.method),
                    self._target,
                    plan.function_code,
                    request.address,
                    request.count,
                    plan.arguments,
                )
                raw = self._values(
                    response, plan.function_code, request.address, request.count
                )
            except DriverError as exc:
                self._fail(exc)
                if isinstance(exc, DriverConnectError):
                    lost = exc
                self._append_bad(plan, exc, values, qualities)
                continue
            plan.decoder.decode_into(raw, values, qualities)
        return self._batch(timestamps, values, qualities)

    def offline_readings(self, detail: str) -> ReadingBatch:
        """Return a bad comm_error reading for every point, for an offline device."""
        size = len(self._names)
        return self._batch(
            [datetime.now(UTC)] * size,
            [None] * size,
            [Quality.bad(QualityReason.COMM_ERROR, detail)] * size,
        )

    def _batch(
        self,
        timestamps: list[datetime],
        values: list[ScalarValue],
        qualities: list[Quality],
    ) -> ReadingBatch:
        return ReadingBatch(
            assets=self._assets,
            points=self._names,
            units=self._units,
            source=self.device_id,
            timestamps=timestamps,
            values=values,
            qualities=qualities,
        )

    async def read_block(
        self, table: RegisterTable, address: int, count: int
    ) -> list[int] | list[bool]:
        """Read ``count`` registers or bits from ``table`` at ``address``.

        Raises:
            DriverConnectError, DriverTimeoutError, DriverProtocolError.
        """
        link = self._require_link()
        function_code = FUNCTION_CODE[table]
        call = getattr(link.client, _READ_METHODS[table])
        arguments = request_arguments(self._target, count=count)
        response = await execute(
            link, call, self._target, function_code, address, count, arguments
        )
        return self._values(response, function_code, address, count)

    def _values(
        self, response: ModbusPDU, function_code: int, address: int, count: int
    ) -> list[int] | list[bool]:
        """Return the bits or registers of a response, checking their count."""
        if function_code in _BIT_FUNCTIONS:
            return list(response.bits[:count])
        registers: list[int] = response.registers
        if len(registers) != count:
            raise DriverDecodeError(
                f"device {self.device_id!r} function {function_code} address "
                f"{address}: expected {count} registers, found {len(registers)}",
                device=self.device_id,
            )
        return registers

    async def write_register(self, address: int, value: int) -> None:
        """Write one holding register (function 6)."""
        link = self._require_link()
        arguments = request_arguments(self._target, value=value)
        await execute(
            link, link.client.write_register, self._target, 6, address, 1, arguments
        )

    async def write_registers(self, address: int, values: list[int]) -> None:
        """Write consecutive holding registers (function 16)."""
        link = self._require_link()
        await execute(
            link,
            link.client.write_registers,
            self._target,
            16,
            address,
            len(values),
            request_arguments(self._target, values=values),
        )

    async def read_waveform(self, name: str) -> Waveform:
        """Capture and read the waveform block ``name``.

        Raises:
            DriverConfigError: no waveform of that name.
            DriverProtocolError: the capture stayed torn after retries, or
                the sensor reported an invalid sample count or rate.
            DriverConnectError, DriverTimeoutError: as for any request.
        """
        spec = self._waveforms.get(name)
        if spec is None:
            raise DriverConfigError(
                f"device {self.device_id!r}: no waveform {name!r}; expected one "
                f"of {sorted(self._waveforms)}",
                device=self.device_id,
            )
        try:
            return await capture_waveform(self, spec)
        except DriverError as exc:
            self._fail(exc)
            raise

    def _require_link(self) -> ModbusLink:
        if self._link is None:
            raise DriverConnectError(
                f"device {self.device_id!r}: not connected", device=self.device_id
            )
        return self._link

    @staticmethod
    def _append_bad(
        plan: _PlannedRead,
        exc: DriverError,
        values: list[ScalarValue],
        qualities: list[Quality],
    ) -> None:
        """Append a bad reading for every point of a block that failed."""
        if isinstance(exc, DriverTimeoutError):
            reason = QualityReason.TIMEOUT
        elif isinstance(exc, DriverDecodeError):
            reason = QualityReason.DECODE_ERROR
        elif (
            isinstance(exc, ModbusExceptionError)
            and exc.exception_code not in GATEWAY_EXCEPTIONS
        ):
            # The device itself responded, with an exception code, as an
            # OPC UA server responds with a bad status code.
            reason = QualityReason.SENSOR_FAULT
        else:
            reason = QualityReason.COMM_ERROR
        values.extend(repeat(None, plan.size))
        qualities.extend(repeat(Quality.bad(reason, str(exc)), plan.size))
