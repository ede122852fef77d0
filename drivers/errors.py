"""Exceptions raised by drivers.

Drivers translate pymodbus and asyncua exceptions at their boundary
(``raise ... from exc``) so nothing above them sees a vendor exception::

    DriverError                 (registered as an agent.errors.AgentError)
    ├── DriverConfigError       invalid point, address or profile, before I/O
    ├── DriverConnectError      cannot open or keep the connection
    ├── DriverTimeoutError      no response within the request timeout
    ├── DriverProtocolError     exception code, transaction id mismatch, bad frame
    └── DriverDecodeError       registers cannot be decoded as configured

Each error keeps the facts of its message as attributes.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base of every driver error.

    Args:
        message: the full human-readable message.
        device: id of the device the error concerns, if any.
    """

    def __init__(self, message: str, *, device: str = "") -> None:
        super().__init__(message)
        self.device = device


class DriverConfigError(DriverError):
    """A point, address or profile that cannot work, found before any I/O."""


class DriverConnectError(DriverError):
    """The connection could not be opened or was lost."""


class DriverTimeoutError(DriverError):
    """The peer sent no response within the request timeout."""


class DriverProtocolError(DriverError):
    """The peer responded with an error or an invalid frame."""


class DriverDecodeError(DriverError):
    """The response cannot be decoded as the point is configured."""
