"""MqttPublisher with password authentication and TLS on Mosquitto."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.mqtt import MqttPublisher, PublisherState
from tests.agent.mqtt_support import (
    GATEWAY,
    READING_TOPIC,
    make_reading,
    settings_for,
    wait_until,
)
from tests.mosquitto import MosquittoBroker, MqttSubscriber, TlsFiles, make_tls_files

USER = "gateway"
PASSWORD = "s3cret-Pa55word"


def tls_options(files: TlsFiles, **overrides: object) -> dict[str, object]:
    tls: dict[str, object] = {
        "enabled": True,
        "ca_file": files.ca_cert,
        "cert_file": files.client_cert,
        "key_file": files.client_key,
    }
    tls.update(overrides)
    return {"tls": tls}


def auth_log_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("mqtt.auth_")]


class TestMqttPublisherAuth:
    def test_right_password_connects(self, mosquitto_factory, connect) -> None:
        broker = mosquitto_factory(users={USER: PASSWORD})

        publisher = connect(broker, username=USER, password=PASSWORD)

        assert publisher.state is PublisherState.CONNECTED

    def test_wrong_password_rejected(
        self, mosquitto_factory, connect, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="agent.mqtt")
        broker = mosquitto_factory(users={USER: PASSWORD})

        publisher = connect(broker, wait=False, username=USER, password="wrong")

        assert wait_until(lambda: len(auth_log_lines(caplog)) >= 2)
        assert publisher.state is PublisherState.AUTH_REJECTED
        lines = auth_log_lines(caplog)
        assert all(r.levelno == logging.WARNING for r in lines)
        for number, record in enumerate(lines, start=1):
            assert f"attempt={number} " in record.getMessage()
        assert all(r.exc_info is None for r in caplog.records)
        assert "Traceback" not in caplog.text
        assert "wrong" not in caplog.text
        assert PASSWORD not in caplog.text

    def test_one_log_line_per_attempt(
        self, mosquitto_factory, connect, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="agent.mqtt")
        broker = mosquitto_factory(users={USER: PASSWORD})

        connect(broker, wait=False, username=USER, password="wrong")
        assert wait_until(lambda: len(auth_log_lines(caplog)) >= 2)

        # Each attempt is one CONNECT the broker logs as refused.
        attempts_in_log = [
            int(r.getMessage().split("attempt=")[1].split()[0])
            for r in auth_log_lines(caplog)
        ]
        assert attempts_in_log == list(range(1, len(attempts_in_log) + 1))
        refused = broker.log_text().count("not authorised")
        assert refused >= len(attempts_in_log)

    def test_missing_password_rejected(self, mosquitto_factory, connect) -> None:
        broker = mosquitto_factory(users={USER: PASSWORD})

        publisher = connect(broker, wait=False)

        assert wait_until(lambda: publisher.state is PublisherState.AUTH_REJECTED)

    def test_password_absent_from_repr(self, mosquitto: MosquittoBroker) -> None:
        settings = settings_for(mosquitto, username=USER)
        publisher = MqttPublisher(settings, GATEWAY, password=PASSWORD)

        assert PASSWORD not in repr(publisher)
        assert PASSWORD not in repr(vars(publisher))


class TestMqttPublisherTls:
    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
    def test_right_ca_connects_with_hostname_check(
        self, mosquitto_factory, connect, tls_files: TlsFiles, host: str
    ) -> None:
        broker = mosquitto_factory(tls=tls_files)

        publisher = connect(broker, host=host, **tls_options(tls_files))

        assert publisher.state is PublisherState.CONNECTED
        assert publisher.last_error is None

    def test_publishes_over_tls(
        self, mosquitto_factory, connect, tls_files: TlsFiles
    ) -> None:
        broker = mosquitto_factory(tls=tls_files)
        publisher = connect(broker, **tls_options(tls_files))

        with MqttSubscriber(broker.host, broker.port, tls=tls_files) as subscriber:
            publisher.publish_reading(make_reading(12.5))
            message = subscriber.wait_for(READING_TOPIC)

        assert message.json()["value"] == 12.5

    def test_wrong_ca_fails_clearly(
        self,
        mosquitto_factory,
        connect,
        tls_files: TlsFiles,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.WARNING, logger="agent.mqtt")
        broker = mosquitto_factory(tls=tls_files)
        other = make_tls_files(tmp_path / "other", common_name="other CA")

        publisher = connect(
            broker, wait=False, **tls_options(tls_files, ca_file=other.ca_cert)
        )

        assert wait_until(lambda: publisher.last_error is not None)
        assert publisher.state is PublisherState.DISCONNECTED
        assert "certificate verify failed" in (publisher.last_error or "")
        failures = [
            r for r in caplog.records if "mqtt.connect_failed" in r.getMessage()
        ]
        assert len(failures) == 1
        assert "certificate verify failed" in failures[0].getMessage()

    def test_hostname_mismatch_fails(
        self, mosquitto_factory, connect, tmp_path: Path
    ) -> None:
        files = make_tls_files(
            tmp_path / "named", server_names=("broker.invalid",), server_ips=()
        )
        broker = mosquitto_factory(tls=files)

        publisher = connect(broker, wait=False, **tls_options(files))

        assert wait_until(lambda: publisher.last_error is not None)
        assert "127.0.0.1" in (publisher.last_error or "")
        assert publisher.state is PublisherState.DISCONNECTED

    def test_hostname_check_off_accepts_mismatch(
        self, mosquitto_factory, connect, tmp_path: Path
    ) -> None:
        files = make_tls_files(
            tmp_path / "named", server_names=("broker.invalid",), server_ips=()
        )
        broker = mosquitto_factory(tls=files)

        publisher = connect(broker, **tls_options(files, check_hostname=False))

        assert publisher.state is PublisherState.CONNECTED

    def test_missing_ca_file_is_config_error(
        self, mosquitto: MosquittoBroker, tmp_path: Path
    ) -> None:
        missing = tmp_path / "absent-ca.pem"
        settings = settings_for(mosquitto, tls={"enabled": True, "ca_file": missing})

        with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file"):
            MqttPublisher(settings, GATEWAY)
