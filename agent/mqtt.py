"""Live publishing of readings, health and alarms over MQTT (paho-mqtt 2).

MQTT is best effort: while the broker is unreachable, readings and health
messages wait in a bounded queue that drops the oldest message when full
and counts the drop. The current alarm of each asset is remembered and
published again, retained, after every reconnect, before the queue. The
status topic ``{prefix}/{gateway}/status`` carries ``online`` (retained) and
the Last Will ``offline``.

Threads: the ``publish_*`` methods and :meth:`MqttPublisher.start` return
at once and may be called from the asyncio event loop. paho runs its
network loop, reconnects and callbacks in its own thread.
"""

from __future__ import annotations

import enum
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConfigError
from agent.mqtt_commands import Command, InvalidCommandError, parse_command
from agent.mqtt_payloads import (
    asset_topic,
    check_topic_level,
    encode_fields,
    encode_reading,
    reading_topic,
)
from agent.settings import MqttSettings
from drivers.base import Reading

logger = logging.getLogger(__name__)

_AUTH_REASONS: Final = frozenset({134, 135})
"""MQTT 5 CONNACK reasons 'bad user name or password' and 'not authorized'.

paho 2 maps the MQTT 3.1.1 return codes 4 and 5 onto the same two codes."""

_SESSION_EXPIRY_S: Final = 86_400
"""MQTT 5 session lifetime requested when ``clean_session`` is false."""

_STOP_TIMEOUT_S: Final = 2.0
_PAHO_QUEUE_MARGIN: Final = 100


class PublisherState(enum.Enum):
    """Connection state of a :class:`MqttPublisher`."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    AUTH_REJECTED = "auth_rejected"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class PublisherCounters:
    """Message counts since the publisher was created.

    ``published`` counts messages paho has written to the socket (QoS 0)
    or the broker has acknowledged (QoS 1 and 2), status messages included.
    ``dropped`` counts readings and health messages lost to a full queue.
    ``queued`` is the number waiting for a connection now.
    """

    published: int
    dropped: int
    queued: int


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


class _Client(paho.Client):
    """A paho client that keeps the error of its last failed connect.

    paho's network thread swallows the ``OSError`` of a failed connect and
    calls ``on_connect_fail`` without it; the cause is needed for the log.
    """

    last_connect_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise


class MqttPublisher:
    """Publish live data to an MQTT broker without blocking the caller.

    Args:
        settings: The ``[mqtt]`` settings.
        gateway_id: The gateway's id, the second topic level.
        password: The broker password, from credentials; never logged.
        on_command: Called with each valid command when
            ``settings.commands_enabled`` is true. It runs in paho's network
            thread, so it must return quickly and hand work to the event loop
            with ``loop.call_soon_threadsafe``. An exception it raises is
            logged and does not stop the network loop.

    Raises:
        ConfigError: a TLS file is missing or unreadable, or the gateway id
            is not a valid topic level.
    """

    def __init__(
        self,
        settings: MqttSettings,
        gateway_id: str,
        *,
        password: str | None = None,
        on_command: Callable[[Command], None] | None = None,
    ) -> None:
        try:
            check_topic_level("gateway.id", gateway_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._settings = settings
        self._gateway = gateway_id
        self._base = f"{settings.topic_prefix}/{gateway_id}"
        self._status_topic = f"{self._base}/status"
        self._command_prefix = f"{self._base}/cmd/"
        self._on_command = on_command

        self._lock = threading.Lock()
        self._state = PublisherState.DISCONNECTED
        self._flushing = False
        self._queue: deque[_Message] = deque()
        self._alarms: dict[str, _Message] = {}
        self._alarms_pending: set[str] = set()
        self._published = 0
        self._dropped = 0
        self._dropped_in_outage = 0
        self._down_since: float | None = None
        self._auth_attempts = 0
        self._connect_failures = 0
        self._last_error: str | None = None
        self._client = self._build_client(password)

    # --- public surface -----------------------------------------------------

    @property
    def state(self) -> PublisherState:
        """The connection state; ``auth_rejected`` until a connect succeeds."""
        with self._lock:
            return self._state

    @property
    def counters(self) -> PublisherCounters:
        """A snapshot of the message counters."""
        with self._lock:
            return PublisherCounters(
                published=self._published,
                dropped=self._dropped,
                queued=len(self._queue),
            )

    @property
    def last_error(self) -> str | None:
        """Why the last connect failed or the broker rejected it, if it did."""
        with self._lock:
            return self._last_error

    def start(self) -> None:
        """Start connecting in paho's thread and return at once.

        The broker may be down: paho keeps retrying with a backoff of 1 s
        doubling up to ``settings.reconnect_max``.
        """
        settings = self._settings
        clean_start: bool | int = paho.MQTT_CLEAN_START_FIRST_ONLY
        properties = None
        if settings.protocol == "5":
            clean_start = settings.clean_session
            if not settings.clean_session:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = _SESSION_EXPIRY_S

        with self._lock:
            self._down_since = time.monotonic()
        self._client.connect_async(
            settings.host,
            settings.port,
            keepalive=max(1, round(settings.keepalive)),
            clean_start=clean_start,
            properties=properties,
        )
        self._client.loop_start()
        logger.info(
            "mqtt.started host=%s port=%d client_id=%s protocol=%s tls=%s",
            settings.host,
            settings.port,
            self._client_id,
            settings.protocol,
            settings.tls.enabled,
        )

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Publish ``offline`` (retained), disconnect and end paho's thread.

        Blocks for up to ``timeout_s`` while the broker acknowledges
        ``offline``; from a coroutine, call it with ``asyncio.to_thread``.
        Messages still queued are discarded.
        """
        with self._lock:
            was_connected = self._state is PublisherState.CONNECTED
            self._state = PublisherState.STOPPED
            self._queue.clear()

        if was_connected:
            info = self._client.publish(
                self._status_topic, b"offline", qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                logger.warning("mqtt.offline_not_sent cause=%s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        logger.info("mqtt.stopped published=%d dropped=%d", *self._totals())

    def publish_reading(self, reading: Reading) -> None:
        """Publish one live reading, or queue it while disconnected.

        Raises:
            ValueError: the asset or point is not a valid topic level, or the
                timestamp is naive.
        """
        topic = reading_topic(self._settings.topic_prefix, self._gateway, reading)
        payload = encode_reading(reading)
        self._submit(_Message(topic, payload, self._settings.qos_readings))

    def publish_health(self, asset: str, payload: Mapping[str, object]) -> None:
        """Publish an asset's health fields, or queue them while disconnected.

        Raises:
            ValueError: ``asset`` is not a valid topic level.
            TypeError: a field contains a value JSON cannot represent.
        """
        topic = asset_topic(self._settings.topic_prefix, self._gateway, asset, "health")
        body = encode_fields(payload, now=datetime.now(UTC))
        self._submit(_Message(topic, body, self._settings.qos_health))

    def publish_alarm(self, asset: str, payload: Mapping[str, object]) -> None:
        """Publish an asset's current alarm state, retained.

        The state is remembered and published again after every reconnect,
        so a broker restart does not lose it.

        Raises:
            ValueError: ``asset`` is not a valid topic level.
            TypeError: a field contains a value JSON cannot represent.
        """
        topic = asset_topic(self._settings.topic_prefix, self._gateway, asset, "alarm")
        body = encode_fields(payload, now=datetime.now(UTC))
        message = _Message(topic, body, self._settings.qos_alarms, retain=True)

        with self._lock:
            if self._state is PublisherState.STOPPED:
                return
            self._alarms[asset] = message
            if self._state is not PublisherState.CONNECTED or self._flushing:
                # The flush after the next connect sends it.
                self._alarms_pending.add(asset)
                return
        self._send(message)

    # --- set-up ---------------------------------------------------------------

    def _build_client(self, password: str | None) -> _Client:
        settings = self._settings
        self._client_id = settings.client_id or f"cmagent-{self._gateway}"
        if settings.protocol == "5":
            client = _Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
            )
        else:
            client = _Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                clean_session=settings.clean_session,
                protocol=MQTTProtocolVersion.MQTTv311,
            )

        # Callbacks catch their own errors; this guards paho's thread against
        # anything that slips through.
        client.suppress_exceptions = True
        client.reconnect_delay_set(1, max(1, round(settings.reconnect_max)))
        client.max_queued_messages_set(settings.queue_size + _PAHO_QUEUE_MARGIN)
        client.will_set(self._status_topic, b"offline", qos=1, retain=True)
        if settings.username is not None:
            client.username_pw_set(settings.username, password)
        if settings.tls.enabled:
            self._configure_tls(client)

        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        return client

    def _configure_tls(self, client: _Client) -> None:
        tls = self._settings.tls
        for key, path in (
            ("ca_file", tls.ca_file),
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"mqtt.tls.{key}: file not found: {path}")
        if (tls.cert_file is None) != (tls.key_file is None):
            raise ConfigError(
                "mqtt.tls: expected both cert_file and key_file or neither, "
                f"found cert_file={tls.cert_file}, key_file={tls.key_file}"
            )

        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load certificates: {exc}") from None
        client.tls_insecure_set(not tls.check_hostname)

    # --- sending --------------------------------------------------------------

    def _submit(self, message: _Message) -> None:
        with self._lock:
            if self._state is PublisherState.STOPPED:
                self._dropped += 1
                return
            if self._state is not PublisherState.CONNECTED or self._flushing:
                self._enqueue(message)
                return
        self._send(message)

    def _enqueue(self, message: _Message) -> None:
        # Caller holds the lock.
        if len(self._queue) >= self._settings.queue_size:
            self._queue.popleft()
            self._dropped += 1
            self._dropped_in_outage += 1
            if self._dropped_in_outage == 1:
                logger.warning(
                    "mqtt.queue_full queue_size=%d: dropping the oldest "
                    "live messages until the broker is reachable",
                    self._settings.queue_size,
                )
        self._queue.append(message)

    def _send(self, message: _Message) -> None:
        info = self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        if info.rc is MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        if info.rc is MQTTErrorCode.MQTT_ERR_NO_CONN and message.qos == 0:
            # The connection dropped before on_disconnect ran; keep it.
            with self._lock:
                if self._state is not PublisherState.STOPPED:
                    self._enqueue(message)
            return
        # MQTT_ERR_NO_CONN with QoS > 0 leaves the message in paho's own
        # bounded queue, which sends it after the reconnect.
        if info.rc is MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            with self._lock:
                self._dropped += 1
            logger.debug("mqtt.paho_queue_full topic=%s", message.topic)

    def _flush(self) -> None:
        """Send remembered alarms, then the queue, in paho's thread."""
        while True:
            with self._lock:
                if self._state is not PublisherState.CONNECTED:
                    self._flushing = False
                    return
                if self._alarms_pending:
                    message = self._alarms[self._alarms_pending.pop()]
                elif self._queue:
                    message = self._queue.popleft()
                else:
                    self._flushing = False
                    return
            self._send(message)

    def _totals(self) -> tuple[int, int]:
        with self._lock:
            return self._published, self._dropped

    # --- paho callbacks (paho's network thread) -------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            if reason_code.is_failure:
                self._connect_rejected(reason_code)
                return
            self._connected(client)
        except Exception:
            logger.exception("mqtt.callback_failed callback=on_connect")

    def _connect_rejected(self, reason_code: ReasonCode) -> None:
        settings = self._settings
        auth = reason_code.value in _AUTH_REASONS
        with self._lock:
            self._last_error = str(reason_code)
            if auth:
                self._state = PublisherState.AUTH_REJECTED
                self._auth_attempts += 1
            attempt = self._auth_attempts
        if auth:
            logger.warning(
                "mqtt.auth_rejected host=%s port=%d username=%s attempt=%d "
                "reason=%r: check the MQTT user name and password",
                settings.host,
                settings.port,
                settings.username,
                attempt,
                str(reason_code),
            )
        else:
            logger.warning(
                "mqtt.connect_refused host=%s port=%d reason=%r",
                settings.host,
                settings.port,
                str(reason_code),
            )

    def _connected(self, client: paho.Client) -> None:
        with self._lock:
            if self._state is PublisherState.STOPPED:
                return
            downtime_s = time.monotonic() - (self._down_since or time.monotonic())
            dropped = self._dropped_in_outage
            self._state = PublisherState.CONNECTED
            self._flushing = True
            self._alarms_pending = set(self._alarms)
            self._down_since = None
            self._dropped_in_outage = 0
            self._auth_attempts = 0
            self._connect_failures = 0
            self._last_error = None
            queued = len(self._queue)

        client.publish(self._status_topic, b"online", qos=1, retain=True)
        if self._settings.commands_enabled:
            client.subscribe(f"{self._command_prefix}#", qos=1)
        logger.info(
            "mqtt.connected host=%s port=%d downtime_s=%.1f queued=%d dropped=%d",
            self._settings.host,
            self._settings.port,
            downtime_s,
            queued,
            dropped,
        )
        self._flush()

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        try:
            error = self._client.last_connect_error
            cause = f"{type(error).__name__}: {error}" if error else "unknown"
            with self._lock:
                self._connect_failures += 1
                failures = self._connect_failures
                self._last_error = cause
            # One WARNING per outage; the retries repeat at DEBUG.
            log = logger.warning if failures == 1 else logger.debug
            log(
                "mqtt.connect_failed host=%s port=%d attempt=%d cause=%s",
                self._settings.host,
                self._settings.port,
                failures,
                cause,
            )
        except Exception:
            logger.exception("mqtt.callback_failed callback=on_connect_fail")

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            with self._lock:
                was_connected = self._state is PublisherState.CONNECTED
                if was_connected:
                    self._state = PublisherState.DISCONNECTED
                    self._flushing = False
                    self._down_since = time.monotonic()
            if was_connected:
                logger.warning(
                    "mqtt.disconnected host=%s port=%d reason=%r: live "
                    "messages are queued until the reconnect",
                    self._settings.host,
                    self._settings.port,
                    str(reason_code),
                )
        except Exception:
            logger.exception("mqtt.callback_failed callback=on_disconnect")

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._lock:
            self._published += 1

    def _handle_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties,
    ) -> None:
        try:
            refused = [str(code) for code in reason_codes if code.is_failure]
            if refused:
                logger.error(
                    "mqtt.commands_subscribe_failed topic=%s# reason=%s: "
                    "commands will not arrive",
                    self._command_prefix,
                    refused[0],
                )
            else:
                logger.info("mqtt.commands_subscribed topic=%s#", self._command_prefix)
        except Exception:
            logger.exception("mqtt.callback_failed callback=on_subscribe")

    def _handle_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        try:
            self._receive_command(message.topic, message.payload)
        except Exception:
            logger.exception(
                "mqtt.command_failed topic=%s: the command handler raised",
                message.topic,
            )

    def _receive_command(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self._command_prefix):
            logger.debug("mqtt.message_ignored topic=%s", topic)
            return
        try:
            command = parse_command(
                topic, topic.removeprefix(self._command_prefix), payload
            )
        except InvalidCommandError as exc:
            logger.warning(
                "mqtt.command_rejected topic=%s size=%d start=%r: %s",
                topic[:200],
                len(payload),
                payload[:32],
                exc.reason,
            )
            return

        logger.info("mqtt.command_received command=%s", command.name.value)
        if self._on_command is not None:
            self._on_command(command)
