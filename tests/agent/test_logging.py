"""Logging set-up: formats, syslog priorities and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest
from pymodbus.logging import Log

from agent.logging_setup import (
    NEVER_DEBUG_LOGGERS,
    PROJECT_LOGGERS,
    QUIET_LIBRARY_LOGGERS,
    forget_secrets,
    quiet_library_loggers,
    register_secret,
    setup_logging,
)
from agent.settings import LoggingSettings

# The loggers setup_logging changes, root included (""), restored after
# each test so that one test's level does not leak into the next.
CHANGED_LOGGERS = ("", *PROJECT_LOGGERS, *QUIET_LIBRARY_LOGGERS, *NEVER_DEBUG_LOGGERS)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Captured log output; the handler and logger levels are reset after."""
    levels = {name: logging.getLogger(name).level for name in CHANGED_LOGGERS}
    stream = io.StringIO()
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "stream", None) is stream:
            root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(False)
    forget_secrets()


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


class TestJournalFormat:
    def test_priority_prefixes_without_timestamp(self, output: io.StringIO) -> None:
        setup_logging(
            LoggingSettings(level="DEBUG", format="auto"),
            stream=output,
            environ={"JOURNAL_STREAM": "8:12345"},
        )
        logger = logging.getLogger("agent.test_journal")

        logger.debug("poll.done")
        logger.info("agent.started", extra={"devices": 3})
        logger.warning("modbus.retry_scheduled", extra={"device": "pump1"})
        logger.error("uplink.gave_up")

        assert lines(output) == [
            "<7>poll.done",
            "<6>agent.started devices=3",
            "<4>modbus.retry_scheduled device=pump1",
            "<3>uplink.gave_up",
        ]

    def test_every_traceback_line_prefixed(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(format="journal"), stream=output)

        try:
            raise RuntimeError("device gone")
        except RuntimeError:
            logging.getLogger("drivers.test").exception("driver.crashed")

        assert lines(output)[0] == "<3>driver.crashed"
        assert all(line.startswith("<3>") for line in lines(output))
        assert lines(output)[-1] == "<3>RuntimeError: device gone"


class TestTextFormat:
    def test_time_level_event_fields(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(format="auto"), stream=output, environ={})

        logging.getLogger("agent.test_text").warning(
            "outbox.almost_full", extra={"used_pct": 81.5, "path": "/var/x y"}
        )

        (line,) = lines(output)
        timestamp, level, rest = line.split(" ", 2)
        assert timestamp.endswith("Z")
        assert "T" in timestamp
        assert level == "WARNING"
        assert rest == 'outbox.almost_full used_pct=81.5 path="/var/x y"'

    def test_level_filters_project_loggers(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(level="WARNING", format="text"), stream=output)

        logging.getLogger("agent.test_level").info("hidden")
        logging.getLogger("agent.test_level").warning("shown")

        assert [line.split(" ", 2)[2] for line in lines(output)] == ["shown"]

    def test_opcua_request_log_never_at_debug(self, output: io.StringIO) -> None:
        # asyncua logs whole requests, passwords included, at DEBUG there.
        setup_logging(LoggingSettings(level="DEBUG", format="text"), stream=output)
        logger = logging.getLogger("asyncua.client.ua_client.UASocketProtocol")
        logger.debug("ActivateSessionRequest(UserNameIdentityToken(...))")
        logger.info("connection opened")
        assert [line.split(" ", 2)[2] for line in lines(output)] == [
            "connection opened"
        ]


def publish_crash() -> None:
    """Log asyncua's own line for a failed publish, traceback included."""
    logger = logging.getLogger("asyncua.client.ua_session")
    try:
        raise ConnectionError("connection lost")
    except ConnectionError:
        logger.exception("Publish iteration crashed; retrying in 1s")


class TestLibraryLoggers:
    """pymodbus and asyncua stay silent unless the agent runs at DEBUG."""

    @pytest.mark.parametrize("level", ["INFO", "WARNING", "ERROR"])
    def test_vendor_errors_hidden_above_debug(
        self, output: io.StringIO, level: str
    ) -> None:
        setup_logging(LoggingSettings(level=level, format="text"), stream=output)

        Log.error("No response received after 0 retries, continue with next request")
        publish_crash()
        logging.getLogger("pymodbus.logging").warning("Failed to connect")
        logging.getLogger("agent.test_quiet").error("device.gave_up")

        assert [line.split(" ", 2)[2] for line in lines(output)] == ["device.gave_up"]

    def test_vendor_errors_shown_at_debug(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(level="DEBUG", format="text"), stream=output)

        Log.error("No response received after 1 retries, continue with next request")
        publish_crash()

        text = output.getvalue()
        assert "ERROR No response received after 1 retries" in text
        assert "ERROR Publish iteration crashed; retrying in 1s" in text
        assert "ConnectionError: connection lost" in text

    def test_journal_format_hides_vendor_errors(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(level="INFO", format="journal"), stream=output)

        publish_crash()

        assert output.getvalue() == ""

    def test_command_context_silences_and_restores(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        pymodbus_logger = logging.getLogger("pymodbus")
        before = pymodbus_logger.level
        caplog.set_level(logging.DEBUG)
        pymodbus_logger.setLevel(logging.NOTSET)
        try:
            with quiet_library_loggers():
                Log.error("No response received after 2 retries")
                publish_crash()
            after = pymodbus_logger.level
        finally:
            pymodbus_logger.setLevel(before)

        assert [r.name for r in caplog.records] == []
        assert after == logging.NOTSET


class TestPythonWarnings:
    def test_warning_becomes_log_line(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(level="INFO", format="text"), stream=output)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            # A UserWarning issued the way dsp reports an adjustment.
            warnings.warn("velocity band lower edge raised", stacklevel=1)
        first = lines(output)[0]
        assert "WARNING" in first
        assert "velocity band lower edge raised" in first


class TestJsonFormat:
    def test_one_object_per_line(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(format="json"), stream=output)

        logging.getLogger("agent.test_json").info(
            "uplink.batch_delivered", extra={"count": 12, "endpoint": "sandbox"}
        )

        (line,) = lines(output)
        document = json.loads(line)
        assert document["event"] == "uplink.batch_delivered"
        assert document["level"] == "info"
        assert document["logger"] == "agent.test_json"
        assert document["count"] == 12
        assert document["endpoint"] == "sandbox"


class TestRedaction:
    SECRET = "tok-1e2d3c4b5a"

    def test_secret_registered_after_start_is_redacted(
        self, output: io.StringIO
    ) -> None:
        setup_logging(LoggingSettings(format="text"), stream=output)
        logger = logging.getLogger("agent.test_redaction")
        register_secret(self.SECRET)

        logger.warning("uplink.auth %s", self.SECRET)
        logger.warning(f"uplink.header Bearer {self.SECRET}")
        logger.warning("uplink.sent", extra={"header": f"Bearer {self.SECRET}"})
        try:
            raise ValueError(f"token {self.SECRET} rejected")
        except ValueError:
            logger.exception("uplink.failed")

        text = output.getvalue()
        assert self.SECRET not in text
        assert text.count("***") == 4

    def test_secrets_callable_is_consulted(self, output: io.StringIO) -> None:
        current = ["pw-first"]
        setup_logging(
            LoggingSettings(format="json"), secrets=lambda: current, stream=output
        )
        logger = logging.getLogger("agent.test_callable")

        logger.info("mqtt.connect", extra={"password": "pw-first"})
        current[0] = "pw-second"
        logger.info("mqtt.connect", extra={"password": "pw-second"})

        assert "pw-first" not in output.getvalue()
        assert "pw-second" not in output.getvalue()
        assert [json.loads(line)["password"] for line in lines(output)] == [
            "***",
            "***",
        ]

    def test_setup_again_replaces_handler(self, output: io.StringIO) -> None:
        setup_logging(LoggingSettings(format="text"), stream=output)
        setup_logging(LoggingSettings(format="journal"), stream=output)

        logging.getLogger("agent.test_again").warning("once")

        assert lines(output) == ["<4>once"]
