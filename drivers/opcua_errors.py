"""Translate asyncua exceptions into driver errors at the driver boundary.

The helpers for endpoints in messages live here too: an endpoint is shown
without any login it contains, and socket errors become advice that names
the server's host and port.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

from asyncua import ua
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.errors import (
    DriverConnectError,
    DriverError,
    DriverProtocolError,
    DriverTimeoutError,
)
from drivers.spec import OpcUaSpec


class MessageSizeLimitError(DriverProtocolError):
    """An OPC UA message exceeded the negotiated maximum message size.

    asyncua closes the connection when this happens, so the driver is
    disconnected afterwards.
    """

    def __init__(
        self, message: str, *, device: str, limit: str, limit_value: int, node: str
    ) -> None:
        super().__init__(message, device=device)
        self.limit = limit
        self.limit_value = limit_value
        self.node = node


class NodeNotFoundError(DriverError):
    """Configured nodes that the server does not have, at least not yet.

    The references are well formed, so this is not a configuration error.
    A server may register a namespace or build its address space after it
    starts, and the device task retries the connection.

    ``missing`` maps each reference, as configured, to the reason it was
    not found. ``namespaces`` is the server's NamespaceArray.
    """

    def __init__(
        self,
        message: str,
        *,
        device: str,
        endpoint: str,
        missing: Mapping[str, str],
        namespaces: Sequence[str],
    ) -> None:
        super().__init__(message, device=device)
        self.endpoint = endpoint
        self.missing = dict(missing)
        self.namespaces = tuple(namespaces)


# Status codes that mean the session or channel is gone, so the connection
# has to be opened again.
_CONNECTION_CODES: Final = frozenset(
    {
        ua.StatusCodes.BadConnectionClosed,
        ua.StatusCodes.BadSecureChannelClosed,
        ua.StatusCodes.BadSecureChannelIdInvalid,
        ua.StatusCodes.BadSessionClosed,
        ua.StatusCodes.BadSessionIdInvalid,
        ua.StatusCodes.BadSessionNotActivated,
        ua.StatusCodes.BadServerHalted,
        ua.StatusCodes.BadShutdown,
        ua.StatusCodes.BadNotConnected,
        ua.StatusCodes.BadServerNotConnected,
        ua.StatusCodes.BadCommunicationError,
        ua.StatusCodes.BadConnectionRejected,
        ua.StatusCodes.BadDisconnect,
        ua.StatusCodes.BadTcpEndpointUrlInvalid,
    }
)
_SIZE_CODES: Final = frozenset(
    {
        ua.StatusCodes.BadRequestTooLarge,
        ua.StatusCodes.BadResponseTooLarge,
        ua.StatusCodes.BadTcpMessageTooLarge,
        ua.StatusCodes.BadEncodingLimitsExceeded,
    }
)


def translate_error(
    exc: BaseException, spec: OpcUaSpec, *, action: str, node: str = ""
) -> DriverError:
    """Build the driver error for an exception raised by asyncua or the OS.

    ``action`` names what the driver was doing (``read points``); ``node``
    names the node involved, as configured. The caller raises the result
    ``from exc``.
    """
    device = spec.device_id
    endpoint = endpoint_for_messages(spec.endpoint)
    where = f"device {device!r}: {action} on {endpoint}"
    if node:
        where += f" (node {node})"

    if isinstance(exc, TimeoutError):
        advice = ""
        if action == "connect":
            advice = f"; {unreachable_advice(spec.endpoint)}"
        return DriverTimeoutError(
            f"{where}: timed out, no response within {spec.request_timeout_s} s "
            f"(request_timeout){advice}",
            device=device,
        )
    if isinstance(exc, UaStatusCodeError):
        code = exc.code & 0xFFFF0000
        name = ua.StatusCode(code).name
        if code in _SIZE_CODES:
            return _size_error(where, name, spec, node)
        if code == ua.StatusCodes.BadTimeout:
            return DriverTimeoutError(f"{where}: server reported {name}", device=device)
        if code in _CONNECTION_CODES:
            return DriverConnectError(f"{where}: {name}", device=device)
        return DriverProtocolError(f"{where}: server returned {name}", device=device)
    if isinstance(exc, OSError):
        return DriverConnectError(
            f"{where}: {_socket_failure(exc, spec.endpoint)}", device=device
        )
    if isinstance(exc, UaError):
        return DriverProtocolError(f"{where}: {exc}", device=device)
    return DriverProtocolError(
        f"{where}: unexpected {type(exc).__name__}: {exc}", device=device
    )


def endpoint_for_messages(endpoint: str) -> str:
    """Return ``endpoint`` without the user name and password it may contain.

    asyncua takes a login from ``opc.tcp://user:password@host:port``, so an
    endpoint given to the driver directly may carry one.
    """
    scheme, separator, rest = endpoint.partition("://")
    if not separator:
        return endpoint
    netloc, slash, path = rest.partition("/")
    if "@" not in netloc:
        return endpoint
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def server_address(endpoint: str) -> str:
    """Return the ``host port N`` part of an endpoint for advice in messages."""
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "the host and port of the endpoint"
    if not host:
        return "the host and port of the endpoint"
    return f"{host} port {port}" if port is not None else host


def unreachable_advice(endpoint: str) -> str:
    """Return the next step after a connect to ``endpoint`` got no response."""
    return (
        f"check that {server_address(endpoint)} is reachable from this "
        "gateway, that no firewall drops the connection and that the port "
        "belongs to an OPC UA server"
    )


def _socket_failure(exc: OSError, endpoint: str) -> str:
    """Describe a socket error in plain words, with the next step to take."""
    address = server_address(endpoint)
    if isinstance(exc, ConnectionRefusedError):
        return (
            "connection refused; check that an OPC UA server listens on "
            f"{address} and that the endpoint names the right host and port"
        )
    if isinstance(exc, socket.gaierror):
        host = urlsplit(endpoint).hostname or endpoint_for_messages(endpoint)
        return (
            f"host name {host!r} could not be resolved ({exc.strerror}); "
            "check the host in the endpoint and the DNS settings of this gateway"
        )
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return (
            f"{address} is unreachable ({exc.strerror}); check the address "
            "in the endpoint and the network route from this gateway"
        )
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError):
        return "the server or the network closed the connection"
    detail = exc.strerror or str(exc) or type(exc).__name__
    return f"connection failed: {detail}"


def _size_error(
    where: str, name: str, spec: OpcUaSpec, node: str
) -> MessageSizeLimitError:
    if spec.max_message_size > 0:
        advice = (
            f"the limit max_message_size is {spec.max_message_size} bytes; "
            "raise it above the message size (a 65536-sample Double array "
            "needs about 530000 bytes) or set 0 for no client limit"
        )
    else:
        advice = (
            "max_message_size is 0 (no client limit), so the server's own "
            "limit was exceeded; raise the server's maximum message size"
        )
    return MessageSizeLimitError(
        f"{where}: message too large ({name}); {advice}",
        device=spec.device_id,
        limit="max_message_size",
        limit_value=spec.max_message_size,
        node=node,
    )
