"""One Modbus connection (TCP, or a serial port shared by many units).

A link owns a pymodbus async client and runs single requests with its own
timeout and retry loop. pymodbus' internal retries are set to zero so the
timing is the link's, and its automatic reconnect is off because the
agent's device task owns reconnecting. Vendor exceptions end here: callers see the
:mod:`drivers.errors` tree only.

Transaction ids (Modbus TCP): pymodbus 3.16 silently skips a response whose
transaction id differs from the request's (``FramerBase.handleFrame``), so
the request times out and, after a few timeouts, the connection is closed.
The link instead watches raw packets with pymodbus' ``trace_packet`` hook:
it records the id it sent, and when an answer carries another id it rewrites
the id to the expected one so pymodbus hands the answer over at once. In
strict mode the link then rejects that answer with
:class:`TransactionIdMismatchError`; in lenient mode it accepts it, which is
safe because a link has at most one request in flight.

Serial ports: every unit on one port shares one link, one client and one
lock, found in a module-level registry keyed by port path and released by
reference count. The units' tasks start together, so they open the link
together: the first call starts the one connect attempt and the others
wait for its outcome. After a timeout on a serial line the link stays idle
for one more timeout before the next request, so a late reply is discarded
instead of being read as the answer to that request.
"""

from __future__ import annotations

import asyncio
import grp
import inspect
import logging
import os
import pwd
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.errors import (
    DriverConnectError,
    DriverProtocolError,
    DriverTimeoutError,
)
from drivers.spec import ModbusRtuSpec, ModbusTcpSpec, TransactionIdCheck

logger = logging.getLogger(__name__)

EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    7: "NEGATIVE ACKNOWLEDGE",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}
"""Exception codes of the Modbus Application Protocol 1.1b3, section 7."""

GATEWAY_EXCEPTIONS: Final = frozenset({10, 11})
"""Exception codes a gateway sends when the device behind it is unreachable
or silent, so no response came from the device itself."""

EXCEPTION_ADVICE: Final[dict[int, str]] = {
    1: "the device does not support this function; check the table",
    2: (
        "check the table, address and count against the device's register "
        "map (a Modicon number such as 40011 is holding offset 10)"
    ),
    3: "check the count against the device's register map",
    10: "check the gateway's routing for this unit id",
    11: (
        "check the unit id, and that the device behind the gateway is powered and wired"
    ),
}
"""Advice on what to check next, for the exception codes a configuration
can cause."""

# pymodbus 3.10 renamed the unit id keyword from ``slave`` to ``device_id``.
_UNIT_KEYWORD: Final = (
    "device_id"
    if "device_id"
    in inspect.signature(AsyncModbusTcpClient.read_holding_registers).parameters
    else "slave"
)


class ModbusExceptionError(DriverProtocolError):
    """The server responded to a request with a Modbus exception code."""

    def __init__(
        self,
        *,
        device: str,
        unit_id: int,
        function_code: int,
        address: int,
        count: int,
        exception_code: int,
    ) -> None:
        name = EXCEPTION_NAMES.get(exception_code, "UNKNOWN EXCEPTION")
        message = (
            f"device {device!r} unit {unit_id} function {function_code} "
            f"address {address} count {count}: {name} ({exception_code})"
        )
        advice = EXCEPTION_ADVICE.get(exception_code)
        if advice is not None:
            message = f"{message}; {advice}"
        super().__init__(message, device=device)
        self.unit_id = unit_id
        self.function_code = function_code
        self.address = address
        self.count = count
        self.exception_code = exception_code
        self.exception_name = name


class TransactionIdMismatchError(DriverProtocolError):
    """A Modbus TCP response carried another transaction id than the request."""

    def __init__(self, *, device: str, sent: int, received: int) -> None:
        super().__init__(
            f"device {device!r}: transaction id mismatch (sent {sent}, got {received})",
            device=device,
        )
        self.sent = sent
        self.received = received


class _TransactionWatch:
    """The ``trace_packet`` hook that checks Modbus TCP transaction ids."""

    def __init__(self) -> None:
        self.sent: bytes | None = None
        """The transaction id of the request in flight, as sent."""
        self.mismatch: tuple[int, int] | None = None

    def __call__(self, sending: bool, packet: bytes) -> bytes:
        # Runs twice per request, so the common case compares raw bytes.
        tid = packet[:2]
        if sending:
            self.sent, self.mismatch = tid, None
            return packet
        sent = self.sent
        if tid == sent or sent is None or len(tid) < 2:
            return packet
        self.mismatch = (int.from_bytes(sent, "big"), int.from_bytes(tid, "big"))
        return sent + packet[2:]


class ModbusLink:
    """A connected pymodbus client plus the lock that serialises its use."""

    def __init__(
        self,
        client: AsyncModbusTcpClient | AsyncModbusSerialClient,
        *,
        endpoint: str,
        watch: _TransactionWatch | None = None,
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.lock = asyncio.Lock()
        self.watch = watch
        self.users = 0
        self.serial_settings: tuple[int, str, int, int] | None = None
        self._opening: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    async def open(self, timeout_s: float) -> None:
        """Open the connection unless it is open.

        Calls made while an attempt is in progress wait for that attempt
        and share its outcome, whatever their own ``timeout_s``. A second
        connect on the same pymodbus client would fail, because the port
        is already open and locked, and would close the shared client.

        Raises:
            DriverConnectError: the connection could not be opened.
        """
        if self.connected:
            return
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(
                self._connect(timeout_s), name=f"modbus open {self.endpoint}"
            )
            self._opening.add_done_callback(_retrieve_outcome)

        # A cancelled caller leaves the attempt running for the others.
        await asyncio.shield(self._opening)

    async def _connect(self, timeout_s: float) -> None:
        try:
            ok = await asyncio.wait_for(self.client.connect(), timeout_s)
        except (TimeoutError, OSError, ModbusException) as exc:
            self.client.close()
            raise self._connect_error(repr(exc)) from exc
        if not ok:
            self.client.close()
            raise self._connect_error("")

    def _connect_error(self, detail: str) -> DriverConnectError:
        # pymodbus 3.16 logs the OS error of a failed serial open and
        # returns False, so the port is examined again here.
        if self.serial_settings is not None:
            detail = serial_port_problem(self.endpoint) or detail
        message = f"cannot connect to {self.endpoint}"
        return DriverConnectError(f"{message}: {detail}" if detail else message)

    def close(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        self.client.close()


def _retrieve_outcome(task: asyncio.Task[None]) -> None:
    # Marks the exception as retrieved when every caller was cancelled,
    # so asyncio does not report it as never retrieved.
    if not task.cancelled():
        task.exception()


def serial_port_problem(port: str) -> str | None:
    """Return why ``port`` cannot be opened, or None if no reason is found.

    Only the file system is examined, so opening a port, which toggles
    its modem lines, is left to pymodbus. A pyserial URL such as
    ``socket://host:port`` is not a file and returns None.
    """
    if "://" in port:
        return None
    try:
        status = os.stat(port)
    except FileNotFoundError:
        return (
            "no such file or directory; check serial_port and that the "
            "adapter is plugged in (ls /dev/serial/by-id/ lists adapters)"
        )
    except PermissionError:
        return "permission denied on a directory above the port"
    except OSError as exc:
        return exc.strerror or repr(exc)

    if not stat.S_ISCHR(status.st_mode):
        return (
            "not a serial device: expected a character device, found "
            f"mode {stat.filemode(status.st_mode)}"
        )
    effective = os.access in os.supports_effective_ids
    if os.access(port, os.R_OK | os.W_OK, effective_ids=effective):
        return None

    mode = stat.filemode(status.st_mode)
    owner = _user_name(status.st_uid)
    group = _group_name(status.st_gid)
    return (
        f"permission denied (mode {mode}, owner {owner}, group {group}); "
        f"{_access_hint(status)}"
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _access_hint(status: os.stat_result) -> str:
    group_rw = stat.S_IRGRP | stat.S_IWGRP
    if status.st_mode & group_rw != group_rw:
        return (
            "the group may not read and write the port, so grant group "
            "dialout access with a udev rule"
        )
    group = _group_name(status.st_gid)
    if group != "dialout":
        return f"add the user that runs cmagent to group {group!r}"
    return (
        "add the user that runs cmagent to group 'dialout'; the systemd "
        "unit does so with SupplementaryGroups=dialout, and a shell user "
        "needs 'sudo usermod -aG dialout USER' and a new login"
    )


def open_tcp_link(spec: ModbusTcpSpec) -> ModbusLink:
    """Create (not yet connected) the link of one Modbus TCP device."""
    watch = _TransactionWatch()
    client = AsyncModbusTcpClient(
        spec.host,
        port=spec.port,
        timeout=spec.timeout_s,
        retries=0,
        reconnect_delay=0,
        trace_packet=watch,
    )
    return ModbusLink(client, endpoint=f"{spec.host}:{spec.port}", watch=watch)


_SERIAL_LINKS: dict[str, ModbusLink] = {}


def acquire_serial_link(spec: ModbusRtuSpec) -> ModbusLink:
    """Return the shared link of ``spec.serial_port``, creating it if needed.

    Raises:
        DriverConnectError: the port is in use with other line settings.
    """
    link = _SERIAL_LINKS.get(spec.serial_port)
    settings = (spec.baudrate, spec.parity, spec.stopbits, spec.bytesize)
    if link is None:
        client = AsyncModbusSerialClient(
            spec.serial_port,
            framer=FramerType.RTU,
            baudrate=spec.baudrate,
            parity=spec.parity,
            stopbits=spec.stopbits,
            bytesize=spec.bytesize,
            timeout=spec.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        link = ModbusLink(client, endpoint=spec.serial_port)
        link.serial_settings = settings
        _SERIAL_LINKS[spec.serial_port] = link
    elif link.serial_settings != settings:
        raise DriverConnectError(
            f"device {spec.device_id!r}: serial port {spec.serial_port} is "
            f"open with (baudrate, parity, stopbits, bytesize) "
            f"{link.serial_settings}, found {settings}",
            device=spec.device_id,
        )
    link.users += 1
    return link


def release_serial_link(link: ModbusLink) -> None:
    """Drop one user of a shared serial link; the last one closes it."""
    link.users -= 1
    if link.users <= 0:
        link.close()
        if _SERIAL_LINKS.get(link.endpoint) is link:
            del _SERIAL_LINKS[link.endpoint]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestTarget:
    """The device side of every request: who is asked, and how patiently."""

    device: str
    unit_id: int
    timeout_s: float
    retries: int
    tid_check: TransactionIdCheck = TransactionIdCheck.STRICT


def request_arguments(target: RequestTarget, **kwargs: object) -> dict[str, object]:
    """Return the keyword arguments of a pymodbus request to ``target``.

    ``kwargs`` are the request's own, such as ``count`` or ``value``; the
    unit id is added under the keyword the installed pymodbus expects.
    """
    return {**kwargs, _UNIT_KEYWORD: target.unit_id}


async def execute(
    link: ModbusLink,
    call: Callable[..., Awaitable[ModbusPDU]],
    target: RequestTarget,
    function_code: int,
    address: int,
    quantity: int,
    arguments: Mapping[str, object],
) -> ModbusPDU:
    """Run one request with timeout and retries.

    ``call`` is a bound pymodbus client method such as
    ``read_input_registers``, called with ``address`` and ``arguments``
    from :func:`request_arguments`. ``quantity`` is the register or bit
    count, for messages.

    Each attempt is bounded by pymodbus itself: its transaction manager
    waits for the response with ``asyncio.wait_for`` and the client's
    ``timeout`` (read in pymodbus 3.8.0 and 3.16.1), which the link sets
    to ``target.timeout_s``. A second timer here (``asyncio.timeout``)
    would cost about 4 µs per request on Python 3.11, half the time it
    takes to decode a block of 33 float32 points.

    Raises:
        DriverConnectError: the link is not connected, or was lost.
        DriverTimeoutError: no valid answer after ``retries`` + 1 attempts.
        ModbusExceptionError: the server answered with an exception code.
        TransactionIdMismatchError: strict check and a foreign answer.
    """
    for attempt in range(target.retries + 1):
        # On a closed link pymodbus raises ConnectionException at once, so
        # only a retry, after a failed attempt, checks the link first.
        if attempt and not link.connected:
            raise DriverConnectError(
                f"{_where(target, function_code, address, quantity)}: "
                f"not connected to {link.endpoint}",
                device=target.device,
            )
        try:
            if link.serial_settings is None:
                # pymodbus runs one request at a time per client, and the
                # transaction id check below runs before anything else can.
                response = await call(address, **arguments)
            else:
                async with link.lock:
                    response = await _call_serial(
                        link, call, address, arguments, target.timeout_s
                    )
            if response is None:
                # pymodbus 3.8 returns None instead of raising when no
                # response arrived in time.
                raise TimeoutError("no response")
        except (TimeoutError, ModbusException) as exc:
            if isinstance(exc, ConnectionException) or not link.connected:
                raise DriverConnectError(
                    f"{_where(target, function_code, address, quantity)}: "
                    f"connection to {link.endpoint} lost",
                    device=target.device,
                ) from exc
            logger.debug(
                "modbus.request_retry",
                extra={"device": target.device, "attempt": attempt, "cause": repr(exc)},
            )
            continue

        mismatch = link.watch.mismatch if link.watch is not None else None
        if mismatch is not None and target.tid_check is TransactionIdCheck.STRICT:
            raise TransactionIdMismatchError(
                device=target.device, sent=mismatch[0], received=mismatch[1]
            )
        if response.isError() or response.function_code != function_code:
            _raise_for_response(response, target, function_code, address, quantity)
        return response
    raise DriverTimeoutError(
        f"{_where(target, function_code, address, quantity)}: "
        f"no response within {target.timeout_s} s",
        device=target.device,
    )


async def _call_serial(
    link: ModbusLink,
    call: Callable[..., Awaitable[ModbusPDU]],
    address: int,
    arguments: Mapping[str, object],
    timeout_s: float,
) -> ModbusPDU:
    """Run one attempt on a serial line, whose lock the caller holds."""
    try:
        return await call(address, **arguments)
    except (TimeoutError, ModbusException) as exc:
        if not isinstance(exc, ConnectionException) and link.connected:
            await _let_late_reply_pass(timeout_s)
        raise


def _where(
    target: RequestTarget, function_code: int, address: int, quantity: int
) -> str:
    return (
        f"device {target.device!r} unit {target.unit_id} function "
        f"{function_code} address {address} count {quantity}"
    )


def _raise_for_response(
    response: ModbusPDU,
    target: RequestTarget,
    function_code: int,
    address: int,
    quantity: int,
) -> None:
    """Raise for an exception response or a response to another function."""
    if response.isError():
        raise ModbusExceptionError(
            device=target.device,
            unit_id=target.unit_id,
            function_code=function_code,
            address=address,
            count=quantity,
            exception_code=int(getattr(response, "exception_code", 0)),
        )
    if response.function_code != function_code:
        # pymodbus pairs responses by transaction id only, so registers a
        # peer sent for another function would be decoded as this block.
        raise DriverProtocolError(
            f"{_where(target, function_code, address, quantity)}: expected a "
            f"response to function {function_code}, found function "
            f"{response.function_code}",
            device=target.device,
        )


async def _let_late_reply_pass(wait_s: float) -> None:
    # An RTU reply carries no transaction id, and pymodbus takes the first
    # frame from the right unit as the answer. A reply that arrives after
    # its request timed out would then be read as the answer to the next
    # request, with another block's values. Keeping the line idle, with
    # the lock held, lets pymodbus discard such a reply as unsolicited.
    # NOTE: a reply later than twice the timeout can still be mistaken;
    # RTU offers no way to tell it apart.
    await asyncio.sleep(wait_s)
