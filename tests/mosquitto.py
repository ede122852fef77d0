"""A real Mosquitto broker on a free loopback port, for tests.

Self-contained (standard library, ``cryptography`` and ``paho-mqtt``) so any test
package can import it::

    from tests.mosquitto import MosquittoBroker, make_tls_files

    with MosquittoBroker(tmp_path) as broker:
        ...  # broker.host, broker.port

Variants: ``tls=make_tls_files(dir)`` for a TLS listener that requires a
client certificate signed by the same CA, ``users={"name": "secret"}`` for a
password file with anonymous access off. :meth:`MosquittoBroker.restart`
stops the broker and starts it again on the same port. :class:`MqttSubscriber`
is a paho client that collects what the broker delivers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt import client as mqtt

HOST = "127.0.0.1"
INSTALL_HINT = "install it with `apt-get install mosquitto`"


class MosquittoNotInstalledError(RuntimeError):
    """The ``mosquitto`` or ``mosquitto_passwd`` program is not installed."""


def find_program(name: str) -> str:
    """Return the path of a Mosquitto program, looking in sbin directories too.

    Raises:
        MosquittoNotInstalledError: the program is not found.
    """
    path = shutil.which(name) or shutil.which(
        name, path="/usr/sbin:/usr/local/sbin:/sbin"
    )
    if path is None:
        raise MosquittoNotInstalledError(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """PEM files of a test CA, a server and a client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(
    directory: Path,
    *,
    common_name: str = "cmagent test CA",
    server_names: tuple[str, ...] = ("localhost",),
    server_ips: tuple[str, ...] = ("127.0.0.1",),
) -> TlsFiles:
    """Generate a CA and server and client certificates signed by it.

    The server certificate names ``server_names`` and ``server_ips`` as
    subject alternative names, so a client with hostname checking accepts
    it for those names only. Keys are written with mode 0600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
    server_key, server_cert = _leaf(
        ca_cert, ca_key, "mosquitto", ExtendedKeyUsageOID.SERVER_AUTH, alt_names
    )
    client_key, client_cert = _leaf(
        ca_cert, ca_key, "cmagent", ExtendedKeyUsageOID.CLIENT_AUTH, []
    )

    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    _write_cert(files.ca_cert, ca_cert)
    _write_cert(files.server_cert, server_cert)
    _write_cert(files.client_cert, client_cert)
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    return files


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = _builder(subject, ca_cert.subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if alt_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alt_names), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(pem)


class MosquittoBroker:
    """One Mosquitto process with a generated configuration.

    Args:
        directory: Where the configuration, password file and log go.
        port: The listener port; a free one is chosen when None.
        tls: Serve TLS with these files and require a client certificate.
        users: User names and passwords; anonymous access is then off.
        persistence: Keep sessions, subscriptions and retained messages
            across a restart, in ``directory``.
        extra_config: Lines appended to the generated configuration.

    Raises:
        MosquittoNotInstalledError: Mosquitto is not installed.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        users: Mapping[str, str] | None = None,
        persistence: bool = False,
        extra_config: str = "",
    ) -> None:
        self.executable = find_program("mosquitto")
        self.host = HOST
        self.port = port or free_port()
        self.directory = directory
        self.tls = tls
        self.config_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"
        self.persistence = persistence
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self._write_config(users or {}, extra_config)

    def _write_config(self, users: Mapping[str, str], extra_config: str) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "log_dest stderr",
            "log_type all",
            "log_timestamp false",
        ]
        if os.geteuid() == 0:
            # Run as root, Mosquitto switches to the ``mosquitto`` user after
            # reading its configuration, and could then no longer read the
            # 0600 password and key files in the test's private directory.
            lines.append("user root")
        if users:
            password_file = self.directory / "passwords"
            _write_password_file(password_file, users)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
            ]
        self.config_path.write_text("\n".join([*lines, extra_config, ""]))

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections.

        Raises:
            RuntimeError: the broker exited or did not listen in time; the
                message contains the end of its log.
        """
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.executable, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with status {self._process.returncode} "
                    f"on port {self.port}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"mosquitto did not listen on {self.host}:{self.port} within "
            f"{timeout_s} s:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker with SIGTERM (SIGKILL if it does not exit)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop the broker and start it again on the same port."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """Return everything the broker has logged."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines the broker has logged."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Write a Mosquitto password file with ``mosquitto_passwd -b``."""
    program = find_program("mosquitto_passwd")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(descriptor)
    for name, password in users.items():
        subprocess.run(
            [program, "-b", str(path), name, password],
            check=True,
            capture_output=True,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedMessage:
    """One message as a subscriber received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        """Decode the payload as JSON."""
        return json.loads(self.payload)


class MqttSubscriber:
    """A paho-mqtt subscriber that collects messages in a thread-safe list.

    Args:
        host: The broker host.
        port: The broker port.
        topics: Topic filters, subscribed with QoS 1 after every connect.
        client_id: The client id; a random one when empty.
        clean_session: False keeps the session across disconnects and
            broker restarts (with persistence), so QoS 1 messages sent while
            the subscriber was away are delivered when it reconnects.
        tls: Connect with TLS, trusting this CA and presenting its client
            certificate.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: tuple[str, ...] = ("#",),
        *,
        client_id: str = "",
        clean_session: bool = True,
        tls: TlsFiles | None = None,
    ) -> None:
        self._topics = topics
        self._messages: list[ReceivedMessage] = []
        self._condition = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
        )
        self._client.reconnect_delay_set(1, 1)
        if tls is not None:
            self._client.tls_set(
                ca_certs=str(tls.ca_cert),
                certfile=str(tls.client_cert),
                keyfile=str(tls.client_key),
            )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"subscriber got no SUBACK from {host}:{port}")

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        self._subscribed.clear()
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_subscribe(self, *args: object) -> None:
        self._subscribed.set()

    def _on_message(
        self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        received = ReceivedMessage(
            topic=message.topic,
            payload=message.payload,
            qos=message.qos,
            retain=bool(message.retain),
        )
        with self._condition:
            self._messages.append(received)
            self._condition.notify_all()

    def wait_subscribed(self, timeout_s: float = 10.0) -> bool:
        """Wait until the subscriptions of the latest connect are acknowledged."""
        return self._subscribed.wait(timeout_s)

    def messages(self, topic: str | None = None) -> list[ReceivedMessage]:
        """Return the messages received so far, on ``topic`` if given."""
        with self._condition:
            return [m for m in self._messages if topic in (None, m.topic)]

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[ReceivedMessage], bool] = lambda m: True,
        timeout_s: float = 10.0,
        start: int = 0,
    ) -> ReceivedMessage:
        """Wait for a message on ``topic``, from index ``start`` of the list.

        Raises:
            TimeoutError: no such message arrived in time; the message lists
                the topics seen.
        """
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                for message in self._messages[start:]:
                    if message.topic == topic and predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = sorted({m.topic for m in self._messages})
                    raise TimeoutError(
                        f"no matching message on {topic!r} within "
                        f"{timeout_s} s; topics seen: {seen}"
                    )
                self._condition.wait(remaining)

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish a message and wait until it is sent."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
