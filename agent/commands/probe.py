"""``cmagent probe modbus``: read a register block and show every decoding.

For commissioning a sensor whose manual is vague about types and byte
orders: the technician reads a block once and looks for the plausible value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import numbers
import sys
from typing import Any

from agent.units import parse_duration_s
from drivers.errors import DriverError

_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "probe", help="read raw values from a device for commissioning"
    )
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL")
    modbus = protocols.add_parser(
        "modbus",
        help="read a Modbus TCP register block and decode it in every type and order",
    )
    modbus.add_argument("--host", required=True, help="device address")
    modbus.add_argument("--port", type=int, default=502, help="TCP port (502)")
    modbus.add_argument("--unit", type=int, default=1, help="unit id (1)")
    modbus.add_argument(
        "--address", type=int, required=True, help="zero-based start register"
    )
    modbus.add_argument("--count", type=int, default=4, help="registers, 1-125 (4)")
    modbus.add_argument(
        "--function",
        type=int,
        choices=(3, 4),
        default=3,
        help="3 = holding registers (default), 4 = input registers",
    )
    modbus.add_argument(
        "--timeout",
        type=parse_duration_s,
        default=2.0,
        help="time limit per request, such as 2s or 500ms; a bare number is"
        " seconds (2s)",
    )
    modbus.add_argument("--json", action="store_true", help="print one JSON object")
    modbus.set_defaults(handler=run_probe_modbus)
    parser.set_defaults(handler=lambda _args: _usage(parser))


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


def run_probe_modbus(args: argparse.Namespace) -> int:
    """Read the block, print it decoded; return 0, or 1 on failure."""
    if not 1 <= args.count <= 125:
        print(
            f"cmagent probe: --count must be 1..125, found {args.count}",
            file=sys.stderr,
        )
        return 2
    try:
        registers = asyncio.run(_read(args))
    except DriverError as exc:
        print(f"cmagent probe: {exc}", file=sys.stderr)
        return 1

    decoded = decode_everything(registers)
    if args.json:
        print(json.dumps({"registers": registers, "decoded": decoded}, default=str))
    else:
        _print_table(args, registers, decoded)
    return 0


async def _read(args: argparse.Namespace) -> list[int]:
    from drivers.modbus import ModbusDriver
    from drivers.spec import ModbusTcpSpec, RegisterTable

    spec = ModbusTcpSpec(
        device_id="probe",
        host=args.host,
        port=args.port,
        unit_id=args.unit,
        timeout_s=args.timeout,
        connect_timeout_s=args.timeout,
        retries=0,
    )
    table = RegisterTable.HOLDING if args.function == 3 else RegisterTable.INPUT
    driver = ModbusDriver(spec)
    try:
        await driver.connect()
        values = await driver.read_block(table, args.address, args.count)
    finally:
        await driver.close()
    return [int(v) for v in values]


def _print_table(
    args: argparse.Namespace,
    registers: list[int],
    decoded: dict[str, dict[str, Any]],
) -> None:
    print(
        f"{args.host}:{args.port} unit {args.unit} function {args.function} "
        f"address {args.address} count {args.count}"
    )
    for offset, value in enumerate(registers):
        print(f"  {args.address + offset:>5}  0x{value:04X}  {value:>5}")
    print()
    for name, by_order in decoded.items():
        cells = "  ".join(
            f"{order}={_format_value(value)}" for order, value in by_order.items()
        )
        print(f"  {name:<8} {cells}")


def _format_value(value: Any) -> str:
    """Format an integer in full and a float with seven significant digits."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{value:.7g}"
