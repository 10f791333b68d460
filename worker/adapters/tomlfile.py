"""Read a TOML file and find the line of any key, so every problem can be reported as file:line."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import Problem

KeyPath = tuple[str | int, ...]

_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")


def _split_dotted(name: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in name.split("."))


@dataclass(slots=True)
class TomlFile:
    """A parsed TOML document that remembers where each key was written."""

    path: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, *path: str | int) -> int:
        """The line of the key at `path`, or of its nearest enclosing table; 1 if unknown."""
        probe: KeyPath = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return 1

    def problem(self, path: KeyPath, message: str) -> Problem:
        return Problem(str(self.path), self.line(*path), message)


def _index_lines(text: str) -> dict[KeyPath, int]:
    """Map key paths to line numbers by a light scan of table headers and `key =` lines.

    TOML allows forms this scan does not follow (inline tables, multi-line strings that
    look like keys); those only make a reported line less precise, never wrong in content.
    """
    lines: dict[KeyPath, int] = {}
    array_counts: dict[tuple[str, ...], int] = {}
    current: KeyPath = ()
    in_multiline = False
    for number, raw in enumerate(text.splitlines(), start=1):
        quotes = raw.count('"""') + raw.count("'''")
        if in_multiline:
            in_multiline = quotes % 2 == 0
            continue
        if match := _ARRAY_TABLE.match(raw):
            name = _split_dotted(match.group(1))
            index = array_counts.get(name, 0)
            array_counts[name] = index + 1
            current = (*name, index)
            lines.setdefault(name, number)
            lines[current] = number
        elif match := _TABLE.match(raw):
            name = _split_dotted(match.group(1))
            # A sub-table of the latest array element, e.g. [mailboxes.imap] after [[mailboxes]].
            parent = name[:-1]
            current = (*parent, array_counts[parent] - 1, name[-1]) if parent in array_counts else name
            lines[current] = number
        elif match := _KEY.match(raw):
            lines[(*current, *_split_dotted(match.group(1)))] = number
        if quotes % 2 == 1:
            in_multiline = True
    return lines


def load_toml(path: Path) -> TomlFile:
    """Parse `path`; a syntax error becomes an InvalidInput-ready Problem list via TomlSyntaxError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TomlSyntaxError(Problem(str(path), 1, f"cannot read file: {exc.strerror}")) from exc
    except UnicodeDecodeError as exc:
        raise TomlSyntaxError(Problem(str(path), 1, "file is not valid UTF-8")) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = int(match.group(1)) if match else 1
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise TomlSyntaxError(Problem(str(path), line, f"invalid TOML: {message}")) from exc
    return TomlFile(path=path, data=data, lines=_index_lines(text))


class TomlSyntaxError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class Checker:
    """Collects problems while reading typed values out of a TomlFile."""

    def __init__(self, doc: TomlFile) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def error(self, path: KeyPath, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def table(self, parent: dict[str, Any], path: KeyPath, *, required: bool = True) -> dict[str, Any]:
        value = parent.get(str(path[-1]))
        if value is None:
            if required:
                self.error(path[:-1], f"missing table [{'.'.join(map(str, path))}]")
            return {}
        if not isinstance(value, dict):
            self.error(path, f"'{'.'.join(map(str, path))}' must be a table")
            return {}
        return value

    def unknown_keys(self, table: dict[str, Any], path: KeyPath, known: set[str]) -> None:
        for key in table:
            if key not in known:
                self.error((*path, key), f"unknown key '{key}'")

    def string(
        self, table: dict[str, Any], path: KeyPath, *, default: str | None = None,
        choices: tuple[str, ...] | None = None,
    ) -> str:
        key = str(path[-1])
        if key not in table:
            if default is None:
                self.error(path[:-1], f"missing required key '{key}'")
                return ""
            return default
        value = table[key]
        if not isinstance(value, str):
            self.error(path, f"'{key}' must be a string")
            return default or ""
        if choices is not None and value not in choices:
            self.error(path, f"'{key}' must be one of {', '.join(choices)}, not '{value}'")
        return value

    def integer(
        self, table: dict[str, Any], path: KeyPath, *, default: int, minimum: int = 0,
        maximum: int | None = None,
    ) -> int:
        key = str(path[-1])
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"'{key}' must be an integer")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            self.error(path, f"'{key}' must be at least {minimum}{upper}, not {value}")
            return default
        return value

    def boolean(self, table: dict[str, Any], path: KeyPath, *, default: bool) -> bool:
        key = str(path[-1])
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.error(path, f"'{key}' must be true or false")
            return default
        return value

    def string_list(self, table: dict[str, Any], path: KeyPath) -> tuple[str, ...]:
        key = str(path[-1])
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(path, f"'{key}' must be a list of strings")
            return ()
        return tuple(value)
