"""Property tests of check-config on random and hostile TOML.

:func:`agent.config_check.inspect_config` must return a report for any
file: no exception, every problem in ``FILE:LINE[:COL]: `` form, and no
value written under a ``token`` or ``password`` key in any message.
"""

from __future__ import annotations

import math
import re
import string
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config_check import ConfigReport, inspect_config

SCHEMA_KEYS = [
    "gateway",
    "id",
    "state_dir",
    "profile_dirs",
    "devices",
    "pump1",
    "driver",
    "modbus_tcp",
    "host",
    "port",
    "unit_id",
    "asset",
    "profile",
    "points",
    "address",
    "table",
    "data_type",
    "valid_range",
    "waveforms",
    "assets",
    "bearing",
    "rpm",
    "rpm_point",
    "mqtt",
    "uplink",
    "enabled",
    "health",
    "poll_interval",
]
SECRET_KEYS = ["token", "password", "Token", "PASSWORD"]
SECRET_PREFIX = "Sx9"

keys = st.one_of(
    st.sampled_from(SCHEMA_KEYS + SECRET_KEYS),
    st.text(min_size=1, max_size=6),
)
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=10),
    st.sampled_from(["modbus_tcp", "opcua", "127.0.0.1", "1s", "6205", "-1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, max_size=6)
secrets = st.text(string.ascii_letters + string.digits, min_size=8, max_size=16).map(
    lambda tail: SECRET_PREFIX + tail
)
# Where a secret goes: a path of keys, then the secret key, in the form
# it takes in the file (a string, inside an array, or inside a table).
secret_paths = st.lists(
    st.sampled_from(["uplink", "mqtt", "devices", "d1", "points", "x"]), max_size=4
)


def toml_string(text: str) -> str:
    """Quote text as a TOML basic string, escaping what TOML forbids raw."""
    escaped = "".join(
        f"\\u{ord(char):04x}" if char < " " or char in '\x7f"\\' else char
        for char in text
    )
    return f'"{escaped}"'


def toml_key(key: str) -> str:
    return toml_string(key)


def toml_value(value: Any) -> str:
    """Write a value in TOML's inline syntax (JSON strings are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    pairs = (f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(pairs) + "}"


def toml_document(document: dict[str, Any]) -> str:
    """Write scalars first, then each table under its own header."""
    lines = [
        f"{toml_key(k)} = {toml_value(v)}"
        for k, v in document.items()
        if not isinstance(v, dict)
    ]
    for key, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(key)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def place(document: dict[str, Any], path: list[str], key: str, value: Any) -> None:
    node = document
    for part in path:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[key] = value


PROBLEM_LINE = r"^{path}:\d+(:\d+)?: "


def report_lines(report: ConfigReport) -> list[str]:
    return [str(problem) for problem in report.problems + report.notes]


def check(path: Path) -> list[str]:
    """Inspect ``path`` and assert the report's form; return its lines."""
    report = inspect_config(path, environ={})

    lines = report_lines(report)
    pattern = re.compile(PROBLEM_LINE.format(path=re.escape(str(path))))
    for line in lines:
        if line.startswith(str(path)):
            assert pattern.match(line), line
    if report.settings is None:
        assert report.problems
    return lines


EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


class TestCheckConfigHostileText:
    @EXAMPLES
    @given(raw=st.binary(max_size=200))
    def test_random_bytes_give_problems(self, tmp_path: Path, raw: bytes) -> None:
        path = tmp_path / "agent.toml"
        path.write_bytes(raw)

        check(path)

    @EXAMPLES
    @given(text=st.text(max_size=200))
    def test_random_text_gives_problems(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "agent.toml"
        path.write_text(text, encoding="utf-8")

        check(path)

    @EXAMPLES
    @given(document=documents)
    def test_random_documents_give_problems(
        self, tmp_path: Path, document: dict[str, Any]
    ) -> None:
        path = tmp_path / "agent.toml"
        path.write_text(toml_document(document), encoding="utf-8")

        lines = check(path)

        assert not any("syntax error" in line for line in lines)

    @settings(max_examples=20, deadline=None)
    @given(
        depth=st.integers(min_value=1, max_value=3000),
        opener=st.sampled_from(["[", "{a = ", "dotted", "header"]),
    )
    def test_deep_nesting_gives_problem(
        self, tmp_path_factory: Any, depth: int, opener: str
    ) -> None:
        if opener == "[":
            text = "a = " + "[" * depth + "]" * depth + "\n"
        elif opener == "{a = ":
            text = "a = " + "{a = " * depth + "1" + "}" * depth + "\n"
        elif opener == "dotted":
            text = ".".join(["a"] * depth) + " = 1\n"
        else:
            text = "[" + ".".join(["a"] * depth) + "]\nb = 1\n"
        path = tmp_path_factory.mktemp("deep") / "agent.toml"
        path.write_text(text, encoding="utf-8")

        lines = check(path)

        assert lines

    @EXAMPLES
    @given(document=documents, index=st.integers(min_value=0))
    def test_duplicate_key_is_syntax_error_with_line(
        self, tmp_path: Path, document: dict[str, Any], index: int
    ) -> None:
        lines = [line for line in toml_document(document).splitlines() if "=" in line]
        if not lines:
            return
        duplicate = lines[index % len(lines)]
        text = toml_document(document)
        position = text.index(duplicate) + len(duplicate)
        text = text[:position] + "\n" + duplicate + text[position:]
        path = tmp_path / "agent.toml"
        path.write_text(text, encoding="utf-8")

        report = inspect_config(path, environ={})

        assert report.settings is None
        assert re.match(
            PROBLEM_LINE.format(path=re.escape(str(path))), str(report.problems[0])
        )


class TestCheckConfigSecrets:
    @EXAMPLES
    @given(
        document=documents,
        path_keys=secret_paths,
        secret_key=st.sampled_from(SECRET_KEYS),
        secret=secrets,
        form=st.sampled_from(["string", "array", "table", "array_of_tables"]),
    )
    def test_secret_never_in_report(
        self,
        tmp_path: Path,
        document: dict[str, Any],
        path_keys: list[str],
        secret_key: str,
        secret: str,
        form: str,
    ) -> None:
        if form == "string":
            place(document, path_keys, secret_key, secret)
        elif form == "array":
            place(document, path_keys, secret_key, [secret, 1])
        elif form == "table":
            place(document, path_keys, secret_key, {"value": secret})
        else:
            place(document, path_keys, "items", [{secret_key: secret}])
        path = tmp_path / "agent.toml"
        path.write_text(toml_document(document), encoding="utf-8")
        assert secret in path.read_text(encoding="utf-8")

        lines = check(path)

        assert all(SECRET_PREFIX not in line for line in lines)
        assert any(secret_key in line for line in lines)

    def test_secret_of_wrong_type_is_hidden(self, tmp_path: Path) -> None:
        path = tmp_path / "agent.toml"
        path.write_text(
            '[mqtt]\npassword = 12345678\n[uplink]\ntoken = ["Sx9abcdefgh"]\n',
            encoding="utf-8",
        )

        lines = check(path)

        assert len([line for line in lines if "secrets are not accepted" in line]) == 2
        assert all("12345678" not in line for line in lines)
        assert all("Sx9abcdefgh" not in line for line in lines)


TOP_TABLES = ["gateway", "devices", "assets", "mqtt", "uplink", "health"]


class TestCheckConfigWrongTypes:
    @EXAMPLES
    @given(
        table=st.sampled_from(TOP_TABLES),
        value=scalars | st.lists(scalars, max_size=3),
    )
    def test_scalar_in_place_of_table(
        self, tmp_path: Path, table: str, value: Any
    ) -> None:
        path = tmp_path / "agent.toml"
        path.write_text(f"{table} = {toml_value(value)}\n", encoding="utf-8")

        lines = check(path)

        assert any(f":1: {table}: expected a table" in line for line in lines)

    @EXAMPLES
    @given(value=scalars | st.lists(scalars, max_size=3))
    def test_profile_dirs_of_wrong_type(self, tmp_path: Path, value: Any) -> None:
        path = tmp_path / "agent.toml"
        path.write_text(
            f"[gateway]\nprofile_dirs = {toml_value(value)}\n"
            '[devices.d1]\ndriver = "modbus_tcp"\nprofile = "nope"\n',
            encoding="utf-8",
        )

        check(path)

    def test_invalid_utf8_located_by_line_and_column(self, tmp_path: Path) -> None:
        path = tmp_path / "agent.toml"
        path.write_bytes(b'[gateway]\nid = "ab\xffcd"\n')

        (line,) = check(path)

        # The byte 0xff is the 8th character of line 2: 'i','d',' ','=',' ','"','a','b'.
        assert line.startswith(f"{path}:2:9: ")
        assert "0xff" in line
