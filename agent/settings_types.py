"""Building blocks of the settings models: the strict base model, the
error for rules between fields, identifiers, and numeric types that reject
TOML booleans and non-finite floats, and a positive duration whose
message is the same for a zero and a negative value.

Pydantic's lax mode reads ``true`` as 1 and ``false`` as 0, so without
these types ``unit_id = true`` would poll unit 1. Every int, float and
integer Literal field of the settings models uses them. TOML also has
``nan`` and ``inf``, which ``ConfigFloat`` rejects; only a range bound,
where infinity means "no limit", takes ``RangeBoundFloat``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
)
from pydantic_core import PydanticKnownError, core_schema

from agent import units
from agent.units import describe_boolean

__all__ = [
    "ConfigFloat",
    "ConfigInt",
    "HostName",
    "Identifier",
    "OpcUaEndpoint",
    "PositiveDurationS",
    "RangeBoundFloat",
    "RejectBoolean",
    "SettingsRuleError",
    "StrictModel",
    "describe_boolean",
    "raise_problems",
]


Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""A name that is safe in MQTT topics, file names and log fields."""

OPCUA_SCHEME: Final = "opc.tcp://"
OPCUA_DEFAULT_PORT: Final = 4840
"""The port IANA registered for OPC UA over TCP."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsRuleError(ValueError):
    """A rule between fields of one table is broken.

    ``problems`` contains ``(field, message)`` pairs, one per broken rule, so a
    report can name the exact key of each problem, not only the table.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {text}" for key, text in problems))
        self.problems = tuple(problems)


def raise_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise SettingsRuleError(problems)


def _choices(values: list[Any]) -> str:
    """Return ``0, 1 or 2``, the way pydantic lists the values of a Literal."""
    labels = [repr(value) for value in values]
    if len(labels) == 1:
        return labels[0]
    return ", ".join(labels[:-1]) + " or " + labels[-1]


_STRICT_ERROR_TYPES: Final = {
    "int": "int_type",
    "float": "float_type",
    "literal": "literal_error",
}
"""Error type that pydantic's strict mode gives a boolean, by core schema type."""


class RejectBoolean:
    """Annotated marker that makes an int, float or Literal field reject booleans.

    Pydantic's lax mode reads ``true`` as 1 and ``false`` as 0, but a TOML
    boolean at a numeric key is always a mistake. The error types are the
    ones strict mode gives. Any other input goes on to lax validation, so an
    integer still fills a float and a numeric string from an environment
    variable still parses, also for a Literal of integers.
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = handler(source)
        error_type = _STRICT_ERROR_TYPES.get(schema["type"])
        if error_type is None:
            raise TypeError(
                f"RejectBoolean expects an int, float or Literal, found {source!r}"
            )
        context = None
        integer_choices = False
        if schema["type"] == "literal":
            context = {"expected": _choices(schema["expected"])}
            integer_choices = all(type(v) is int for v in schema["expected"])

        def reject_boolean(value: Any) -> Any:
            if isinstance(value, bool):
                raise PydanticKnownError(error_type, context)
            # Lax mode turns "2" into 2 for an int but not for a Literal
            # of ints, and environment variables always arrive as text.
            if integer_choices and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    return int(value.strip())
            return value

        return core_schema.no_info_before_validator_function(reject_boolean, schema)


ConfigInt = Annotated[int, RejectBoolean()]
"""An integer setting; ``true`` and ``false`` are errors, not 1 and 0."""

ConfigFloat = Annotated[float, AllowInfNan(False), RejectBoolean()]
"""A finite float setting that also takes an integer; booleans, ``nan`` and
``inf`` are errors."""

RangeBoundFloat = Annotated[float, RejectBoolean()]
"""A bound of a valid range, where ``inf`` or ``-inf`` leaves that side open.
``nan`` passes this type, so the range check must reject it."""


def _reject_negative_duration(value: object) -> object:
    # units.parse_duration_s rejects a negative number with "0 or more",
    # which reads as if 0 were valid here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if value < 0 and math.isfinite(value):
        raise ValueError(f"expected a duration greater than 0, found {value!r}")
    return value


PositiveDurationS = Annotated[
    units.PositiveDurationS, BeforeValidator(_reject_negative_duration)
]
"""A duration in seconds greater than zero, such as a timeout or an interval
waited out in a loop. Zero and negative values get the same message."""


# --- network addresses -------------------------------------------------------

_HOST_AND_PORT: Final = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*)(?::(.*))?$")
"""A host (an IPv6 address in brackets, or text without a colon) and an
optional ``:port``."""


def _split_host_port(netloc: str) -> tuple[str, str | None] | None:
    """Split ``host:port``, or return None when the host is ambiguous."""
    match = _HOST_AND_PORT.match(netloc)
    if match is None:
        return None
    return match.group(1), match.group(2)


def _unbracketed(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def check_opcua_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` if it is an ``opc.tcp://HOST:PORT[/path]`` URL.

    Raises:
        ValueError: the scheme is not ``opc.tcp``, or the host or a port
            from 1 to 65535 is missing. A user name or password in the URL
            is rejected without echoing it.
    """
    expected = f"expected an {OPCUA_SCHEME}HOST:PORT URL"
    if not endpoint.startswith(OPCUA_SCHEME):
        rest = endpoint.split("://", 1)[-1]
        hint = f"; write {OPCUA_SCHEME + rest!r}" if rest.strip() else ""
        raise ValueError(f"{expected}, found {endpoint!r}{hint}")

    netloc = endpoint[len(OPCUA_SCHEME) :].split("/", 1)[0]
    if "@" in netloc:
        raise ValueError(
            f"{expected}, found a URL with a user name or password in it; "
            "remove it from the URL, set username and store the password "
            "as the device's credential or password_file"
        )
    parts = _split_host_port(netloc)
    if parts is None or not _unbracketed(parts[0]):
        hint = "write the server's host name or IP address before the port"
        if netloc.count(":") > 1:
            hint = "write an IPv6 address in brackets, as in 'opc.tcp://[::1]:4840'"
        raise ValueError(f"{expected}, found {endpoint!r} without a valid host; {hint}")
    host, port = parts
    if port is None:
        raise ValueError(
            f"{expected}, found {endpoint!r} without a port; the standard OPC "
            f"UA port is {OPCUA_DEFAULT_PORT}, as in "
            f"'{OPCUA_SCHEME}{host}:{OPCUA_DEFAULT_PORT}'"
        )
    is_number = port.isascii() and port.isdigit()
    if not is_number or not 1 <= int(port) <= 65535:
        port_text = port if is_number else repr(port)
        raise ValueError(
            f"expected a port from 1 to 65535 in the {OPCUA_SCHEME}HOST:PORT "
            f"URL, found {port_text} in {endpoint!r}"
        )
    return endpoint


def check_host(host: str) -> str:
    """Return ``host`` if it is a host name or an IP address, without a port.

    An IPv6 address such as ``::1`` is a valid host even though it
    contains colons.

    Raises:
        ValueError: the host is empty, contains spaces, a scheme or a
            ``:port`` suffix.
    """
    expected = "expected a host name or IP address"
    if not host.strip():
        raise ValueError(f"{expected}, found {host!r}")
    if host != host.strip() or any(char.isspace() for char in host):
        raise ValueError(f"{expected} without spaces, found {host!r}")
    if "://" in host:
        rest = host.split("://", 1)[1].split("/", 1)[0]
        name, port = _split_host_port(rest) or (rest, None)
        hint = f"host = {_unbracketed(name)!r}"
        if port is not None and port.isascii() and port.isdigit():
            hint += f" and port = {int(port)}"
        raise ValueError(f"{expected} without a scheme, found {host!r}; set {hint}")
    if ":" not in host:
        return host
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return host

    name, port = _split_host_port(host) or (host, None)
    if port is not None and port.isascii() and port.isdigit():
        raise ValueError(
            f"{expected} without a port, found {host!r}; set "
            f"host = {_unbracketed(name)!r} and port = {int(port)}"
        )
    if port is None and name.startswith("["):
        raise ValueError(
            f"{expected}, found {host!r}; write an IPv6 address without "
            f"brackets, as in host = {_unbracketed(name)!r}"
        )
    raise ValueError(f"{expected}, found {host!r}")


OpcUaEndpoint = Annotated[str, AfterValidator(check_opcua_endpoint)]
"""An ``opc.tcp://HOST:PORT`` URL, optionally followed by a path."""

HostName = Annotated[str, AfterValidator(check_host)]
"""A host name or IP address (IPv6 without brackets), with no port."""
