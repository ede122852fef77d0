"""OPC UA driver: scalars by subscription or polling, waveforms as arrays.

The driver connects once per :meth:`OpcUaDriver.connect` call and never
reconnects by itself: the agent's device task owns reconnecting and its
backoff. After the connection breaks, reads raise
:class:`~drivers.errors.DriverConnectError` and :attr:`OpcUaDriver.state`
becomes ``disconnected`` until the next successful ``connect()``. Node
references are resolved through the server's NamespaceArray on every
connect, so a server that renumbers its namespaces is followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from typing import Final
from urllib.parse import urlsplit

import numpy as np
from asyncua import Client, ua
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.base import Quality, QualityReason, Reading, Waveform
from drivers.errors import (
    DriverConfigError,
    DriverConnectError,
    DriverDecodeError,
    DriverError,
    DriverTimeoutError,
)
from drivers.opcua_errors import (
    NodeNotFoundError,
    endpoint_for_messages,
    translate_error,
    unreachable_advice,
)
from drivers.opcua_nodes import check_node_ref, resolve_nodes, summarize_missing
from drivers.opcua_security import apply_security, check_security
from drivers.opcua_subscription import ScalarSubscription, disable_library_watchdog
from drivers.opcua_values import (
    missing_reading,
    quality_from_status,
    reading_from_value,
    source_time,
    stale_reading,
    status_of,
)
from drivers.spec import OpcUaNodeRef, OpcUaSpec, OpcUaWaveformSpec

logger = logging.getLogger(__name__)

SILENT_INTERVALS: Final = 3.0
"""Publishing intervals without a publish response before a subscription is
considered silent and recreated."""


# Status codes of an ActivateSession that rejected the user identity.
_LOGIN_REJECTED_CODES: Final = frozenset(
    {
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadIdentityTokenInvalid,
        ua.StatusCodes.BadIdentityTokenRejected,
    }
)


class OpcUaLoginError(DriverConnectError):
    """The server rejected the user name, the password or anonymous login.

    ``status`` is the OPC UA status name, such as ``BadUserAccessDenied``.
    Neither the message nor the fields contain the password.
    """

    def __init__(
        self,
        message: str,
        *,
        device: str,
        endpoint: str,
        username: str | None,
        status: str,
    ) -> None:
        super().__init__(message, device=device)
        self.endpoint = endpoint
        self.username = username
        self.status = status


# asyncua 2.1 logs every request it sends at DEBUG, and the
# ActivateSessionRequest carries the password in plain text under
# SecurityPolicy None. A filter on a logger sees only records logged there,
# so it goes on that exact logger.
_REQUEST_LOGGER: Final = "asyncua.client.ua_client.UASocketProtocol"


class _IdentityTokenFilter(logging.Filter):
    """Drops library debug records that show a user name identity token."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "UserNameIdentityToken" not in record.getMessage()


def _hide_identity_tokens() -> None:
    library_logger = logging.getLogger(_REQUEST_LOGGER)
    if not any(isinstance(f, _IdentityTokenFilter) for f in library_logger.filters):
        library_logger.addFilter(_IdentityTokenFilter())


def _endpoint_path(url: str) -> str:
    """Return the path of an endpoint URL, ``/`` when it has none."""
    return urlsplit(url).path.rstrip("/") or "/"


class DriverState(enum.Enum):
    """Connection state of a driver."""

    CONNECTED = "connected"
    CONNECTING = "connecting"
    DISCONNECTED = "disconnected"


class OpcUaDriver:
    """A driver for one OPC UA server endpoint.

    Args:
        spec: the endpoint, security settings, points and waveforms.
        stale_after_s: age after which a subscribed value is reported
            uncertain/stale; by default three publishing intervals plus the
            request timeout.

    Raises:
        DriverConfigError: a node reference or the security settings cannot
            work; raised here, before any I/O.
    """

    def __init__(self, spec: OpcUaSpec, *, stale_after_s: float | None = None) -> None:
        self.spec = spec
        self.device_id = spec.device_id
        self._check_config()
        self.stale_after_s = (
            stale_after_s
            if stale_after_s is not None
            else SILENT_INTERVALS * spec.publishing_interval_s + spec.request_timeout_s
        )
        self.last_error: DriverError | None = None
        self.subscription_recreations = 0
        self._state = DriverState.DISCONNECTED
        self._client: Client | None = None
        self._nodes: dict[OpcUaNodeRef, ua.NodeId] = {}
        self._missing: dict[OpcUaNodeRef, str] = {}
        self._subscription: ScalarSubscription | None = None
        self._namespaces: list[str] = []

    def _check_config(self) -> None:
        for point in self.spec.points:
            check_node_ref(
                point.node, device=self.device_id, where=f"points.{point.name}"
            )
        for waveform in self.spec.waveforms:
            where = f"waveforms.{waveform.name}"
            for role, ref in self._waveform_refs(waveform).items():
                check_node_ref(ref, device=self.device_id, where=f"{where}.{role}")
        check_security(self.spec)

    @staticmethod
    def _waveform_refs(waveform: OpcUaWaveformSpec) -> dict[str, OpcUaNodeRef]:
        refs = {"samples": waveform.samples, "sample_rate": waveform.sample_rate}
        if waveform.rpm is not None:
            refs["rpm"] = waveform.rpm
        if waveform.sequence is not None:
            refs["sequence"] = waveform.sequence
        return refs

    # --- state -------------------------------------------------------------------

    @property
    def state(self) -> DriverState:
        """The connection state, ``disconnected`` as soon as a loss is seen."""
        if self._state is DriverState.CONNECTED and self._library_lost_connection():
            return DriverState.DISCONNECTED
        return self._state

    @property
    def subscribed(self) -> bool:
        """Whether scalar values currently arrive by subscription."""
        return self._subscription is not None

    @property
    def namespaces(self) -> list[str]:
        """The server's NamespaceArray as read on the current connection."""
        return list(self._namespaces)

    def resolved_node(self, ref: OpcUaNodeRef) -> ua.NodeId | None:
        """Return the node id ``ref`` resolved to on this connection."""
        return self._nodes.get(ref)

    def _library_lost_connection(self) -> bool:
        # asyncua 2.1 watches the connection and records a loss in the
        # client state. Clients without that state only fail the next request.
        library_state = getattr(self._client, "state", None)
        value = getattr(library_state, "value", None)
        return value in ("disconnected", "disconnecting")

    # --- connect and close ----------------------------------------------------

    async def connect(self) -> None:
        """Open the session, resolve nodes and subscribe to the points.

        Raises:
            DriverTimeoutError: no session within ``connect_timeout_s``.
            DriverConnectError: the server cannot be reached or rejected
                the connection.
            NodeNotFoundError: none of the configured nodes is on the
                server. When only some are missing, their readings are bad.
        """
        if self.state is DriverState.CONNECTED:
            return
        await self._discard_client()
        self._state = DriverState.CONNECTING
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._open(), self.spec.connect_timeout_s)
        except TimeoutError as exc:
            await self._discard_client()
            raise self._fail(self._connect_timeout_error()) from exc
        except DriverError as exc:
            await self._discard_client()
            self._state = DriverState.DISCONNECTED
            raise self._fail(exc) from exc.__cause__
        except Exception as exc:
            await self._discard_client()
            error = translate_error(exc, self.spec, action="connect")
            if isinstance(error, DriverTimeoutError):
                error = DriverConnectError(str(error), device=self.device_id)
            raise self._fail(error) from exc

        self._state = DriverState.CONNECTED
        self.last_error = None
        logger.info(
            "opcua.connected",
            extra={
                "device": self.device_id,
                "endpoint": self.spec.endpoint,
                "duration_s": round(time.monotonic() - started, 3),
                "subscribed": self._subscription is not None,
            },
        )

    def _connect_timeout_error(self) -> DriverTimeoutError:
        spec = self.spec
        return DriverTimeoutError(
            f"device {self.device_id!r}: connecting to "
            f"{endpoint_for_messages(spec.endpoint)} timed out after "
            f"{spec.connect_timeout_s} s (connect_timeout); "
            f"{unreachable_advice(spec.endpoint)}, or raise connect_timeout "
            "for a slow server",
            device=self.device_id,
        )

    async def _open(self) -> None:
        spec = self.spec
        client = Client(
            spec.endpoint,
            timeout=spec.request_timeout_s,
            watchdog_intervall=max(spec.request_timeout_s, 1.0),
        )
        client.application_uri = spec.application_uri
        client.name = "cmagent"
        client.description = "cmagent condition-monitoring agent"
        if spec.max_message_size > 0:
            client.max_messagesize = spec.max_message_size
        if spec.username is not None:
            client.set_user(spec.username)
            if spec.password is not None:
                client.set_password(spec.password)
                _hide_identity_tokens()
        disable_library_watchdog(client)
        self._client = client

        await apply_security(client, spec)
        try:
            await client.connect()
        except UaStatusCodeError as exc:
            if exc.code & 0xFFFF0000 not in _LOGIN_REJECTED_CODES:
                raise
            raise self._login_error(exc) from exc
        await self._check_endpoint_path(client)
        self._namespaces = list(await client.get_namespace_array())
        await self._resolve(client)
        if spec.use_subscriptions:
            await self._subscribe(client)

    def _login_error(self, exc: UaStatusCodeError) -> OpcUaLoginError:
        spec = self.spec
        status = ua.StatusCode(exc.code & 0xFFFF0000).name
        if spec.username is None:
            identity = "anonymous login"
        else:
            identity = f"login as user {spec.username!r}"
        how = "with a password" if spec.password is not None else "without a password"
        return OpcUaLoginError(
            f"device {self.device_id!r}: {identity} {how} rejected by "
            f"{spec.endpoint} ({status}); check the user name and the password "
            "in credential opcua-<device id>-password, "
            "CMAGENT_OPCUA_PASSWORD__<DEVICE ID> or password_file",
            device=self.device_id,
            endpoint=spec.endpoint,
            username=spec.username,
            status=status,
        )

    async def _check_endpoint_path(self, client: Client) -> None:
        """Warn when the server lists no endpoint with the configured path.

        Many servers accept any path, so a wrong one connects, but it may
        name another server of a multi-server host. Servers may put their
        own host name in the list, so only the paths are compared. This
        costs one GetEndpoints request per connect.
        """
        try:
            endpoints = await client.get_endpoints()
        except (UaError, OSError) as exc:
            logger.debug(
                "opcua.endpoints_unavailable",
                extra={
                    "device": self.device_id,
                    "endpoint": endpoint_for_messages(self.spec.endpoint),
                    "cause": repr(exc),
                },
            )
            return

        urls = sorted({ep.EndpointUrl for ep in endpoints if ep.EndpointUrl})
        configured = _endpoint_path(self.spec.endpoint)
        if not urls or any(_endpoint_path(url) == configured for url in urls):
            return
        logger.warning(
            "opcua.endpoint_url_mismatch",
            extra={
                "device": self.device_id,
                "endpoint": endpoint_for_messages(self.spec.endpoint),
                "server_endpoints": [endpoint_for_messages(url) for url in urls],
                "cause": (
                    f"the server lists no endpoint with path {configured!r}, "
                    "but accepted the connection; check that endpoint names "
                    "the intended server, or copy one of server_endpoints"
                ),
            },
        )

    async def _resolve(self, client: Client) -> None:
        """Resolve every configured reference on this connection.

        Raises:
            NodeNotFoundError: no reference resolved. A wrong browse root,
                a namespace the server has not registered yet, and an
                address space still being built each cause this.
        """
        refs = [point.node for point in self.spec.points]
        for waveform in self.spec.waveforms:
            refs.extend(self._waveform_refs(waveform).values())
        resolution = await resolve_nodes(client, refs, self._namespaces)
        self._nodes = resolution.found
        self._missing = resolution.missing
        if not resolution.missing:
            return

        summary = summarize_missing(resolution.missing)
        configured = len(resolution.found) + len(resolution.missing)
        if not resolution.found:
            raise self._node_not_found(
                f"none of the {configured} configured nodes found on "
                f"{self.spec.endpoint}: {summary}. Check browse_root, the "
                "browse paths and the namespace URIs. Each connect looks "
                "for the nodes again, so nodes that the server adds later "
                "are found",
                resolution.missing,
            )
        # NOTE: the nodes missing here read as bad until the next
        # connect, because the driver does not look for them meanwhile.
        logger.warning(
            "opcua.nodes_not_found",
            extra={
                "device": self.device_id,
                "endpoint": self.spec.endpoint,
                "missing": len(resolution.missing),
                "configured": configured,
                "cause": summary,
            },
        )

    def _node_not_found(
        self, detail: str, missing: dict[OpcUaNodeRef, str]
    ) -> NodeNotFoundError:
        return NodeNotFoundError(
            f"device {self.device_id!r}: {detail}",
            device=self.device_id,
            endpoint=self.spec.endpoint,
            missing={ref.describe(): reason for ref, reason in missing.items()},
            namespaces=self._namespaces,
        )

    async def _subscribe(self, client: Client) -> None:
        node_ids = [
            self._nodes[point.node]
            for point in self.spec.points
            if point.node in self._nodes
        ]
        if not node_ids:
            return
        subscription = ScalarSubscription(
            client, node_ids, self.spec.publishing_interval_s
        )
        await subscription.create()
        self._subscription = subscription
        if subscription.rejected:
            self._warn_rejected(subscription.rejected)

    def _warn_rejected(self, rejected: dict[ua.NodeId, ua.StatusCode]) -> None:
        statuses = {
            point.name: rejected[self._nodes[point.node]].name
            for point in self.spec.points
            if self._nodes.get(point.node) in rejected
        }
        logger.warning(
            "opcua.monitored_items_rejected",
            extra={
                "device": self.device_id,
                "endpoint": endpoint_for_messages(self.spec.endpoint),
                "points": statuses,
                "cause": "the server rejected monitoring their nodes, so "
                "each read polls them",
            },
        )

    async def close(self) -> None:
        """Close the session and the connection; safe to call at any time."""
        await self._discard_client()
        self._state = DriverState.DISCONNECTED

    async def _discard_client(self) -> None:
        client, self._client = self._client, None
        self._subscription = None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.spec.request_timeout_s)
        # A disconnect that timed out can leave the socket open.
        with contextlib.suppress(Exception):
            client.disconnect_socket()

    def _fail(self, error: DriverError) -> DriverError:
        if isinstance(error, DriverConnectError | DriverTimeoutError):
            if self._state is not DriverState.CONNECTING:
                logger.warning(
                    "opcua.connection_lost",
                    extra={
                        "device": self.device_id,
                        "endpoint": self.spec.endpoint,
                        "cause": str(error),
                    },
                )
            self._state = DriverState.DISCONNECTED
        self.last_error = error
        return error

    async def _require_client(self) -> Client:
        if self._state is DriverState.CONNECTED and self._library_lost_connection():
            # Stop asyncua's background tasks now rather than at connect().
            await self._discard_client()
            raise self._fail(
                DriverConnectError(
                    f"device {self.device_id!r}: connection to "
                    f"{self.spec.endpoint} lost",
                    device=self.device_id,
                )
            )
        if self._state is DriverState.CONNECTED and self._client is not None:
            return self._client
        if isinstance(self.last_error, DriverConnectError | DriverTimeoutError):
            raise DriverConnectError(str(self.last_error), device=self.device_id)
        raise DriverConnectError(
            f"device {self.device_id!r}: not connected to {self.spec.endpoint}; "
            "call connect() first",
            device=self.device_id,
        )

    # --- scalar points -----------------------------------------------------------

    async def read_points(self) -> list[Reading]:
        """Return one reading per configured point, bad ones included.

        With subscriptions the latest notified values are returned. Until
        a new subscription has notified a value for every node, after a
        connect or after a silent or lost one was recreated, the values
        are polled instead. Nodes that the server does not monitor are
        polled on every call.

        Raises:
            DriverConnectError: the connection is broken.
            DriverTimeoutError: a request timed out without a response.
        """
        client = await self._require_client()
        subscribed = self.spec.use_subscriptions and self._nodes
        if subscribed and await self._subscription_usable(client):
            return await self._subscribed_readings(client)
        return await self._poll(client)

    async def _subscription_usable(self, client: Client) -> bool:
        subscription = self._subscription
        if subscription is not None:
            limit_s = SILENT_INTERVALS * subscription.publishing_interval_s
            silent_s = subscription.silent_for_s()
            if subscription.lost_status is None and silent_s <= limit_s:
                # The driver polls until the first publish has delivered a
                # value for every node, so no point reads bad meanwhile.
                return subscription.has_every_value()
            cause = (
                subscription.lost_status.name
                if subscription.lost_status is not None
                else f"silent for {silent_s:.1f} s, over {limit_s:.1f} s"
            )
            logger.warning(
                "opcua.subscription_recreating",
                extra={
                    "device": self.device_id,
                    "endpoint": self.spec.endpoint,
                    "cause": cause,
                },
            )
            await subscription.delete()
            self._subscription = None

        try:
            await self._subscribe(client)
        except Exception as exc:
            error = translate_error(exc, self.spec, action="create subscription")
            if isinstance(error, DriverConnectError):
                raise self._fail(error) from exc
            logger.warning(
                "opcua.subscription_failed",
                extra={
                    "device": self.device_id,
                    "endpoint": self.spec.endpoint,
                    "cause": str(error),
                },
            )
            return False
        if subscription is not None:
            self.subscription_recreations += 1
        return False

    async def _subscribed_readings(self, client: Client) -> list[Reading]:
        """Build readings from notified values, polling unmonitored nodes."""
        assert self._subscription is not None
        unmonitored = list(self._subscription.rejected)
        values = await self._read_values(client, unmonitored, action="read points")
        polled = dict(zip(unmonitored, values, strict=True))

        readings = []
        for point in self.spec.points:
            node_id = self._nodes.get(point.node)
            if node_id is None:
                reason = self._missing.get(point.node, "node not resolved")
                readings.append(missing_reading(point, reason, source=self.device_id))
                continue
            if node_id in polled:
                reading = reading_from_value(
                    point, polled[node_id], source=self.device_id
                )
                readings.append(reading)
                continue
            entry = self._subscription.latest.get(node_id)
            if entry is None:
                readings.append(
                    missing_reading(
                        point, "no value received yet", source=self.device_id
                    )
                )
                continue
            reading = reading_from_value(point, entry[0], source=self.device_id)
            age_s = self._subscription.confirmed_age_s(node_id) or 0.0
            if age_s > self.stale_after_s:
                reading = stale_reading(reading, age_s)
            readings.append(reading)
        return readings

    async def _poll(self, client: Client) -> list[Reading]:
        points = [p for p in self.spec.points if p.node in self._nodes]
        values = await self._read_values(
            client, [self._nodes[p.node] for p in points], action="read points"
        )
        by_name = {p.name: v for p, v in zip(points, values, strict=True)}

        readings = []
        for point in self.spec.points:
            value = by_name.get(point.name)
            if value is None:
                reason = self._missing.get(point.node, "node not resolved")
                readings.append(missing_reading(point, reason, source=self.device_id))
            else:
                readings.append(reading_from_value(point, value, source=self.device_id))
        return readings

    async def _read_values(
        self, client: Client, node_ids: list[ua.NodeId], *, action: str, node: str = ""
    ) -> list[ua.DataValue]:
        if not node_ids:
            return []
        params = ua.ReadParameters()
        params.NodesToRead = [
            ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
            for node_id in node_ids
        ]
        try:
            return list(await client.uaclient.read(params))
        except Exception as exc:
            raise self._fail(
                translate_error(exc, self.spec, action=action, node=node)
            ) from exc

    # --- waveforms ---------------------------------------------------------------

    async def read_waveform(self, name: str) -> Waveform:
        """Read a waveform's samples, sample rate, rpm and sequence at once.

        The variables are read in one Read service call, so they belong to
        the same capture on servers that update them together.

        Raises:
            DriverConfigError: no waveform has that name.
            NodeNotFoundError: a node of the waveform was not on the server
                when the driver connected; a new connection resolves it
                again.
            DriverProtocolError: the response exceeds ``max_message_size``,
                or the server rejected the read.
            DriverDecodeError: the sample rate or samples are not numbers.
            DriverConnectError: the connection is broken.
        """
        spec = self._waveform_spec(name)
        client = await self._require_client()
        refs = self._waveform_refs(spec)
        for role, ref in refs.items():
            if ref not in self._nodes:
                reason = self._missing.get(ref, "not resolved")
                raise self._node_not_found(
                    f"waveform {name!r} {role} node {ref.describe()} not "
                    f"found on {self.spec.endpoint}: {reason}",
                    {ref: reason},
                )

        values = await self._read_values(
            client,
            [self._nodes[ref] for ref in refs.values()],
            action=f"read waveform {name!r}",
            node=refs["samples"].describe(),
        )
        by_role = dict(zip(refs, values, strict=True))
        return self._build_waveform(spec, by_role)

    def _waveform_spec(self, name: str) -> OpcUaWaveformSpec:
        for waveform in self.spec.waveforms:
            if waveform.name == name:
                return waveform
        names = [w.name for w in self.spec.waveforms]
        raise DriverConfigError(
            f"device {self.device_id!r}: unknown waveform {name!r}; "
            f"expected one of {names}",
            device=self.device_id,
        )

    def _build_waveform(
        self, spec: OpcUaWaveformSpec, values: dict[str, ua.DataValue]
    ) -> Waveform:
        samples_value = values["samples"]
        fs_hz = self._number(values["sample_rate"])
        if fs_hz is None or not fs_hz > 0:
            raise DriverDecodeError(
                f"device {self.device_id!r}: waveform {spec.name!r} sample rate "
                f"node {spec.sample_rate.describe()}: expected a positive number "
                f"of Hz, found {fs_hz!r}",
                device=self.device_id,
            )
        raw = samples_value.Value.Value if samples_value.Value is not None else None
        try:
            samples = np.asarray(raw if raw is not None else [], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DriverDecodeError(
                f"device {self.device_id!r}: waveform {spec.name!r} samples node "
                f"{spec.samples.describe()}: expected an array of numbers, found "
                f"{type(raw).__name__}",
                device=self.device_id,
            ) from exc
        if samples.ndim != 1:
            samples = samples.reshape(-1)

        quality = quality_from_status(status_of(samples_value))
        if quality.is_good and samples.size == 0:
            quality = Quality.bad(QualityReason.DECODE_ERROR, "empty sample array")
        sequence = self._number(values["sequence"]) if "sequence" in values else None
        rpm = self._number(values["rpm"]) if "rpm" in values else None
        return Waveform(
            asset=spec.asset,
            point=spec.name,
            timestamp=source_time(samples_value),
            fs_hz=float(fs_hz),
            samples=samples * spec.scale if spec.scale != 1.0 else samples,
            unit=spec.unit,
            rpm=rpm,
            quality=quality,
            source=self.device_id,
            sequence=int(sequence) if sequence is not None else None,
        )

    @staticmethod
    def _number(value: ua.DataValue) -> float | None:
        if not status_of(value).is_good():
            return None
        raw = value.Value.Value if value.Value is not None else None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None
        return float(raw)
