"""JSON-schema checks for tool parameters (at load) and the LLM's arguments (before anything runs).

Uses `jsonschema` (Draft 2020-12), which the `mcp` SDK already depends on. Remote `$ref`s are never
fetched (jsonschema's default registry has no retriever), so a schema cannot make us reach the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

MAX_ARGUMENTS_BYTES = 16 * 1024
MAX_REPORTED_ERRORS = 5


class ArgumentsError(ValueError):
    """The LLM's arguments are not a JSON object matching the tool's schema; `problems` say where."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def schema_problem(schema: object) -> str | None:
    """Why `schema` cannot describe tool parameters, or None if it can (an object schema, valid 2020-12)."""
    if not isinstance(schema, Mapping):
        return "must be a JSON schema object"
    if schema.get("type") != "object":
        return 'the top-level schema must have type = "object"'
    props = schema.get("properties", {})
    if not isinstance(props, Mapping):
        return "properties must be a table"
    try:
        Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(schema)"
        return f"invalid JSON schema at {where}: {exc.message}"
    required = schema.get("required", [])
    missing = [name for name in required if name not in props]
    if missing:
        return f"required names properties that are not defined: {', '.join(map(str, missing))}"
    return None


class ArgumentValidator:
    """A compiled schema; `parse()` turns the LLM's JSON text into checked arguments or raises."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._validator = Draft202012Validator(
            dict(schema), format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def check(self, arguments: object) -> list[str]:
        """Every problem with `arguments`, as 'path: why' lines (at most MAX_REPORTED_ERRORS)."""
        try:
            errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(map(str, e.path)))
        except Unresolvable as exc:
            return [f"(schema): cannot resolve reference {exc}"]
        lines = []
        for err in errors[:MAX_REPORTED_ERRORS]:
            where = "/".join(str(p) for p in err.absolute_path) or "(arguments)"
            lines.append(f"{where}: {err.message[:200]}")
        return lines

    def parse(self, arguments_json: str | None) -> dict[str, Any]:
        """Decode and validate; an empty string means no arguments (`{}`)."""
        text = (arguments_json or "").strip() or "{}"
        if len(text.encode()) > MAX_ARGUMENTS_BYTES:
            raise ArgumentsError([f"(arguments): larger than {MAX_ARGUMENTS_BYTES} bytes"])
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArgumentsError([f"(arguments): not valid JSON ({exc.msg} at position {exc.pos})"]) from None
        except RecursionError:
            raise ArgumentsError(["(arguments): nested too deeply"]) from None
        if not isinstance(value, dict):
            raise ArgumentsError(["(arguments): must be a JSON object"])
        problems = self.check(value)
        if problems:
            raise ArgumentsError(problems)
        return value
