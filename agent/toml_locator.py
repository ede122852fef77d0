"""Line numbers of key paths in a TOML document.

``tomllib`` returns plain dictionaries without positions, so this module
scans the text once more for structure only: table headers (``[a.b]``),
arrays of tables (``[[a]]``, numbered from 0), dotted keys, inline tables
and array elements. It is run on text that ``tomllib`` has accepted, or
that it rejected for a key written twice, to name that key.
"""

from __future__ import annotations

import bisect
import contextlib
import re
from collections.abc import Sequence
from typing import Final

KeyPath = tuple[str | int, ...]

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPED_CHAR: Final = re.compile(r"\\(.)")


class _Malformed(Exception):
    """The scanner met text it does not understand; stop quietly."""


class TomlLocator:
    """Finds the line where a key path is written.

    Example: ``TomlLocator(text).line_of(("devices", "pump1", "port"))``.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._line_starts = [0] + [match.end() for match in re.finditer(r"\n", text)]
        self._lines: dict[KeyPath, int] = {}
        self._array_counts: dict[KeyPath, int] = {}
        # Lines where each key is written with ``=``, and where each table
        # is declared by a header, in order.
        self._values: dict[KeyPath, list[int]] = {}
        self._headers: dict[KeyPath, list[int]] = {}
        self._pos = 0
        with contextlib.suppress(_Malformed, IndexError):
            self._scan_document()

    def line_of(self, path: Sequence[str | int]) -> int:
        """Return the line of ``path``, of its nearest written parent, or 1."""
        key = tuple(path)
        while key:
            line = self._lines.get(key)
            if line is not None:
                return line
            key = key[:-1]
        return 1

    def has(self, path: Sequence[str | int]) -> bool:
        """Return whether ``path`` itself is written in the document."""
        return tuple(path) in self._lines

    def repeated_key(self, line: int) -> tuple[KeyPath, int, int] | None:
        """Find the key written a second time nearest before or at ``line``.

        ``tomllib`` reports a key written twice ("Cannot overwrite a
        value") at the end of the second value, without the key.

        Returns:
            The key path, the line where it was first written and the line
            where it was written again, or None.
        """
        best: tuple[int, KeyPath, int] | None = None
        written = {**self._values}
        for path, lines in self._headers.items():
            written[path] = sorted([*written.get(path, []), *lines])
        for path, lines in written.items():
            for again in lines:
                if again > line or (best is not None and again <= best[0]):
                    continue
                conflict = self._earlier_conflict(path, again, written)
                if conflict is not None:
                    best = (again, *conflict)
        if best is None:
            return None
        again, key, first = best
        return key, first, again

    def _earlier_conflict(
        self, path: KeyPath, line: int, written: dict[KeyPath, list[int]]
    ) -> tuple[KeyPath, int] | None:
        """Return the key that ``path``, written at ``line``, writes again:
        ``path`` itself, or a parent that an earlier line set to a value."""
        first = written[path][0]
        if first < line:
            return path, first
        for end in range(len(path) - 1, 0, -1):
            parent_lines = self._values.get(path[:end], [])
            if parent_lines and parent_lines[0] < line:
                return path[:end], parent_lines[0]
        return None

    # --- scanning ---------------------------------------------------------

    def _line(self) -> int:
        return bisect.bisect_right(self._line_starts, self._pos)

    def _record(self, path: KeyPath) -> None:
        for end in range(1, len(path) + 1):
            self._lines.setdefault(path[:end], self._line())

    def _peek(self, text: str) -> bool:
        return self._text.startswith(text, self._pos)

    def _skip_space(self, *, newlines: bool) -> None:
        blanks = " \t\r\n" if newlines else " \t\r"
        text = self._text
        while self._pos < len(text):
            if text[self._pos] in blanks:
                self._pos += 1
            elif text[self._pos] == "#":
                end = text.find("\n", self._pos)
                self._pos = len(text) if end < 0 else end
            else:
                return

    def _scan_document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip_space(newlines=True)
            if self._pos >= len(self._text):
                return
            if self._peek("["):
                table = self._scan_header()
            else:
                self._scan_key_value(table)

    def _scan_header(self) -> KeyPath:
        is_array = self._peek("[[")
        self._pos += 2 if is_array else 1
        parts = self._scan_key()
        self._pos += 2 if is_array else 1

        path: KeyPath = ()
        for index, part in enumerate(parts):
            path += (part,)
            last = index == len(parts) - 1
            if last and is_array:
                count = self._array_counts.get(path, 0)
                self._array_counts[path] = count + 1
                self._record(path)
                path += (count,)
            elif path in self._array_counts:
                path += (self._array_counts[path] - 1,)
        self._record(path)
        if not is_array:
            self._headers.setdefault(path, []).append(self._line())
        return path

    def _scan_key_value(self, table: KeyPath) -> None:
        path = table + tuple(self._scan_key())
        self._record(path)
        self._values.setdefault(path, []).append(self._line())
        self._skip_space(newlines=False)
        if not self._peek("="):
            raise _Malformed
        self._pos += 1
        self._skip_space(newlines=False)
        self._scan_value(path)

    def _scan_key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self._skip_space(newlines=False)
            parts.append(self._scan_key_part())
            self._skip_space(newlines=False)
            if not self._peek("."):
                return parts
            self._pos += 1

    def _scan_key_part(self) -> str:
        if self._peek('"') or self._peek("'"):
            quote = self._text[self._pos]
            start = self._pos + 1
            self._skip_string()
            raw = self._text[start : self._pos - 1]
            return _ESCAPED_CHAR.sub(r"\1", raw) if quote == '"' else raw
        match = _BARE_KEY.match(self._text, self._pos)
        if match is None:
            raise _Malformed
        self._pos = match.end()
        return match.group()

    def _scan_value(self, path: KeyPath) -> None:
        char = self._text[self._pos]
        if char in "\"'":
            self._skip_string()
        elif char == "[":
            self._scan_array(path)
        elif char == "{":
            self._scan_inline_table(path)
        else:
            while self._pos < len(self._text) and self._text[self._pos] not in (
                ",]}\n#"
            ):
                self._pos += 1

    def _scan_array(self, path: KeyPath) -> None:
        self._pos += 1
        index = 0
        while True:
            self._skip_space(newlines=True)
            if self._peek("]"):
                self._pos += 1
                return
            self._record((*path, index))
            self._scan_value((*path, index))
            self._skip_space(newlines=True)
            if self._peek(","):
                self._pos += 1
                index += 1
            elif not self._peek("]"):
                raise _Malformed

    def _scan_inline_table(self, path: KeyPath) -> None:
        self._pos += 1
        while True:
            self._skip_space(newlines=False)
            if self._peek("}"):
                self._pos += 1
                return
            self._scan_key_value(path)
            self._skip_space(newlines=False)
            if self._peek(","):
                self._pos += 1
            elif not self._peek("}"):
                raise _Malformed

    def _skip_string(self) -> None:
        text = self._text
        quote = text[self._pos]
        delimiter = quote * 3 if text.startswith(quote * 3, self._pos) else quote
        self._pos += len(delimiter)
        while self._pos < len(text):
            if quote == '"' and text[self._pos] == "\\":
                self._pos += 2
            elif text.startswith(delimiter, self._pos):
                self._pos += len(delimiter)
                # A multi-line string may end with up to two extra quotes.
                while len(delimiter) == 3 and self._peek(quote):
                    self._pos += 1
                return
            else:
                self._pos += 1
        raise _Malformed
