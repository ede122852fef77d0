"""Messages of ``cmagent probe modbus``: failures with advice, and orders.

A technician reads these messages while commissioning a sensor, so each
failure names the request as typed on the command line, and the option or
device setting to check next. Each decoding order is printed
with the ``byte_order`` and ``word_order`` a device profile needs for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from drivers.codec import ORDERS, order_name
from drivers.errors import (
    DriverConnectError,
    DriverDecodeError,
    DriverError,
    DriverTimeoutError,
)
from drivers.modbus_link import (
    GATEWAY_EXCEPTIONS,
    ModbusExceptionError,
    TransactionIdMismatchError,
)
from drivers.spec import Endian

FUNCTION_OF_TABLE: Final = {"holding": 3, "input": 4}
"""Read function code of each register table."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRequest:
    """One probe read, with the values of its command-line options."""

    host: str
    port: int
    unit: int
    function: int
    address: int
    count: int
    timeout_s: float

    def describe(self) -> str:
        """Return the request as a message prefix, such as
        ``127.0.0.1:502 unit 1 function 3 address 0 count 4``."""
        return (
            f"{self.host}:{self.port} unit {self.unit} function {self.function} "
            f"address {self.address} count {self.count}"
        )

    def as_json(self) -> dict[str, str | int | float]:
        """Return the request as the ``request`` member of ``--json`` output."""
        return {
            "host": self.host,
            "port": self.port,
            "unit": self.unit,
            "function": self.function,
            "address": self.address,
            "count": self.count,
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeFailure:
    """A failed probe: a message that ends with what to check next.

    ``kind`` is ``connect``, ``connection_lost``, ``timeout``,
    ``modbus_exception``, ``protocol`` or ``decode``. ``exception_code``
    is set for ``modbus_exception`` only.
    """

    kind: str
    message: str
    exception_code: int | None = None

    def as_json(self, request: ProbeRequest) -> dict[str, object]:
        """Return the object ``--json`` prints for this failure."""
        return {
            "error": self.message,
            "error_kind": self.kind,
            "exception_code": self.exception_code,
            "request": request.as_json(),
        }


def read_failure(request: ProbeRequest, exc: DriverError) -> ProbeFailure:
    """Describe a read that failed after the connection was open."""
    where = request.describe()
    endpoint = f"{request.host}:{request.port}"
    if isinstance(exc, ModbusExceptionError):
        code = exc.exception_code
        advice = exception_advice(request, code)
        return ProbeFailure(
            kind="modbus_exception",
            message=f"{where}: {exc.exception_name} ({code}); {advice}",
            exception_code=code,
        )
    if isinstance(exc, DriverTimeoutError):
        return ProbeFailure(
            kind="timeout",
            message=f"{where}: no response within {request.timeout_s:g} s; "
            f"check that {endpoint} is a Modbus TCP server and that "
            f"--unit {request.unit} is the device's unit id, or allow more "
            "time with --timeout",
        )
    if isinstance(exc, DriverConnectError):
        return ProbeFailure(
            kind="connection_lost",
            message=f"{where}: {endpoint} closed the connection without a "
            f"response; check that it is a Modbus TCP server and that it "
            f"serves --unit {request.unit}",
        )
    if isinstance(exc, TransactionIdMismatchError):
        return ProbeFailure(
            kind="protocol",
            message=f"{where}: expected transaction id {exc.sent} in the "
            f"response, found {exc.received}; check that {endpoint} is a "
            "Modbus TCP server",
        )
    # A response to another function, or the wrong number of registers.
    kind = "decode" if isinstance(exc, DriverDecodeError) else "protocol"
    return ProbeFailure(kind=kind, message=str(exc))


def exception_advice(request: ProbeRequest, code: int) -> str:
    """Say what to check for a Modbus exception ``code`` to ``request``."""
    unit = request.unit
    other_function = 4 if request.function == 3 else 3
    if code == 1:
        return (
            f"the device does not support function {request.function}; "
            f"try --function {other_function}"
        )
    if code == 2:
        return _address_advice(request)
    if code == 3:
        return (
            f"the device rejected a read of {request.count} registers; "
            "try a smaller --count"
        )
    if code == 6:
        return "the device is busy; try again in a moment"
    if code in GATEWAY_EXCEPTIONS:
        return (
            f"check that --unit {unit} is the device's unit id, that the "
            f"gateway routes unit {unit} to the device, and that the device "
            "is powered and wired"
        )
    return "look the exception code up in the device's manual"


def _address_advice(request: ProbeRequest) -> str:
    from agent.settings_devices import modicon_offset

    last = request.address + request.count - 1
    table = "holding" if request.function == 3 else "input"
    span = (
        f"register {request.address}"
        if request.count == 1
        else f"registers {request.address}-{last}"
    )
    advice = (
        f"the device does not serve all of {table} {span}; check --address "
        "and --function against its register map"
    )
    converted = modicon_offset(request.address)
    if converted is None:
        return advice
    modicon_table, offset = converted
    function = FUNCTION_OF_TABLE[modicon_table]
    return (
        f"{advice}. If {request.address} is a Modicon register number, "
        f"try --function {function} --address {offset}"
    )


def modicon_note(address: int) -> str | None:
    """Return a note when ``address`` looks like a five-digit Modicon number.

    Some register maps use such numbers as real offsets, so this is a note,
    not an error.
    """
    from agent.settings_devices import modicon_offset

    found = modicon_offset(address)
    if found is None:
        return None
    table, offset = found
    return (
        f"note: {address} may be a Modicon {table}-register number; if the "
        f"register map writes it that way, read --function "
        f"{FUNCTION_OF_TABLE[table]} --address {offset}"
    )


# --- byte and word orders ----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderSettings:
    """The device-profile settings that decode values in one order.

    ``labels`` are the order's customary names for each value width
    shown, such as ``("AB", "ABCD", "ABCDEFGH")``. A 16-bit value has one
    register, so word order does not apply to ``AB`` and ``BA``.
    """

    labels: tuple[str, ...]
    byte_order: Endian
    word_order: Endian


def order_settings(register_counts: tuple[int, ...]) -> list[OrderSettings]:
    """Map each order name of the given widths onto profile settings.

    A one-register name appears once, with the first word order that
    produces it, because word order does not change a 16-bit value.
    """
    seen: set[str] = set()
    rows = []
    for byte_order, word_order in ORDERS:
        labels = []
        for count in register_counts:
            label = order_name(count, byte_order, word_order)
            if label not in seen:
                seen.add(label)
                labels.append(label)
        if labels:
            rows.append(
                OrderSettings(
                    labels=tuple(labels), byte_order=byte_order, word_order=word_order
                )
            )
    return rows


def orders_json(rows: list[OrderSettings]) -> dict[str, dict[str, str | None]]:
    """Return ``{label: {"byte_order", "word_order"}}`` for ``--json``.

    ``word_order`` is None for the 16-bit orders, where it has no effect.
    """
    mapping: dict[str, dict[str, str | None]] = {}
    for row in rows:
        for label in row.labels:
            word_order = row.word_order.value if len(label) > 2 else None
            mapping[label] = {
                "byte_order": row.byte_order.value,
                "word_order": word_order,
            }
    return mapping


def orders_text(rows: list[OrderSettings]) -> list[str]:
    """Return the lines that print each order with its profile settings."""
    names = [", ".join(row.labels) for row in rows]
    width = max(len(name) for name in names)
    lines = ["  device profile settings for each order:"]
    for name, row in zip(names, rows, strict=True):
        byte_order = f'byte_order = "{row.byte_order.value}"'
        word_order = f'word_order = "{row.word_order.value}"'
        lines.append(f"    {name:<{width}}  {byte_order:<21}  {word_order}")
    lines.append("  word_order has no effect on AB and BA, the 16-bit orders.")
    return lines
