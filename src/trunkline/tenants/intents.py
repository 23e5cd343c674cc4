"""The offline-policy schema: `[slots.*]` definitions and `[[intents]]`, plus the reply templates.

Templates use `{name}` placeholders (`{{`/`}}` for literal braces) over the intent's slots and the
`tenant.*` fields; they are rendered by our own tiny substitution, never `str.format` on objects.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any

from trunkline.tenants.model import (
    TENANT_TEMPLATE_FIELDS,
    Intent,
    IntentToolCall,
    SlotDef,
)
from trunkline.tenants.reader import Table

SLOT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_TOKEN_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
SLOT_TYPES = ("weekday", "time", "number", "choice", "pattern", "text")


class TemplateError(ValueError):
    """A template with unbalanced braces or a placeholder that is not a plain name."""


def template_names(template: str) -> list[str]:
    """Placeholder names in `template`, in order; raises TemplateError on a malformed template."""
    names = []
    for m in _TOKEN_RE.finditer(template):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        name = m.group(1)
        if name is None or not re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?", name):
            raise TemplateError(
                f"bad placeholder {tok!r}: use {{slot}} or {{tenant.name}}; {{{{ }}}} for braces"
            )
        names.append(name)
    return names


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Substitute `{name}` with `values[name]` (missing names become empty strings)."""

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        return values.get(m.group(1) or "", "")

    return _TOKEN_RE.sub(sub, template)


def check_template(t: Table, key: str, template: str | None, allowed: Collection[str]) -> None:
    if template is None:
        return
    try:
        names = template_names(template)
    except TemplateError as exc:
        t.error(key, str(exc))
        return
    for name in names:
        if name not in allowed:
            t.error(key, f"placeholder {{{name}}} is not one of this intent's slots or a tenant.* field")
            return


def parse_slot(name: str, t: Table) -> SlotDef | None:
    if not SLOT_NAME_RE.match(name) or name == "tenant":
        t.problems.add(t.path, "slot names must be lower_snake_case (at most 32 characters), not 'tenant'")
        return None
    kind = t.choice("type", SLOT_TYPES, required=True)
    choices = tuple(t.strings("choices") or ())
    pattern = t.text("pattern", max_len=200)
    lo = t.number("min", float("-inf"), lo=-1e12, hi=1e12) if t.has("min") else None
    hi = t.number("max", float("inf"), lo=-1e12, hi=1e12) if t.has("max") else None
    if kind == "choice" and not choices:
        t.error("choices", "a 'choice' slot needs a non-empty choices list")
    if kind != "choice" and choices:
        t.error("choices", "only 'choice' slots take choices")
    if kind == "pattern":
        if pattern is None:
            t.error("pattern", "a 'pattern' slot needs a regular expression")
        else:
            try:
                re.compile(pattern)
            except re.error as exc:
                t.error("pattern", f"not a valid regular expression ({exc})")
    elif pattern is not None:
        t.error("pattern", "only 'pattern' slots take a pattern")
    if (lo is not None or hi is not None) and kind != "number":
        t.error("min" if lo is not None else "max", "only 'number' slots take min/max")
    if lo is not None and hi is not None and lo > hi:
        t.error("min", "must not be greater than max")
    t.finish()
    return SlotDef(name, kind, choices, pattern, lo, hi) if kind else None


def parse_slots(t: Table | None) -> dict[str, SlotDef]:
    if t is None:
        return {}
    slots: dict[str, SlotDef] = {}
    for name in sorted(t.data):
        sub = t.table(name)
        if sub is not None and (slot := parse_slot(name, sub)) is not None:
            slots[name] = slot
    return slots


def _intent_tool(
    t: Table, slots: tuple[str, ...], tools: Mapping[str, Mapping[str, Any] | None], prefixes: Collection[str]
) -> IntentToolCall | None:
    sub = t.table("tool")
    if sub is None:
        return None
    name = sub.text("name", required=True, max_len=64)
    known = name in tools or any(str(name).startswith(f"{p}_") for p in prefixes)
    if name is not None and not known:
        sub.error("name", f"{name!r} is not a tool of this tenant (webhook, built-in or MCP prefix)")
    args: list[tuple[str, str]] = []
    arg_table = sub.table("arguments")
    if arg_table is not None:
        for arg in sorted(arg_table.data):
            value = arg_table.text(arg, max_len=500)
            check_template(arg_table, arg, value, slots)
            if value is not None:
                args.append((arg, value))
    schema = tools.get(name or "")
    if schema is not None:
        _check_arguments(sub, str(name), [a for a, _ in args], schema)
    sub.finish()
    return IntentToolCall(name, tuple(args)) if name else None


def _check_arguments(t: Table, tool: str, given: list[str], schema: Mapping[str, Any]) -> None:
    """An intent's tool arguments must be the webhook's parameters and cover the required ones."""
    properties = schema.get("properties", {})
    for arg in given:
        if arg not in properties:
            t.error(f"arguments.{arg}", f"is not a parameter of tool {tool!r}")
    for required in schema.get("required", []):
        if required not in given:
            t.error("arguments", f"tool {tool!r} requires argument {required!r}")


def parse_intent(
    t: Table,
    slot_defs: Mapping[str, SlotDef],
    tools: Mapping[str, Mapping[str, Any] | None],
    prefixes: Collection[str],
) -> Intent | None:
    name = t.text("name", required=True, max_len=64)
    if name is not None and not SLOT_NAME_RE.match(name):
        t.error("name", "must be lower_snake_case, at most 32 characters")
    slots = tuple(t.strings("slots") or ())
    for i, slot in enumerate(slots):
        if slot not in slot_defs:
            t.item_error("slots", i, f"slot {slot!r} is not defined in [slots]")
    allowed = set(slots) | TENANT_TEMPLATE_FIELDS
    examples = t.strings("examples", required=True) or []
    if not examples and t.has("examples"):
        t.error("examples", "needs at least one example phrase")
    for i, example in enumerate(examples):
        check_template(t, f"examples[{i}]", example, set(slots))
    reply = t.text("reply", required=True, max_len=1000)
    check_template(t, "reply", reply, allowed)
    ask: dict[str, str] = {}
    ask_table = t.table("ask")
    if ask_table is not None:
        for slot in sorted(ask_table.data):
            question = ask_table.text(slot, max_len=300)
            if slot not in slots:
                ask_table.error(slot, "is not one of this intent's slots")
            elif question is not None:
                check_template(ask_table, slot, question, allowed)
                ask[slot] = question
    for slot in slots:
        if slot in slot_defs and slot not in ask:
            t.error(f"ask.{slot}", "every slot needs a question to ask when the caller has not given it")
    tool = _intent_tool(t, slots, tools, prefixes)
    t.finish()
    if name is None or reply is None:
        return None
    return Intent(name, tuple(examples), reply, slots, MappingProxyType(ask), tool)


def parse_intents(
    tables: list[Table],
    slot_defs: Mapping[str, SlotDef],
    tools: Mapping[str, Mapping[str, Any] | None],
    prefixes: Collection[str],
) -> tuple[Intent, ...]:
    intents: list[Intent] = []
    seen: set[str] = set()
    for t in tables:
        intent = parse_intent(t, slot_defs, tools, prefixes)
        if intent is None:
            continue
        if intent.name in seen:
            t.error("name", f"duplicate intent name {intent.name!r}")
            continue
        seen.add(intent.name)
        intents.append(intent)
    return tuple(intents)
