"""Logging set-up: terminal, journal and JSON output with secret redaction.

Log calls in this project pass a stable event name as the message and the
details as fields::

    logger.warning("modbus.read_failed", extra={"device": "pump1", "attempt": 3})

which renders as ``2025-01-31T08:00:00.123Z WARNING modbus.read_failed
device=pump1 attempt=3`` on a terminal, ``<4>modbus.read_failed device=pump1
attempt=3`` under systemd (the journal adds its own timestamp and reads the
``<N>`` syslog priority), or one JSON object per line.

Every secret value registered with :func:`register_secret` or returned by
the ``secrets`` callable is replaced by ``***`` in the message, its
arguments, its fields and the exception text before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from agent.settings import LoggingSettings

REDACTED: Final = "***"
PROJECT_LOGGERS: Final = ("agent", "drivers", "dsp", "cmagent")
"""Loggers set to the configured level. Other libraries log WARNING and up,
except the ones in :data:`QUIET_LIBRARY_LOGGERS`."""
QUIET_LIBRARY_LOGGERS: Final = ("pymodbus", "asyncua")
"""Libraries that log every failed connect, request and publish, some of
them as ERROR with frame dumps or tracebacks. The drivers translate each
failure into a driver error, which the agent logs with the device id, so
these libraries stay silent unless the configured level is DEBUG."""
QUIET_LIBRARY_LEVEL: Final = logging.CRITICAL
"""Level of :data:`QUIET_LIBRARY_LOGGERS` outside DEBUG. pymodbus 3.16 and
asyncua 2.1 log nothing at CRITICAL, so in effect they are silent."""
NEVER_DEBUG_LOGGERS: Final = ("asyncua.client.ua_client",)
"""Loggers kept at INFO even at DEBUG: asyncua 2.1 logs whole requests
there, and with security policy None an ActivateSession request contains the
OPC UA password in clear text."""

SYSLOG_PRIORITY: Final = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

# Attributes every LogRecord has; anything else came from ``extra``.
_RECORD_ATTRIBUTES: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Redact ``value`` from every log record from now on.

    Empty values are ignored, because replacing "" would mangle every line.
    """
    if value:
        with _secrets_lock:
            _secrets.add(value)


def forget_secrets() -> None:
    """Drop every registered secret, for example after a token is revoked."""
    with _secrets_lock:
        _secrets.clear()


def _redact(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret that contains another is replaced whole.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Replaces secret values in a record before any formatter renders it.

    The message is merged with its arguments, and the exception text is
    formatted here, so both can be searched as plain text.
    """

    def __init__(self, secrets: Callable[[], Iterable[str]] | None = None) -> None:
        super().__init__()
        self._secrets = secrets

    def current_secrets(self) -> list[str]:
        with _secrets_lock:
            values = set(_secrets)
        if self._secrets is not None:
            values.update(value for value in self._secrets() if value)
        return list(values)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.current_secrets()
        if not secrets:
            return True

        record.msg = _redact(record.getMessage(), secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = _redact(record.stack_info, secrets)
        for key, value in event_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, _redact(value, secrets))
            elif not isinstance(value, int | float | bool | type(None)):
                setattr(record, key, _redact(str(value), secrets))
        return True


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields a log call passed in ``extra``."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        needs_quotes = not value or any(c in value for c in ' "=\n\t')
        return json.dumps(value) if needs_quotes else value
    return str(value)


def _render_fields(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={_render_value(value)}" for key, value in fields.items())


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _EventFormatter(logging.Formatter):
    """Renders ``event key=value``, plus the exception text if any."""

    def event_line(self, record: logging.LogRecord) -> str:
        line = record.getMessage()
        fields = event_fields(record)
        if fields:
            line += " " + _render_fields(fields)
        return line

    def exception_text(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [record.exc_text or "", record.stack_info or ""]
        return "\n".join(part for part in parts if part)


class TextFormatter(_EventFormatter):
    """``time level event key=value`` for a terminal; time in UTC."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {self.event_line(record)}"
        extra = self.exception_text(record)
        return f"{line}\n{extra}" if extra else line


class JournalFormatter(_EventFormatter):
    """``<N>event key=value`` with the syslog priority on every line.

    The journal stores its own timestamp, so none is written.
    """

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        text = self.event_line(record)
        extra = self.exception_text(record)
        if extra:
            text += "\n" + extra
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class JsonFormatter(_EventFormatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event``,
    the fields, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in event_fields(record).items():
            document.setdefault(key, value)
        extra = self.exception_text(record)
        if extra:
            document["exception"] = extra
        return json.dumps(document, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our stream handler; it redacts the formatted line once more."""

    def __init__(self, stream: TextIO, redactor: RedactingFilter) -> None:
        super().__init__(stream)
        self.redactor = redactor
        self.addFilter(redactor)

    def format(self, record: logging.LogRecord) -> str:
        return _redact(super().format(record), self.redactor.current_secrets())


def under_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Return whether ``stream`` is connected to the systemd journal.

    systemd sets ``JOURNAL_STREAM`` to ``device:inode`` of the stream it
    connected; a stream that was redirected elsewhere no longer matches.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True
    return value == f"{stat.st_dev}:{stat.st_ino}"


def setup_logging(
    settings: LoggingSettings,
    secrets: Callable[[], Iterable[str]] | None = None,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send log records to ``stream`` (default standard error).

    Calling it again replaces the handler it installed before, so a
    reloaded configuration can change level and format.

    Args:
        settings: Level and format; format ``auto`` picks ``journal`` when
            ``JOURNAL_STREAM`` names the stream, else ``text``.
        secrets: Returns secret values to redact, called for every record.
        stream: Where lines go.
        environ: Environment to read ``JOURNAL_STREAM`` from; None means
            ``os.environ``.

    Returns:
        The installed handler.
    """
    stream = sys.stderr if stream is None else stream
    chosen = settings.format
    if chosen == "auto":
        chosen = "journal" if under_journal(stream, environ) else "text"
    formatters = {
        "text": TextFormatter,
        "journal": JournalFormatter,
        "json": JsonFormatter,
    }

    handler = _Handler(stream, RedactingFilter(secrets))
    handler.setFormatter(formatters[chosen]())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)

    level = logging.getLevelName(settings.level)
    root.setLevel(max(level, logging.WARNING))
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    library_level = library_log_level(level)
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    for name in NEVER_DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(max(library_level, logging.INFO))

    # dsp reports automatic adjustments (a band edge moved, a shaft speed
    # outside ISO 20816-3) with warnings.warn. Routed through logging, they
    # reach the journal formatted and redacted like every other line,
    # once per distinct message as Python's default warning filter allows.
    logging.captureWarnings(True)
    return handler


def library_log_level(level: int) -> int:
    """Return the level of :data:`QUIET_LIBRARY_LOGGERS` for an agent level.

    At DEBUG the libraries log everything, frame dumps included, because
    that is when their detail helps. Above DEBUG they are silenced.
    """
    return logging.DEBUG if level <= logging.DEBUG else QUIET_LIBRARY_LEVEL


@contextlib.contextmanager
def quiet_library_loggers() -> Iterator[None]:
    """Keep pymodbus and asyncua log lines off the terminal for a command.

    Commands that set up no handler (``probe``, ``sim``) would otherwise
    print, through Python's last-resort handler, every warning and error
    those libraries log. Examples are pymodbus's "No response received"
    with a hex dump of the request, or its line for a refused connection,
    next to the command's own message. The levels are the ones the agent
    sets outside DEBUG, restored after.
    """
    loggers = [logging.getLogger(name) for name in QUIET_LIBRARY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(QUIET_LIBRARY_LEVEL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
