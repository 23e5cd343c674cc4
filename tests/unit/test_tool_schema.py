"""JSON-schema checks: tool parameter schemas at load, the LLM's arguments before a tool runs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.tools.schema import MAX_ARGUMENTS_BYTES, ArgumentsError, ArgumentValidator, schema_problem

BOOKING = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "enum": ["monday", "tuesday"]},
        "party": {"type": "integer", "minimum": 1, "maximum": 8},
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        "date": {"type": "string", "format": "date"},
    },
    "required": ["day", "party"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ([], "must be a JSON schema object"),
        ({"type": "array"}, 'type = "object"'),
        ({"type": "object", "properties": []}, "properties must be a table"),
        (
            {"type": "object", "properties": {"a": {"type": "strin"}}},
            "invalid JSON schema at properties/a/type",
        ),
        ({"type": "object", "properties": {"a": {"minimum": "one"}}}, "invalid JSON schema"),
        ({"type": "object", "properties": {}, "required": ["a"]}, "not defined: a"),
    ],
)
def test_bad_schemas_are_explained(schema: object, why: str) -> None:
    problem = schema_problem(schema)
    assert problem is not None and why in problem


def test_good_schema_passes() -> None:
    assert schema_problem(BOOKING) is None
    assert schema_problem({"type": "object"}) is None


def test_valid_arguments_parse() -> None:
    validator = ArgumentValidator(BOOKING)
    assert validator.parse('{"day": "monday", "party": 2, "notes": ["window"]}') == {
        "day": "monday",
        "party": 2,
        "notes": ["window"],
    }


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"party": 2}', "(arguments): 'day' is a required property"),
        ('{"day": "friday", "party": 2}', "day: 'friday' is not one of"),
        ('{"day": "monday", "party": 9}', "party: 9 is greater than the maximum of 8"),
        ('{"day": "monday", "party": 2.5}', "party: 2.5 is not of type 'integer'"),
        ('{"day": "monday", "party": 2, "x": 1}', "Additional properties are not allowed"),
        ('{"day": "monday", "party": 2, "notes": ["a", 3]}', "notes/1: 3 is not of type 'string'"),
        ('{"day": "monday", "party": 2, "date": "tomorrow"}', "date: 'tomorrow' is not a 'date'"),
        ('{"day": "monday", "party": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("null", "must be a JSON object"),
    ],
)
def test_invalid_arguments_say_where(arguments: str, expected: str) -> None:
    with pytest.raises(ArgumentsError) as info:
        ArgumentValidator(BOOKING).parse(arguments)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_empty_arguments_mean_an_empty_object() -> None:
    validator = ArgumentValidator({"type": "object", "properties": {}})
    assert validator.parse("") == {} and validator.parse(None) == {} and validator.parse("  ") == {}


def test_oversized_and_deeply_nested_arguments_are_refused() -> None:
    validator = ArgumentValidator({"type": "object"})
    with pytest.raises(ArgumentsError, match="larger than"):
        validator.parse(json.dumps({"a": "x" * MAX_ARGUMENTS_BYTES}))
    with pytest.raises(ArgumentsError):
        validator.parse('{"a": ' + "[" * 5000 + "]" * 5000 + "}")


def test_remote_refs_are_never_fetched() -> None:
    validator = ArgumentValidator(
        {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/s.json"}}}
    )
    problems = validator.check({"a": 1})
    assert problems and "cannot resolve" in problems[0]


@given(
    day=st.sampled_from(["monday", "tuesday"]),
    party=st.integers(1, 8),
    notes=st.lists(st.text(max_size=20), max_size=3),
)
def test_every_valid_booking_passes(day: str, party: int, notes: list[str]) -> None:
    arguments = {"day": day, "party": party, "notes": notes}
    assert ArgumentValidator(BOOKING).parse(json.dumps(arguments)) == arguments


@given(party=st.integers().filter(lambda n: not 1 <= n <= 8))
def test_every_out_of_range_party_fails(party: int) -> None:
    with pytest.raises(ArgumentsError) as info:
        ArgumentValidator(BOOKING).parse(json.dumps({"day": "monday", "party": party}))
    assert all(p.startswith("party: ") for p in info.value.problems)
