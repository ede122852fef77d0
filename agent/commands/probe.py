"""``cmagent probe modbus``: read a register block and show every decoding.

For commissioning a sensor whose manual is vague about types and byte
orders: the technician reads a block once and looks for the plausible value.
Each order is printed with the ``byte_order`` and ``word_order`` that a
device profile needs to decode it, so they can be copied from the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import numbers
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from agent.logging_setup import quiet_library_loggers
from agent.units import parse_duration_s
from drivers.errors import DriverConnectError, DriverError

if TYPE_CHECKING:
    # Imported where used, because every cmagent command imports this
    # module to build its parser and should not load pymodbus for it.
    from agent.probe_report import ProbeFailure, ProbeRequest

_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
_LAST_REGISTER: Final = 65535


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from drivers.planner import MAX_REGISTERS_PER_READ

    parser = subparsers.add_parser(
        "probe", help="read raw values from a device for commissioning"
    )
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL")
    modbus = protocols.add_parser(
        "modbus",
        help="read a Modbus TCP register block and decode it in every type and order",
    )
    unit_low, unit_high = _config_range("unit_id")
    port_low, port_high = _config_range("port")
    modbus.add_argument("--host", type=probe_host, required=True, help="device address")
    modbus.add_argument(
        "--port",
        type=int_in_range(port_low, port_high),
        default=502,
        help=f"TCP port, {port_low}-{port_high} (502)",
    )
    modbus.add_argument(
        "--unit",
        type=int_in_range(unit_low, unit_high),
        default=1,
        help=f"unit id, {unit_low}-{unit_high} (1)",
    )
    modbus.add_argument(
        "--address",
        type=register_address,
        required=True,
        help=f"zero-based start register, 0-{_LAST_REGISTER}",
    )
    modbus.add_argument(
        "--count",
        type=int_in_range(1, MAX_REGISTERS_PER_READ),
        default=4,
        help=f"registers, 1-{MAX_REGISTERS_PER_READ} (4)",
    )
    modbus.add_argument(
        "--function",
        type=int,
        choices=(3, 4),
        default=3,
        help="3 = holding registers (default), 4 = input registers",
    )
    modbus.add_argument(
        "--timeout",
        type=positive_duration_s,
        default=2.0,
        help="time limit per request, such as 2s or 500ms; a bare number is"
        " seconds (2s)",
    )
    modbus.add_argument("--json", action="store_true", help="print one JSON object")
    modbus.set_defaults(handler=lambda args: run_probe_modbus(args, modbus))
    parser.set_defaults(handler=lambda _args: _usage(parser))


def _config_range(field: str) -> tuple[int, int]:
    """Return the bounds a ``modbus_tcp`` device setting allows for ``field``.

    The probe accepts exactly the unit ids and ports a configuration may
    name, so any device the agent can poll can be probed first.
    """
    from annotated_types import Ge, Le

    from agent.settings import ModbusTcpDeviceSettings

    metadata = ModbusTcpDeviceSettings.model_fields[field].metadata
    low = next(int(m.ge) for m in metadata if isinstance(m, Ge))
    high = next(int(m.le) for m in metadata if isinstance(m, Le))
    return low, high


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """Build an argparse ``type`` that accepts integers from low to high."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {low} to {high}, found {text!r}"
            )
        return value

    return parse


def probe_host(text: str) -> str:
    """Parse ``--host``, rejecting an empty name or a ``HOST:PORT`` pair."""
    host, colon, port = text.rpartition(":")
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a host name or address, found ''")
    # One colon followed by digits is a port; IPv6 addresses have several.
    if colon and port.isdigit() and host and ":" not in host:
        raise argparse.ArgumentTypeError(
            f"expected a host without a port, found {text!r}; use --host "
            f"{host} --port {port}"
        )
    return text


def register_address(text: str) -> int:
    """Parse ``--address`` as a zero-based register, 0 to 65535.

    A six-digit Modicon number such as 400001 gets the options to use.
    """
    from agent.probe_report import FUNCTION_OF_TABLE
    from agent.settings_devices import MODICON_TABLES

    message = f"expected an integer from 0 to {_LAST_REGISTER}, found {text!r}"
    try:
        address = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(message) from None
    if 0 <= address <= _LAST_REGISTER:
        return address
    table = MODICON_TABLES.get(address // 100_000)
    offset = address % 100_000 - 1
    if table is not None and 0 <= offset <= _LAST_REGISTER:
        message += (
            f"; {address} looks like a six-digit Modicon {table}-register "
            f"number: try --function {FUNCTION_OF_TABLE[table]} --address "
            f"{offset}"
        )
    raise argparse.ArgumentTypeError(message)


def positive_duration_s(text: str) -> float:
    """Parse ``--timeout`` as seconds greater than zero."""
    try:
        seconds = parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration greater than 0, found {text!r}"
        )
    return seconds


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def decode_everything(registers: list[int]) -> dict[str, dict[str, Any]]:
    """Decode the value at the block start as every type in every order."""
    from drivers.codec import ORDERS, decode_scalar, order_name
    from drivers.spec import REGISTER_COUNT, DataType

    decoded: dict[str, dict[str, Any]] = {}
    for name in _TYPES:
        data_type = DataType(name)
        width = REGISTER_COUNT[data_type]
        if width > len(registers):
            continue
        by_order: dict[str, Any] = {}
        for byte_order, word_order in ORDERS:
            label = order_name(width, byte_order, word_order)
            if label in by_order:
                continue
            value = decode_scalar(registers[:width], data_type, byte_order, word_order)
            by_order[label] = value
        decoded[name] = by_order
    return decoded


def run_probe_modbus(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Read the block and print it decoded. Return 0, or 1 when the read fails.

    A failure goes to standard error, and with ``--json`` also to standard
    output as an object with an ``error`` member.

    Raises:
        SystemExit: with status 2 through ``parser.error`` when the block
            runs past register 65535.
    """
    from agent.probe_report import ProbeRequest, modicon_note

    last = args.address + args.count - 1
    if last > _LAST_REGISTER:
        parser.error(
            f"argument --count: expected the block to end at register "
            f"{_LAST_REGISTER} or below, found --address {args.address} "
            f"--count {args.count}, which ends at {last}"
        )
    note = modicon_note(args.address)
    if note is not None:
        print(f"cmagent probe: {note}", file=sys.stderr)
    request = ProbeRequest(
        host=args.host,
        port=args.port,
        unit=args.unit,
        function=args.function,
        address=args.address,
        count=args.count,
        timeout_s=args.timeout,
    )

    try:
        with quiet_library_loggers():
            registers = asyncio.run(_read(request))
    except ProbeFailedError as exc:
        print(f"cmagent probe: {exc.failure.message}", file=sys.stderr)
        if args.json:
            print(json.dumps(exc.failure.as_json(request)))
        return 1

    decoded = decode_everything(registers)
    if args.json:
        _print_json(registers, decoded)
    else:
        _print_table(request, registers, decoded)
    return 0


class ProbeFailedError(Exception):
    """The probe could not read the block. ``failure`` contains the reason."""

    def __init__(self, failure: ProbeFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


async def _read(request: ProbeRequest) -> list[int]:
    """Read the block of ``request``.

    Raises:
        ProbeFailedError: the connection or the read failed.
    """
    from agent.probe_report import read_failure
    from drivers.modbus import ModbusDriver
    from drivers.spec import ModbusTcpSpec, RegisterTable

    # Driver messages name the device by its id, so the probe uses the
    # endpoint the technician typed as the id.
    spec = ModbusTcpSpec(
        device_id=f"{request.host}:{request.port}",
        host=request.host,
        port=request.port,
        unit_id=request.unit,
        timeout_s=request.timeout_s,
        connect_timeout_s=request.timeout_s,
        retries=0,
    )
    table = RegisterTable.HOLDING if request.function == 3 else RegisterTable.INPUT
    driver = ModbusDriver(spec)
    try:
        await _connect(driver, request)
        try:
            values = await driver.read_block(table, request.address, request.count)
        except DriverError as exc:
            raise ProbeFailedError(read_failure(request, exc)) from exc
    finally:
        await driver.close()
    return [int(v) for v in values]


async def _connect(driver: Any, request: ProbeRequest) -> None:
    """Connect ``driver``, naming the operating system's reason on failure.

    Raises:
        ProbeFailedError: the connection could not be opened.
    """
    from agent.probe_report import ProbeFailure

    try:
        await driver.connect()
    except DriverConnectError as exc:
        reason = await connect_failure_reason(
            request.host, request.port, request.timeout_s
        )
        message = str(exc)
        if reason is not None:
            message = f"cannot connect to {request.host}:{request.port}: {reason}"
        raise ProbeFailedError(ProbeFailure(kind="connect", message=message)) from exc


async def connect_failure_reason(host: str, port: int, timeout_s: float) -> str | None:
    """Open one plain TCP connection to find why a Modbus connect failed.

    pymodbus 3.16 logs the socket error of a failed connect and returns
    False, so the driver cannot tell a refused connection from a timeout.
    Returns None when this second attempt succeeds.
    """
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout_s
        )
    except ConnectionRefusedError:
        return (
            "connection refused; check that a Modbus TCP server listens on "
            "that host and port"
        )
    except TimeoutError:
        return f"no connection within {timeout_s:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _print_json(registers: list[int], decoded: dict[str, dict[str, Any]]) -> None:
    from agent.probe_report import order_settings, orders_json

    rows = order_settings(_register_counts(decoded))
    document = {
        "registers": registers,
        "decoded": decoded,
        "orders": orders_json(rows),
    }
    print(json.dumps(document, default=str))


def _print_table(
    request: ProbeRequest,
    registers: list[int],
    decoded: dict[str, dict[str, Any]],
) -> None:
    from agent.probe_report import order_settings, orders_text

    print(request.describe())
    for offset, value in enumerate(registers):
        print(f"  {request.address + offset:>5}  0x{value:04X}  {value:>5}")
    print()
    for name, by_order in decoded.items():
        cells = "  ".join(
            f"{order}={_format_value(value)}" for order, value in by_order.items()
        )
        print(f"  {name:<8} {cells}")
    print()
    for line in orders_text(order_settings(_register_counts(decoded))):
        print(line)


def _register_counts(decoded: dict[str, dict[str, Any]]) -> tuple[int, ...]:
    """Return the distinct widths, in registers, of the decoded types."""
    from drivers.spec import REGISTER_COUNT, DataType

    counts = {REGISTER_COUNT[DataType(name)] for name in decoded}
    return tuple(sorted(counts))


def _format_value(value: Any) -> str:
    """Format an integer in full and a float with seven significant digits."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{value:.7g}"
