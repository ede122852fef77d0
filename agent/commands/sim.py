"""``cmagent sim modbus|opcua``: run a simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import socket
import sys
from typing import Final

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
    return _run(simulator, "Modbus TCP on {host}:{port}", args.host, args.port)


def run_opcua(args: argparse.Namespace) -> int:
    """Serve the OPC UA simulator until interrupted."""
    from drivers.sim.opcua_server import OpcUaSimulator

    simulator = OpcUaSimulator(host=args.host, port=args.port)
    return _run(simulator, "OPC UA on opc.tcp://{host}:{port}", args.host, args.port)


class _ListenError(Exception):
    """The simulator could not open its listening socket."""


def _run(simulator: object, where: str, host: str, port: int) -> int:
    """Serve until Ctrl-C; ``where`` is formatted with the bound port."""

    async def serve() -> None:
        try:
            await simulator.start()  # type: ignore[attr-defined]
        # pymodbus 3.16 logs the socket error and raises RuntimeError when
        # its server cannot listen, but the OPC UA simulator raises OSError.
        except (OSError, RuntimeError) as exc:
            raise _ListenError(str(exc)) from exc
        bound = simulator.port  # type: ignore[attr-defined]
        print(
            f"simulator serving {where.format(host=host, port=bound)}; Ctrl-C stops it",
            flush=True,
        )
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
