"""Typed, path-aware access to a parsed TOML table that records every problem instead of stopping.

Each getter checks one key, records `TenantConfigError(file, key, why)` on a bad value and returns a
default, so one pass over a file reports all its mistakes. `finish()` flags keys nobody asked for.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any


class TenantConfigError(Exception):
    """One precise problem in a tenant file: which file, which key (dotted path), and why."""

    def __init__(self, file: str, key: str, why: str) -> None:
        super().__init__(f"{file}: {key}: {why}")
        self.file = file
        self.key = key
        self.why = why

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TenantConfigError) and (self.file, self.key, self.why) == (
            other.file,
            other.key,
            other.why,
        )

    def __hash__(self) -> int:
        return hash((self.file, self.key, self.why))


class TenantFileInvalid(Exception):
    """A tenant file with one or more problems; the tenant is not (re)loaded."""

    def __init__(self, errors: list[TenantConfigError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = tuple(errors)


class Problems:
    """Accumulates the errors of one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[TenantConfigError] = []

    def add(self, key: str, why: str) -> None:
        self.errors.append(TenantConfigError(self.file, key or "(file)", why))


def join_key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "an array"}


class Table:
    """A TOML table at `path`; reads are typed and remembered for the unknown-key check."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: Problems) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self._seen: set[str] = set()

    def key(self, key: str) -> str:
        return join_key(self.path, key)

    def error(self, key: str, why: str) -> None:
        self.problems.add(self.key(key), why)

    def item_error(self, key: str, index: int, why: str) -> None:
        self.problems.add(f"{self.key(key)}[{index}]", why)

    def has(self, key: str) -> bool:
        self._seen.add(key)
        return key in self.data

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        return self.data.get(key)

    def _typed(self, key: str, kind: type, required: bool) -> Any:
        self._seen.add(key)
        if key not in self.data:
            if required:
                self.error(key, "required key is missing")
            return None
        value = self.data[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            self.error(key, f"must be {_TYPE_NAMES[kind]}, got {_toml_type(value)}")
            return None
        return value

    def text(
        self, key: str, default: str | None = None, *, required: bool = False, max_len: int = 2000
    ) -> Any:
        value = self._typed(key, str, required)
        if value is None:
            return default
        if not value.strip():
            self.error(key, "must not be empty")
            return default
        if len(value) > max_len:
            self.error(key, f"is too long ({len(value)} characters, at most {max_len})")
            return default
        return value

    def choice(
        self, key: str, choices: tuple[str, ...], default: str | None = None, *, required: bool = False
    ) -> Any:
        value = self._typed(key, str, required)
        if value is None:
            return default
        if value not in choices:
            self.error(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
            return default
        return value

    def integer(self, key: str, default: int, *, lo: int, hi: int) -> int:
        value = self._typed(key, int, False)
        if value is None:
            return default
        if not lo <= value <= hi:
            self.error(key, f"must be between {lo} and {hi}, got {value}")
            return default
        return int(value)

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self._typed(key, float, False)
        if value is None:
            return default
        if not lo <= value <= hi:
            self.error(key, f"must be between {lo:g} and {hi:g}, got {value:g}")
            return default
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, False)
        return default if value is None else bool(value)

    def strings(self, key: str, *, required: bool = False, max_items: int = 200) -> list[str] | None:
        value = self._typed(key, list, required)
        if value is None:
            return None
        if len(value) > max_items:
            self.error(key, f"has {len(value)} items, at most {max_items}")
            return None
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.item_error(key, i, f"must be a non-empty string, got {_toml_type(item)}")
            else:
                out.append(item)
        return out

    def table(self, key: str, *, required: bool = False) -> Table | None:
        self._seen.add(key)
        if key not in self.data:
            if required:
                self.error(key, "required table is missing")
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            self.error(key, f"must be a table, got {_toml_type(value)}")
            return None
        return Table(value, self.key(key), self.problems)

    def tables(self, key: str, *, max_items: int = 100) -> list[Table]:
        """An array of tables (`[[key]]`)."""
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(key, f"must be an array of tables ([[{self.key(key)}]]), got {_toml_type(value)}")
            return []
        if len(value) > max_items:
            self.error(key, f"has {len(value)} entries, at most {max_items}")
            return []
        return [Table(v, f"{self.key(key)}[{i}]", self.problems) for i, v in enumerate(value)]

    def finish(self) -> None:
        """Report every key that no parser asked for, with a close match when there is one."""
        for key in sorted(set(self.data) - self._seen):
            near = difflib.get_close_matches(key, sorted(self._seen), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            self.error(key, f"unknown key{hint}")


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__
