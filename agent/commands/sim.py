"""``cmagent sim modbus|opcua``: run a simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim", help="run a sensor simulator replaying real bearing recordings"
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    modbus = kinds.add_parser(
        "modbus", help="Modbus TCP: units 1-3 vibration, unit 10 oil"
    )
    modbus.add_argument(
        "--host", default="127.0.0.1", help="listen address (127.0.0.1)"
    )
    modbus.add_argument(
        "--port", type=int, default=5020, help="TCP port, 0 for any free one (5020)"
    )
    modbus.set_defaults(handler=run_modbus)
    opcua = kinds.add_parser("opcua", help="OPC UA server with the same sensors")
    opcua.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    opcua.add_argument(
        "--port", type=int, default=4840, help="TCP port, 0 for any free one (4840)"
    )
    opcua.set_defaults(handler=run_opcua)
    parser.set_defaults(handler=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_modbus(args: argparse.Namespace) -> int:
    """Serve the Modbus simulator until interrupted."""
    from drivers.sim.modbus_server import ModbusSimulator

    simulator = ModbusSimulator(host=args.host, port=args.port)
    return _run(simulator, "Modbus TCP on {host}:{port}", args.host)


def run_opcua(args: argparse.Namespace) -> int:
    """Serve the OPC UA simulator until interrupted."""
    from drivers.sim.opcua_server import OpcUaSimulator

    simulator = OpcUaSimulator(host=args.host, port=args.port)
    return _run(simulator, "OPC UA on opc.tcp://{host}:{port}", args.host)


def _run(simulator: object, where: str, host: str) -> int:
    """Serve until Ctrl-C; ``where`` is formatted with the bound port."""

    async def serve() -> None:
        await simulator.start()  # type: ignore[attr-defined]
        port = simulator.port  # type: ignore[attr-defined]
        print(
            f"simulator serving {where.format(host=host, port=port)}; Ctrl-C stops it",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await simulator.stop()  # type: ignore[attr-defined]

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except OSError as exc:
        target = where.format(host=host, port="(requested)")
        print(f"error: cannot serve {target}: {exc}", file=sys.stderr)
        return 1
    return 0
