"""Configuration problems: records, schema look-ups and readable messages.

A :class:`Problem` is one line of ``check-config`` output. This module turns
pydantic validation errors into problems whose key path is the one a
technician wrote (the discriminator tag pydantic inserts is removed) and
whose message states what was expected and what was found, with a "did you
mean" for a misspelled key.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from inspect import isclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from agent.opcua_passwords import password_credential, password_env_var
from agent.settings import SECRET_KEYS, SettingsRuleError, six_digit_modicon_hint
from agent.toml_locator import TomlLocator
from agent.units import describe_boolean

KeyPath = tuple[str | int, ...]
Locate = Callable[[KeyPath], tuple[str, int | None]]
"""Maps a key path to the source (file or variable) and line it came from."""

_TYPE_NAMES: Final = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "list_type": "an array",
    "tuple_type": "an array",
    "path_type": "a file path",
}
_BOUNDS: Final = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One problem (or note) at a place in a configuration source."""

    source: str
    line: int | None = None
    column: int | None = None
    key_path: str = ""
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.key_path:
            return f"{where}: {self.key_path}: {self.message}"
        return f"{where}: {self.message}"


def format_key_path(path: Sequence[str | int]) -> str:
    """Return ``devices.pump1.range[1]`` for ``("devices", "pump1", "range", 1)``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def suggest(word: str, candidates: Sequence[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for a close match, else ``""``."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


# --- the schema, walked by key path ------------------------------------------


def _members(annotation: Any) -> list[Any]:
    """Flatten Annotated and unions into plain member types, None removed."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        members: list[Any] = []
        for arg in typing.get_args(annotation):
            members += _members(arg)
        return members
    if annotation is type(None):
        return []
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [
        member
        for member in _members(annotation)
        if isclass(member) and issubclass(member, BaseModel)
    ]


def child_annotations(annotation: Any, key: str | int) -> list[Any]:
    """Return the annotations a value at ``key`` below ``annotation`` may have."""
    children: list[Any] = []
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if isclass(member) and issubclass(member, BaseModel):
            field = member.model_fields.get(key) if isinstance(key, str) else None
            if field is not None:
                children.append(field.annotation)
        elif origin is dict:
            children.append(typing.get_args(member)[1])
        elif origin in (list, tuple) and isinstance(key, int):
            children.append(typing.get_args(member)[0])
    return children


def resolve_path(root: Any, path: Sequence[str | int]) -> list[Any]:
    """Return the annotations at ``path`` below ``root``; [] when invalid."""
    current = [root]
    for key in path:
        current = [child for ann in current for child in child_annotations(ann, key)]
        if not current:
            return []
    return current


def field_names(annotations: Sequence[Any]) -> list[str]:
    """Return the field names of every model among ``annotations``."""
    names: dict[str, None] = {}
    for annotation in annotations:
        for model in _models(annotation):
            names.update(dict.fromkeys(model.model_fields))
    return list(names)


def _union_tags(annotations: Sequence[Any]) -> set[str]:
    """Return the tags of a discriminated union: one-value Literal fields."""
    models = [model for ann in annotations for model in _models(ann)]
    if len(models) < 2:
        return set()
    tags: set[str] = set()
    for model in models:
        for info in model.model_fields.values():
            if typing.get_origin(info.annotation) is typing.Literal:
                values = typing.get_args(info.annotation)
                if len(values) == 1 and isinstance(values[0], str):
                    tags.add(values[0])
    return tags


def clean_loc(root: Any, loc: Sequence[str | int]) -> KeyPath:
    """Drop the parts of a pydantic location that never appear in TOML.

    That is a discriminated union's tag (``devices.pump1.modbus_tcp.port``
    becomes ``devices.pump1.port``) and the ``[key]`` marker of an invalid
    dictionary key.
    """
    cleaned: list[str | int] = []
    current = [root]
    for key in loc:
        if key == "[key]":
            break
        if key in _union_tags(current):
            continue
        children = [c for ann in current for c in child_annotations(ann, key)]
        cleaned.append(key)
        current = children
    return tuple(cleaned)


# --- messages ----------------------------------------------------------------


def _found(value: Any) -> str:
    """Show a scalar with ``!r``; never echo a table or array whole.

    A boolean is named as one and spelled as in TOML (``a boolean (true)``),
    because ``True`` would read as text that the file does not contain.
    """
    if isinstance(value, bool):
        return describe_boolean(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return f"an array of {len(value)} items"
    return repr(value)


def _message(error: Any, root: Any, path: KeyPath) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    found = _found(error.get("input"))
    if kind == "missing":
        return "missing required key"

    if kind == "extra_forbidden":
        candidates = field_names(resolve_path(root, path[:-1]))
        return f"unknown key {path[-1]!r}" + suggest(str(path[-1]), candidates)
    if kind == "union_tag_invalid":
        return (
            f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}; "
            f"expected one of {ctx['expected_tags']}"
        )
    if kind == "union_tag_not_found":
        tags = sorted(_union_tags(resolve_path(root, path[:-1])))
        return f"missing required key; expected one of {', '.join(map(repr, tags))}"
    if kind == "literal_error":
        return f"expected {ctx['expected']}, found {found}"

    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, found {found}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        message = f"expected a value {_BOUNDS[kind]} {bound}, found {found}"
        if path and str(path[-1]).endswith("address"):
            message += six_digit_modicon_hint(error.get("input"), str(path[-1]))
        return message
    if kind == "string_pattern_mismatch":
        return (
            "expected a name of letters, digits, '_', '.' and '-' "
            f"(at most 64 characters), found {found}"
        )
    if kind in ("too_short", "too_long"):
        length = ctx.get("max_length") or ctx.get("min_length")
        return f"expected {length} items, found {found}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, found {found}"


def problems_from_validation(
    exc: ValidationError, root: Any, locate: Locate
) -> list[Problem]:
    """Convert every error of ``exc`` into a :class:`Problem`.

    A :class:`SettingsRuleError` becomes one problem per broken rule, keyed
    to the field the rule names. Values at secret keys are never shown.
    """
    problems: list[Problem] = []
    for error in exc.errors():
        path = clean_loc(root, error["loc"])
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path += (error["ctx"]["discriminator"].strip("'"),)
        if path and path[-1] in SECRET_KEYS:
            error = {**error, "input": "***"}
        rule_error = (error.get("ctx") or {}).get("error")
        if isinstance(rule_error, SettingsRuleError):
            pairs = [((*path, key), text) for key, text in rule_error.problems]
        else:
            pairs = [(path, _message(error, root, path))]
        for key_path, text in pairs:
            source, line = locate(key_path)
            problems.append(
                Problem(
                    source=source,
                    line=line,
                    key_path=format_key_path(key_path),
                    message=text,
                )
            )
    return problems


# --- reading TOML ------------------------------------------------------------

MAX_NESTING: Final = 32
"""Deepest nesting of tables and arrays accepted; the schema needs 6."""

_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END: Final = " (at end of document)"
_REPEATED_KEY: Final = re.compile(
    r"^(Cannot overwrite a value|Cannot declare .* twice)$"
)
"""``tomllib`` messages for a key or table written twice."""


def read_toml(path: Path) -> tuple[str, dict[str, Any]] | Problem:
    """Read and parse a TOML file, or return the problem that stopped it.

    A syntax error is reported at its line and column as ``tomllib``
    gives them. A key written twice is named, with the line where it was
    first written.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return Problem(source=str(path), message=f"cannot read file: {exc.strerror}")
    except UnicodeDecodeError as exc:
        before = exc.object[: exc.start]
        return Problem(
            source=str(path),
            line=before.count(b"\n") + 1,
            column=exc.start - (before.rfind(b"\n") + 1) + 1,
            message=f"expected UTF-8 text, found byte {exc.object[exc.start]:#04x}",
        )
    try:
        data = tomllib.loads(text)
    except RecursionError:
        return Problem(
            source=str(path),
            line=_deepest_bracket_line(text),
            message=(
                "syntax error: arrays or inline tables nested too deeply; "
                f"expected at most {MAX_NESTING} levels"
            ),
        )
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = int(match.group(1)) if match else None
        column = int(match.group(2)) if match else None
        at_end = message.endswith(_AT_END)
        if match:
            message = message[: match.start()]
        elif at_end:
            # tomllib gives no position for an error at the end of the text.
            last_line = text.rsplit("\n", 1)[-1]
            line, column = text.count("\n") + 1, len(last_line) + 1
            message = message.removesuffix(_AT_END)
        repeated = _repeated_key_problem(path, text, message, line)
        if repeated is not None:
            return repeated
        if at_end:
            message += " at end of file"
        return Problem(
            source=str(path),
            line=line,
            column=column,
            message=f"syntax error: {message}",
        )
    deep = _first_too_deep(data)
    if deep is not None:
        line = 1
        with contextlib.suppress(RecursionError):
            line = TomlLocator(text).line_of(deep)
        return Problem(
            source=str(path),
            line=line,
            key_path=format_key_path(deep[:MAX_NESTING]),
            message=(
                f"expected tables and arrays nested at most {MAX_NESTING} "
                "levels deep, found deeper nesting"
            ),
        )
    return text, data


def _repeated_key_problem(
    path: Path, text: str, message: str, line: int | None
) -> Problem | None:
    """Name the key of a "Cannot overwrite a value" error, if it is found.

    The problem is placed at the second key's line without a column,
    because ``tomllib``'s column points past the value.
    """
    if line is None or _REPEATED_KEY.match(message) is None:
        return None
    found = TomlLocator(text).repeated_key(line)
    if found is None:
        return None
    key, first_line, again_line = found
    dotted = format_key_path(key)
    if message.startswith("Cannot declare"):
        description = (
            f"syntax error: table [{dotted}] is declared twice, first at line "
            f"{first_line}; merge the two tables"
        )
    else:
        description = (
            f"syntax error: key {dotted!r} is set twice, first at line "
            f"{first_line}; keep one of them"
        )
    return Problem(
        source=str(path), line=again_line, key_path=dotted, message=description
    )


def _first_too_deep(data: dict[str, Any]) -> KeyPath | None:
    """Return the path of a value nested deeper than MAX_NESTING, if any.

    The walk uses an explicit stack, because the checks that follow
    recurse and would overflow Python's stack on such a document.
    """
    stack: list[tuple[KeyPath, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if len(path) > MAX_NESTING:
            return path
        if isinstance(value, dict):
            stack.extend(((*path, key), item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
    return None


def _deepest_bracket_line(text: str) -> int:
    """Return the line where ``[`` and ``{`` nest deepest, strings ignored.

    Used when ``tomllib`` itself overflows the stack and gives no position.
    """
    depth = deepest = 0
    line = deepest_line = 1
    quote = ""
    for char in text:
        if char == "\n":
            line += 1
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest, deepest_line = depth, line
        elif char in "]}":
            depth -= 1
    return deepest_line


_MODBUS_DRIVERS: Final = frozenset({"modbus_tcp", "modbus_rtu"})


def _device_password_hint(device_id: str, driver: object) -> str:
    """Name where an OPC UA device's password belongs (Modbus has none)."""
    if driver in _MODBUS_DRIVERS:
        return f"a {driver} device has no password setting, so remove the key"
    credential = password_credential(device_id)
    return (
        f"store the password of OPC UA device {device_id!r} as the systemd "
        f"credential {credential} ($CREDENTIALS_DIRECTORY/{credential}), in "
        f"{password_env_var(device_id)} or in the device's password_file with "
        "mode 0600"
    )


def _secret_hint(path: KeyPath, key: str, table: dict[str, Any]) -> str:
    """Name where the secret at ``path + (key,)`` belongs instead.

    ``table`` is the TOML table that contains the key.
    """
    is_device = len(path) == 2 and path[0] == "devices"
    if is_device and key.lower() == "password":
        return _device_password_hint(str(path[1]), table.get("driver"))
    if key.lower() == "password":
        return (
            "store the MQTT password as the systemd credential mqtt-password "
            "($CREDENTIALS_DIRECTORY/mqtt-password), in CMAGENT_MQTT__PASSWORD "
            "or in a password_file with mode 0600"
        )
    return (
        "store the uplink token with 'cmagent token set', as the systemd "
        "credential uplink-token ($CREDENTIALS_DIRECTORY/uplink-token) or in "
        "CMAGENT_UPLINK__TOKEN"
    )


def pop_secret_keys(
    data: dict[str, Any], path: KeyPath = ()
) -> list[tuple[KeyPath, str]]:
    """Remove every ``token`` or ``password`` key, at any depth, from ``data``.

    Returns the path of each removed key with a message that names where the
    secret belongs instead. The value itself is dropped unseen.
    """
    found: list[tuple[KeyPath, str]] = []
    for key in list(data):
        value = data[key]
        if key.lower() in SECRET_KEYS:
            del data[key]
            found.append(
                (
                    (*path, key),
                    "secrets are not accepted in configuration files; "
                    + _secret_hint(path, key, data),
                )
            )
        elif isinstance(value, dict):
            found += pop_secret_keys(value, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    found += pop_secret_keys(item, (*path, key, index))
    return found
