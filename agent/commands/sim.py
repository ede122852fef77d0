"""``cmagent sim modbus|opcua``: run a simulator until Ctrl-C.

When it starts, a simulator prints where it listens, what it serves and
the device profile that reads each sensor, so a configuration can be
written from that output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from drivers.sim.modbus_server import ServedUnit
    from drivers.sim.opcua_server import OpcUaSimulator

_HIGHEST_PORT: Final = 65535


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
        "--port",
        type=listen_port,
        default=5020,
        help=f"TCP port, 0-{_HIGHEST_PORT}; 0 picks any free one (5020)",
    )
    modbus.set_defaults(handler=run_modbus)
    opcua = kinds.add_parser("opcua", help="OPC UA server with the same sensors")
    opcua.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    opcua.add_argument(
        "--port",
        type=listen_port,
        default=4840,
        help=f"TCP port, 0-{_HIGHEST_PORT}; 0 picks any free one (4840)",
    )
    opcua.set_defaults(handler=run_opcua)
    parser.set_defaults(handler=lambda _args: _usage(parser))


def listen_port(text: str) -> int:
    """Parse ``--port`` as 0 to 65535, where 0 picks any free port."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= _HIGHEST_PORT:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 0 to {_HIGHEST_PORT}, found {text!r}"
        )
    return port


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_modbus(args: argparse.Namespace) -> int:
    """Serve the Modbus simulator until interrupted."""
    from drivers.sim.modbus_server import ModbusSimulator

    simulator = ModbusSimulator(host=args.host, port=args.port)

    def start_lines() -> list[str]:
        where = f"Modbus TCP on {args.host}:{simulator.port}"
        return [_serving_line(where), *modbus_unit_lines(simulator.served_units())]

    return _run(simulator, start_lines, args.host, args.port)


def run_opcua(args: argparse.Namespace) -> int:
    """Serve the OPC UA simulator until interrupted."""
    from drivers.sim.opcua_server import OpcUaSimulator

    simulator = OpcUaSimulator(host=args.host, port=args.port)

    def start_lines() -> list[str]:
        where = f"OPC UA on {simulator.endpoint}"
        return [_serving_line(where), *opcua_sensor_lines(simulator)]

    return _run(simulator, start_lines, args.host, args.port)


def _serving_line(where: str) -> str:
    return f"simulator serving {where}; Ctrl-C stops it"


def modbus_unit_lines(units: list[ServedUnit]) -> list[str]:
    """Describe each unit id: sensor model, recording and device profile."""
    lines = []
    for unit in units:
        text = f"  unit {unit.unit_id}: {unit.model}"
        if unit.recording is not None:
            text += f" replaying {unit.recording}"
        if unit.profile is not None:
            text += f", profile {unit.profile}"
        lines.append(text)
    return lines


def opcua_sensor_lines(simulator: OpcUaSimulator) -> list[str]:
    """Describe the namespace and each sensor's browse path and profile.

    The ``browse_root`` line is written as a device in the agent's
    configuration takes it, with each name qualified by the namespace URI.
    """
    uri = simulator.namespace_uri
    lines = [f"  namespace {uri}"]
    for sensor in simulator.served_sensors():
        path = "/".join(sensor.browse_path)
        root = ", ".join(json.dumps(f"{{{uri}}}{name}") for name in sensor.browse_path)
        lines.append(
            f"  {path}: {sensor.model} replaying {sensor.recording}, "
            f"profile {sensor.profile} with"
        )
        lines.append(f"    browse_root = [{root}]")
    return lines


class _ListenError(Exception):
    """The simulator could not open its listening socket."""


def _run(
    simulator: object, start_lines: Callable[[], list[str]], host: str, port: int
) -> int:
    """Serve until Ctrl-C; print ``start_lines()`` once the server listens."""

    async def serve() -> None:
        try:
            await simulator.start()  # type: ignore[attr-defined]
        # pymodbus 3.16 logs the socket error and raises RuntimeError when
        # its server cannot listen, but the OPC UA simulator raises OSError.
        except (OSError, RuntimeError) as exc:
            raise _ListenError(str(exc)) from exc
        print("\n".join(start_lines()), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await simulator.stop()  # type: ignore[attr-defined]

    from agent.logging_setup import quiet_library_loggers

    try:
        with contextlib.suppress(KeyboardInterrupt), quiet_library_loggers():
            asyncio.run(serve())
    except _ListenError as exc:
        reason = listen_failure_reason(host, port) or str(exc)
        print(f"cmagent sim: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 1
    return 0


def listen_failure_reason(host: str, port: int) -> str | None:
    """Bind ``host:port`` once to find why a simulator could not listen.

    Returns the operating system's reason with what to do, or None when
    the address can be bound now.
    """
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"{exc.strerror}; pass an address of this machine as --host"

    family, kind, protocol, _, address = infos[0]
    try:
        with socket.socket(family, kind, protocol) as probe:
            # asyncio servers set SO_REUSEADDR too, so a socket in TIME_WAIT
            # does not count as in use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return _describe_bind_error(exc)
    return None


def _describe_bind_error(exc: OSError) -> str:
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.EADDRINUSE:
        return f"{text}; choose another --port, or 0 for any free one"
    if exc.errno == errno.EACCES:
        return f"{text}; ports below 1024 need root, so choose a higher --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{text}; pass an address of this machine as --host"
    return text
