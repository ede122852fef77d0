"""TomlLocator: the line of a key path in TOML text."""

from __future__ import annotations

import pytest

from agent.toml_locator import TomlLocator

TEXT = "\n".join(
    [
        "# comment with = and [brackets]",  # 1
        'title = "a # not a comment"',  # 2
        "[gateway]",  # 3
        'id = "gw1"',  # 4
        "",  # 5
        "[devices.pump1]",  # 6
        'driver = "modbus_tcp"',  # 7
        'points.speed = { address = 3, type = "float32" }',  # 8
        "range = [",  # 9
        "  1,",  # 10
        "  2,",  # 11
        "]",  # 12
        "[[a.b]]",  # 13
        "x = 1",  # 14
        "[[a.b]]",  # 15
        'y = """multi',  # 16
        "line [not.a.table]",  # 17
        '"""',  # 18
        "z = 3",  # 19
        '["quoted.key".c]',  # 20
        "w = { q = { r = 1 } }",  # 21
    ]
)


class TestTomlLocator:
    @pytest.mark.parametrize(
        ("path", "line"),
        [
            (("title",), 2),
            (("gateway",), 3),
            (("gateway", "id"), 4),
            (("devices", "pump1"), 6),
            (("devices", "pump1", "driver"), 7),
            (("devices", "pump1", "points", "speed", "type"), 8),
            (("devices", "pump1", "range"), 9),
            (("devices", "pump1", "range", 1), 11),
            (("a", "b", 0, "x"), 14),
            (("a", "b", 1), 15),
            (("a", "b", 1, "z"), 19),
            (("quoted.key", "c", "w", "q", "r"), 21),
        ],
    )
    def test_finds_written_key(self, path: tuple[str | int, ...], line: int) -> None:
        assert TomlLocator(TEXT).line_of(path) == line

    def test_missing_key_falls_back_to_table(self) -> None:
        assert TomlLocator(TEXT).line_of(("devices", "pump1", "host")) == 6

    def test_unknown_path_falls_back_to_line_1(self) -> None:
        assert TomlLocator(TEXT).line_of(("nothing", "here")) == 1

    def test_text_in_multiline_string_is_not_a_table(self) -> None:
        assert not TomlLocator(TEXT).has(("not", "a", "table"))


class TestRepeatedKey:
    @pytest.mark.parametrize(
        ("lines", "error_line", "expected"),
        [
            (["[g]", "id = 1", "id = 2"], 3, (("g", "id"), 2, 3)),
            (["a.b = 1", "a.b = 2"], 2, (("a", "b"), 1, 2)),
            (["a = 1", "a.b = 2"], 2, (("a",), 1, 2)),
            (["[a]", "b = 1", "[a.b]"], 3, (("a", "b"), 2, 3)),
            (["a = { b = 1 }", "[a]"], 2, (("a",), 1, 2)),
            (["[[t]]", "x = 1", "x = 2"], 3, (("t", 0, "x"), 2, 3)),
            (["x = 1", "x = [", "  1,", "]"], 4, (("x",), 1, 2)),
        ],
        ids=[
            "key",
            "dotted key",
            "value then table below it",
            "value then header",
            "inline table then header",
            "array of tables",
            "multi-line value",
        ],
    )
    def test_finds_key_written_twice(
        self,
        lines: list[str],
        error_line: int,
        expected: tuple[tuple[str | int, ...], int, int],
    ) -> None:
        assert TomlLocator("\n".join(lines)).repeated_key(error_line) == expected

    def test_tables_of_array_are_not_repeats(self) -> None:
        text = "\n".join(["[[t]]", "x = 1", "[[t]]", "x = 2", "[a.b]", "[a]"])

        assert TomlLocator(text).repeated_key(6) is None
