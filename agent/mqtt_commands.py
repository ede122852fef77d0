"""Commands received on ``{prefix}/{gateway}/cmd/{name}``.

The last topic level names the command, and the payload is a JSON object
with that command's arguments:

- ``request-waveform`` takes ``{"asset": "<asset id>"}`` and requests a
  waveform capture of one asset now.
- ``reload`` takes an empty payload or ``{}`` and requests a
  configuration reload.

Anything else is rejected with an :class:`InvalidCommandError` that names
the reason, so the subscriber can log it and drop the message.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Final

from agent.mqtt_payloads import check_topic_level

MAX_COMMAND_BYTES: Final = 4096
"""Largest command payload accepted; commands are a few dozen bytes."""


class CommandName(enum.Enum):
    """Commands the agent accepts."""

    REQUEST_WAVEFORM = "request-waveform"
    RELOAD = "reload"


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A validated command; ``asset`` is set for ``request-waveform`` only."""

    name: CommandName
    asset: str | None = None
    topic: str = ""


class InvalidCommandError(ValueError):
    """A command message that cannot be accepted; ``reason`` gives the cause."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"invalid command on {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


_ARGUMENTS: Final[dict[CommandName, frozenset[str]]] = {
    CommandName.REQUEST_WAVEFORM: frozenset({"asset"}),
    CommandName.RELOAD: frozenset(),
}


def parse_command(topic: str, name: str, payload: bytes) -> Command:
    """Validate a command message and return it as a :class:`Command`.

    Args:
        topic: The full topic, kept for messages and the record.
        name: The topic level after ``cmd/``.
        payload: The raw message payload.

    Raises:
        InvalidCommandError: the command is unknown, the payload is larger
            than :data:`MAX_COMMAND_BYTES`, not UTF-8 JSON, not an object,
            or has missing, unknown or wrongly typed arguments.
    """
    try:
        command_name = CommandName(name)
    except ValueError:
        known = ", ".join(c.value for c in CommandName)
        raise InvalidCommandError(
            topic, f"unknown command {name[:40]!r}, expected one of {known}"
        ) from None

    arguments = _decode_object(topic, payload)
    allowed = _ARGUMENTS[command_name]
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise InvalidCommandError(
            topic,
            f"unknown arguments {unknown} for {command_name.value}, "
            f"expected {sorted(allowed)}",
        )

    if command_name is CommandName.RELOAD:
        return Command(name=command_name, topic=topic)
    return Command(name=command_name, asset=_asset(topic, arguments), topic=topic)


def _decode_object(topic: str, payload: bytes) -> dict[str, object]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise InvalidCommandError(
            topic,
            f"payload of {len(payload)} bytes, expected at most {MAX_COMMAND_BYTES}",
        )
    if not payload.strip():
        return {}
    try:
        decoded = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidCommandError(topic, f"payload is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidCommandError(topic, f"payload is not JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise InvalidCommandError(
            topic, f"expected a JSON object, found {type(decoded).__name__}"
        )
    return decoded


def _asset(topic: str, arguments: dict[str, object]) -> str:
    asset = arguments.get("asset")
    if asset is None:
        raise InvalidCommandError(topic, "missing argument 'asset'")
    if not isinstance(asset, str):
        raise InvalidCommandError(
            topic, f"argument 'asset': expected a string, found {asset!r:.40}"
        )
    try:
        return check_topic_level("asset", asset)
    except ValueError as exc:
        raise InvalidCommandError(topic, str(exc)) from None
