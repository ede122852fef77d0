"""Translate asyncua exceptions into driver errors at the driver boundary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

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
    where = f"device {device!r}: {action} on {spec.endpoint}"
    if node:
        where += f" (node {node})"

    if isinstance(exc, TimeoutError):
        return DriverTimeoutError(
            f"{where}: timed out, no response within {spec.request_timeout_s} s "
            "(request_timeout)",
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
    if isinstance(exc, ConnectionError | OSError):
        detail = str(exc) or type(exc).__name__
        return DriverConnectError(
            f"{where}: connection failed: {detail}", device=device
        )
    if isinstance(exc, UaError):
        return DriverProtocolError(f"{where}: {exc}", device=device)
    return DriverProtocolError(
        f"{where}: unexpected {type(exc).__name__}: {exc}", device=device
    )


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
