"""Tenant file validation: the shipped tenants load, and every kind of mistake gets a precise error."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trunkline.tenants.changes import (
    ChangeSet,
    FileStamp,
    detect_changes,
    normalize_did,
    resolve_did_conflicts,
)
from trunkline.tenants.intents import TemplateError, render_template, template_names
from trunkline.tenants.loader import LoadContext, TenantFileInvalid, load_tenant
from trunkline.tenants.matcher import extract_slot, extract_time, match_intent, spoken_slots, spoken_time
from trunkline.tenants.model import DEFAULT_TRANSFER_FAILED, SlotDef, TenantConfig
from trunkline.tools.builtins import transfer_spec

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """
display_name = "Test Clinic"
numbers = ["+15550100"]
greeting = "Hello from {tenant.name}"

[[intents]]
name = "hello"
examples = ["hello"]
reply = "Hi!"
"""
LLM = """
display_name = "Test Realty"
numbers = ["+15550200"]
greeting = "Hi"
prompt = "You are helpful."

[llm]
model = "test-model"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "TEST_LLM_KEY"
"""
WEBHOOK = """
[[tools.webhook]]
name = "lookup"
description = "Look something up"
method = "GET"
url = "http://127.0.0.1:8080/lookup"
"""


def write_tenant(root: Path, text: str, tenant_id: str = "acme") -> Path:
    tenant_dir = root / tenant_id
    tenant_dir.mkdir(parents=True, exist_ok=True)
    (tenant_dir / "tenant.toml").write_text(text)
    return tenant_dir


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> TenantConfig:
    return load_tenant(write_tenant(tmp_path, text), LoadContext(env=env or {}))


def errors_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(TenantFileInvalid) as info:
        load(tmp_path, text, env)
    for err in info.value.errors:
        assert err.file == str(tmp_path / "acme" / "tenant.toml")
    return {e.key: e.why for e in info.value.errors}


def test_demo_tenant_loads_with_intents_and_disabled_booking_webhook() -> None:
    config = load_tenant(REPO / "tenants" / "demo", LoadContext(env={}))
    assert config.display_name == "Bright Smile Dental"
    assert config.numbers == ("+15550100",)
    assert config.policy.mode == "intents" and config.llm is None
    assert (config.asr.engine, config.tts.engine, config.tts.voice) == ("local", "local", "joe")
    assert "Joy" in config.system_prompt
    names = [i.name for i in config.intents]
    assert {"greeting", "hours", "book_appointment", "transfer", "goodbye"} <= set(names)
    booking = next(i for i in config.intents if i.name == "book_appointment")
    assert booking.slots == ("day", "time") and set(booking.ask) == {"day", "time"}
    assert booking.tool is not None and dict(booking.tool.arguments) == {"day": "{day}", "time": "{time}"}
    assert config.slots["day"].type == "weekday"
    (webhook,) = config.webhooks
    assert not webhook.enabled and webhook.confirm_first and webhook.retries == 0
    assert config.builtins == ("end_call", "transfer_call")


def test_acme_realty_needs_its_env_only_when_enabled(tmp_path: Path) -> None:
    shutil.copytree(REPO / "tenants" / "acme-realty", tmp_path / "acme-realty")
    shipped = load_tenant(tmp_path / "acme-realty", LoadContext(env={}))
    assert not shipped.enabled and shipped.llm is not None and shipped.llm.api_key is None
    toml = tmp_path / "acme-realty" / "tenant.toml"
    toml.write_text(toml.read_text().replace("enabled = false", "enabled = true"))
    with pytest.raises(TenantFileInvalid) as info:
        load_tenant(tmp_path / "acme-realty", LoadContext(env={}))
    keys = {e.key for e in info.value.errors}
    assert keys == {
        "llm.api_key_env",
        "tools.webhook[0].headers.X-Api-Key",
        "tools.webhook[1].headers.X-Api-Key",
        "tools.mcp[0].env.CALENDAR_TOKEN",
    }
    env = {
        "ACME_REALTY_LLM_KEY": "sk-live-123",
        "ACME_REALTY_CRM_KEY": "crm",
        "ACME_REALTY_CALENDAR_TOKEN": "c",
    }
    config = load_tenant(tmp_path / "acme-realty", LoadContext(env=env))
    assert config.llm is not None and config.llm.api_key is not None
    assert config.llm.api_key.reveal() == "sk-live-123"
    assert "sk-live-123" not in repr(config) and "sk-live-123" not in str(config.llm)
    assert config.webhooks[0].retries == 2 and config.webhooks[0].idempotent
    assert config.transfer.targets["rentals"].startswith("sip:")


def test_minimal_tenant_gets_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.tenant_id == "acme" and config.language == "en-US" and config.redact_pii
    assert config.policy.mode == "intents" and config.builtins == ("end_call",)
    assert (config.limits.max_call_minutes, config.limits.max_tool_calls) == (15, 10)
    assert config.limits.max_concurrent_calls is None
    assert config.hours is None and config.after_hours is None and not config.recording.enabled


BROKEN_CASES = [
    ("bad toml", 'display_name = "x\n', "(toml)", "not valid TOML"),
    ("unknown key", 'greting = "hi"\n' + MINIMAL, "greting", "did you mean 'greeting'"),
    ("unknown nested", MINIMAL + "[limits]\nmax_calls = 3\n", "limits.max_calls", "unknown key"),
    (
        "no calls at all",
        MINIMAL + "[limits]\nmax_concurrent_calls = 0\n",
        "limits.max_concurrent_calls",
        "between",
    ),
    ("wrong type", MINIMAL + '[limits]\nmax_call_minutes = "ten"\n', "limits.max_call_minutes", "integer"),
    (
        "out of range",
        MINIMAL + "[limits]\nmax_tool_calls = 1000\n",
        "limits.max_tool_calls",
        "between 0 and 100",
    ),
    ("bad did", MINIMAL.replace("+15550100", "555-0100"), "numbers[0]", "not E.164"),
    ("missing secret", LLM, "llm.api_key_env", "environment variable TEST_LLM_KEY is not set"),
    ("llm without table", MINIMAL + '[policy]\nmode = "llm"\n', "llm", "needs an [llm] table"),
    (
        "literal secret header",
        MINIMAL + WEBHOOK + 'headers = { Authorization = "Bearer abc" }\n',
        "tools.webhook[0].headers.Authorization",
        "environment variable",
    ),
    (
        "missing header secret",
        MINIMAL + WEBHOOK + 'headers = { "X-Key" = { env = "NOPE_KEY" } }\n',
        "tools.webhook[0].headers.X-Key",
        "NOPE_KEY is not set",
    ),
    (
        "retried POST",
        MINIMAL + WEBHOOK.replace("GET", "POST") + "retries = 2\n",
        "tools.webhook[0].retries",
        "idempotent",
    ),
    (
        "placeholder in host",
        MINIMAL + WEBHOOK.replace("127.0.0.1:8080", "{host}"),
        "tools.webhook[0].url",
        "host",
    ),
    (
        "url credentials",
        MINIMAL + WEBHOOK.replace("http://", "http://u:p@"),
        "tools.webhook[0].url",
        "credentials",
    ),
    (
        "bad schema",
        MINIMAL + WEBHOOK + '[tools.webhook.parameters]\ntype = "array"\n',
        "tools.webhook[0].parameters",
        'type = "object"',
    ),
    (
        "builtin name",
        MINIMAL + WEBHOOK.replace('"lookup"', '"end_call"'),
        "tools.webhook[0].name",
        "built-in",
    ),
    (
        "undefined slot",
        MINIMAL.replace('reply = "Hi!"', 'reply = "Hi!"\nslots = ["day"]'),
        "intents[0].slots[0]",
        "not defined in [slots]",
    ),
    ("unknown placeholder", MINIMAL.replace('"Hi!"', '"Hi {name}!"'), "intents[0].reply", "{name}"),
    ("bad template", MINIMAL.replace('"Hi!"', '"Hi {0.__class__}!"'), "intents[0].reply", "bad placeholder"),
    ("unknown tool", MINIMAL + '[intents.tool]\nname = "nope"\n', "intents[0].tool.name", "not a tool"),
    (
        "intent tool argument",
        MINIMAL
        + '[intents.tool]\nname = "lookup"\narguments = { z = "x" }\n'
        + WEBHOOK
        + '[tools.webhook.parameters]\ntype = "object"\nproperties = { q = { type = "string" } }\n',
        "intents[0].tool.arguments.z",
        "not a parameter of tool 'lookup'",
    ),
    ("unknown intent key", MINIMAL + 'repyl = "x"\n', "intents[0].repyl", "did you mean 'reply'"),
    (
        "overlapping hours",
        MINIMAL + '[hours]\ntimezone = "UTC"\nmon = ["08:00-12:00", "11:00-13:00"]\n',
        "hours.mon",
        "overlap",
    ),
    ("bad zone", MINIMAL + '[hours]\ntimezone = "Mars/Olympus"\n', "hours.timezone", "unknown time zone"),
    (
        "recording needs disclosure",
        MINIMAL + "[recording]\nenabled = true\n",
        "recording.disclosure",
        "disclosure",
    ),
    (
        "prompt escapes",
        'prompt_file = "../../etc/passwd"\n' + MINIMAL,
        "prompt_file",
        "inside the tenant directory",
    ),
    ("transfer target", MINIMAL + '[transfer]\ntarget = "555 0100"\n', "transfer.target", "E.164"),
    ("transfer builtin", MINIMAL + '[tools]\nbuiltins = ["transfer_call"]\n', "tools.builtins[0]", "needs"),
    ("blank xfer line", MINIMAL + "[transfer]\nfailed_message = ' '\n", "transfer.failed_message", "empty"),
]


def test_concurrent_call_limit_can_be_set(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + "[limits]\nmax_concurrent_calls = 3\n")
    assert config.limits.max_concurrent_calls == 3


def test_failed_transfer_line_defaults_and_can_be_set(tmp_path: Path) -> None:
    assert load(tmp_path / "a", MINIMAL).transfer.failed_message == DEFAULT_TRANSFER_FAILED
    text = MINIMAL + '[transfer]\ntarget = "+15550199"\nfailed_message = "The desk is busy, sorry."\n'
    config = load(tmp_path / "b", text)
    assert config.transfer.failed_message == "The desk is busy, sorry."
    assert transfer_spec(config.transfer).fallback == "The desk is busy, sorry."  # the tool says it too


@pytest.mark.parametrize(
    ("text", "key", "why"), [c[1:] for c in BROKEN_CASES], ids=[c[0] for c in BROKEN_CASES]
)
def test_broken_file_gives_precise_error(tmp_path: Path, text: str, key: str, why: str) -> None:
    errors = errors_of(tmp_path, text)
    assert key in errors, errors
    assert why in errors[key]


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("+15550100", "bad") + "[limits]\nmax_call_minutes = 0\n[silence]\nreprompt = 1\n"
    errors = errors_of(tmp_path, text)
    assert {"numbers[0]", "limits.max_call_minutes", "silence.reprompt"} <= set(errors)


def test_disabled_webhook_does_not_need_its_secret(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK + 'enabled = false\nheaders = { "X-Key" = { env = "NOPE_KEY" } }\n'
    (webhook,) = load(tmp_path, text).webhooks
    assert not webhook.enabled and webhook.headers == ()


def test_env_secret_header_keeps_prefix_and_hides_value(tmp_path: Path) -> None:
    text = MINIMAL + WEBHOOK + 'headers = { Authorization = { env = "T_TOKEN", prefix = "Bearer " } }\n'
    (webhook,) = load(tmp_path, text, {"T_TOKEN": "abc123"}).webhooks
    ((name, value),) = webhook.headers
    assert name == "Authorization" and not isinstance(value, str)
    assert value.reveal() == "Bearer abc123" and "abc123" not in repr(webhook)


def test_business_hours_open_closed_and_summary(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[hours]\ntimezone = "America/New_York"\nmon = "08:00-17:00"\ntue = "08:00-17:00"\n'
        'sat = ["09:00-12:00", "13:00-14:30"]\nclosed_dates = ["2025-12-22"]\n'
    )
    config = load(tmp_path, text)
    hours = config.hours
    assert hours is not None and config.after_hours is not None and config.after_hours.action == "message"
    # 2025-06-02 is a Monday; New York is UTC-4 in June, UTC-5 in December.
    assert hours.is_open(datetime(2025, 6, 2, 12, 0, tzinfo=UTC))  # 08:00 local
    assert not hours.is_open(datetime(2025, 6, 2, 11, 59, tzinfo=UTC))  # 07:59 local
    assert not hours.is_open(datetime(2025, 6, 2, 21, 0, tzinfo=UTC))  # 17:00 local, end exclusive
    assert hours.is_open(datetime(2025, 12, 1, 13, 0, tzinfo=UTC))  # 08:00 EST
    assert not hours.is_open(datetime(2025, 12, 22, 15, 0, tzinfo=UTC))  # closed date
    assert hours.summary() == (
        "Monday and Tuesday 8 AM to 5 PM, closed Wednesday to Friday, "
        "Saturday 9 AM to noon and 1 PM to 2:30 PM, closed Sunday"
    )
    assert config.template_fields()["tenant.hours"] == hours.summary()


@given(st.text(alphabet="0123456789", min_size=3, max_size=15).filter(lambda d: d[0] != "0"), st.data())
def test_normalize_did_accepts_common_spellings(digits: str, data: st.DataObject) -> None:
    expected = "+" + digits
    cut = data.draw(st.integers(1, len(digits) - 1))
    spaced = f"+{digits[:cut]}-{digits[cut:]}"
    for spelling in (
        expected,
        digits,
        "00" + digits,
        f"sip:{spaced}@trunk.example;user=phone",
        f"tel:{spaced}",
    ):
        assert normalize_did(spelling) == expected


@pytest.mark.parametrize(
    "raw", ["", "+", "+12", "abc", "+0123456", "+1234567890123456", "sip:alice@host", "+١٢٣٤"]
)
def test_normalize_did_rejects_non_numbers(raw: str) -> None:
    assert normalize_did(raw) is None


@given(
    st.dictionaries(st.sampled_from(["day", "time", "tenant.name"]), st.text(max_size=10)),
    st.text(max_size=20),
)
def test_template_renders_plain_text_and_names(values: dict[str, str], literal: str) -> None:
    literal = literal.replace("{", "{{").replace("}", "}}")
    template = f"{literal}{{day}} at {{time}} with {{tenant.name}}"
    assert template_names(template) == ["day", "time", "tenant.name"]
    rendered = render_template(template, values)
    unescaped = literal.replace("{{", "{").replace("}}", "}")
    assert rendered == f"{unescaped}{values.get('day', '')} at {values.get('time', '')} with " + values.get(
        "tenant.name", ""
    )


@pytest.mark.parametrize("bad", ["{", "}", "{0}", "{a.b.c}", "{x!r}", "{Day}"])
def test_template_rejects_malformed(bad: str) -> None:
    with pytest.raises(TemplateError):
        template_names(f"hello {bad}")


def test_detect_changes() -> None:
    a = (FileStamp("tenant.toml", 1, 10),)
    b = (FileStamp("tenant.toml", 2, 10),)
    assert not detect_changes({"x": a}, {"x": a})
    assert detect_changes({"x": a, "gone": a}, {"x": b, "new": a}) == ChangeSet(("new",), ("x",), ("gone",))


def test_did_conflicts_keep_the_established_owner(tmp_path: Path) -> None:
    owner = load(tmp_path, MINIMAL)
    newcomer = load_tenant(write_tenant(tmp_path, MINIMAL, "beta"), LoadContext(env={}))
    kept = resolve_did_conflicts(
        {"acme": owner, "beta": newcomer}, {"beta"}, {"acme": owner}, {"+15550100": "acme"}
    )
    assert set(kept.accepted) == {"acme"}
    (err,) = kept.rejected["beta"]
    assert err.key == "numbers[0]" and "'acme'" in err.why and err.file.endswith("beta/tenant.toml")
    # Nobody owned the number before: neither newcomer gets it.
    both = resolve_did_conflicts({"acme": owner, "beta": newcomer}, {"acme", "beta"}, {}, {})
    assert both.accepted == {} and set(both.rejected) == {"acme", "beta"}


DEMO_PHRASES = [
    ("Hello?", "greeting", {}),
    ("hi, what are your opening hours", "hours", {}),
    ("when do you close today", "hours", {}),
    (
        "I'd like to book an appointment for Tuesday at 3 p.m.",
        "book_appointment",
        {"day": "tuesday", "time": "15:00"},
    ),
    ("Can I come in on Wednesday at 10:30 AM?", "book_appointment", {"day": "wednesday", "time": "10:30"}),
    ("I need a cleaning on friday", "book_appointment", {"day": "friday"}),
    ("can I talk to a person", "transfer", {}),
    ("no thanks, that's everything. bye", "goodbye", {}),
    ("what's the weather like", None, {}),
]


@pytest.mark.parametrize(("phrase", "intent", "slots"), DEMO_PHRASES)
def test_demo_intents_match_typical_phrases(phrase: str, intent: str | None, slots: dict[str, str]) -> None:
    demo = load_tenant(REPO / "tenants" / "demo", LoadContext(env={}))
    match = match_intent(demo.intents, demo.slots, phrase)
    if intent is None:
        assert match is None
        return
    assert match is not None and match.intent.name == intent and dict(match.slots) == slots
    assert match.missing == tuple(s for s in match.intent.slots if s not in slots)


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("3 pm", "15:00"),
        ("at 3:30 p.m.", "15:30"),
        ("three thirty pm", "15:30"),
        ("twelve am", "00:00"),
        ("12 pm", "12:00"),
        ("around noon", "12:00"),
        ("15:45", "15:45"),
        ("at 9", "09:00"),
        ("at four fifteen", "16:15"),
        ("13 pm", None),
        ("I have 2 amazing kids", None),
        ("tomorrow", None),
    ],
)
def test_extract_time(said: str, expected: str | None) -> None:
    assert extract_time(said) == expected


@pytest.mark.parametrize(
    ("hhmm", "spoken"),
    [("10:00", "10 AM"), ("15:30", "3:30 PM"), ("12:00", "noon"), ("00:00", "midnight"),
     ("12:15", "12:15 PM"), ("00:05", "12:05 AM"), ("09:07", "9:07 AM"),
     ("24:00", "24:00"), ("soon", "soon")],
)  # fmt: skip
def test_times_are_spoken_as_people_say_them(hhmm: str, spoken: str) -> None:
    assert spoken_time(hhmm) == spoken


@given(st.integers(0, 23), st.integers(0, 59))
def test_every_extracted_time_reads_back_to_itself(hour: int, minute: int) -> None:
    hhmm = f"{hour:02d}:{minute:02d}"
    assert extract_time(spoken_time(hhmm).replace("noon", "12 pm").replace("midnight", "12 am")) == hhmm


def test_only_time_slots_are_respoken() -> None:
    defs = {"time": SlotDef("time", "time"), "ref": SlotDef("ref", "pattern", pattern=r"\d\d:\d\d")}
    assert spoken_slots({"time": "14:00", "ref": "14:00"}, defs) == {"time": "2 PM", "ref": "14:00"}


def test_extract_number_choice_and_pattern_slots() -> None:
    party = SlotDef("party", "number", min_value=1, max_value=8)
    assert extract_slot(party, "a table for four please") == "4"
    assert extract_slot(party, "we are 12 people, no wait, 6") == "6"  # 12 is out of range
    service = SlotDef("service", "choice", choices=("cleaning", "whitening"))
    assert extract_slot(service, "Just a Cleaning, thanks") == "cleaning"
    ref = SlotDef("ref", "pattern", pattern=r"[A-Z]{2}\d{4}")
    assert extract_slot(ref, "my booking is ab1234") == "ab1234" and extract_slot(ref, "no idea") is None
    assert extract_slot(SlotDef("day", "weekday"), "Mondays are best") == "monday"
