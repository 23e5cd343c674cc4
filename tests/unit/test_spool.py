"""Spool, record serialization, backoff and write batching: the pure parts of the call store."""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkline.store.backoff import Backoff
from trunkline.store.errors import RecordDecodeError
from trunkline.store.postgres import group_by_tenant, runs_by_kind
from trunkline.store.records import (
    LATENCY_STAGES,
    CallEnd,
    CallRecord,
    Direction,
    MediaQuality,
    Speaker,
    StoreRecord,
    ToolCallRecord,
    ToolStatus,
    TurnRecord,
    UsageRecord,
    UsageTotals,
    check_tenant_id,
    record_from_json,
    record_kind,
    record_to_json,
    sum_usage,
)
from trunkline.store.spool import (
    REJECTED_FILE,
    Spool,
    decode_lines,
    encode_lines,
    parse_segment_index,
    segment_name,
)

# --- strategies ----------------------------------------------------------------------------------------

tenants = st.sampled_from(["acme", "globex", "initech", "t-ü"])
aware = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
small_int = st.integers(min_value=0, max_value=2**53)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
media = st.builds(
    MediaQuality,
    small_int,
    small_int,
    st.integers(-1000, 2**40),
    small_int,
    small_int,
    small_int,
    finite,
    finite,
)

calls = st.builds(
    CallRecord, tenants, st.uuids(), st.sampled_from(Direction), st.text(max_size=20), st.text(max_size=20),
    aware, st.text(max_size=40), st.none() | st.sampled_from(["PCMU", "PCMA", "G722"]), st.none() | aware,
)  # fmt: skip
turns = st.builds(
    TurnRecord, tenants, st.uuids(), st.integers(0, 10_000), st.sampled_from(Speaker), st.text(max_size=200),
    aware, aware, st.dictionaries(st.sampled_from(LATENCY_STAGES), finite), st.booleans(),
    st.none() | st.text(max_size=50), st.uuids(),
)  # fmt: skip
tool_calls = st.builds(
    ToolCallRecord, tenants, st.uuids(), st.text(max_size=30),
    st.dictionaries(st.text(max_size=8), json_values), json_values, st.sampled_from(ToolStatus), aware,
    st.floats(0, 1e7), st.none() | st.uuids(), st.uuids(),
)  # fmt: skip
usages = st.builds(
    UsageRecord, tenants, st.uuids(), aware, small_int, small_int, st.floats(0, 1e6), small_int,
    st.floats(0, 1e6), st.integers(0, 1000), st.floats(0, 1e5), st.uuids(),
)  # fmt: skip
ends = st.builds(
    CallEnd, tenants, st.uuids(), aware, st.text(max_size=30), st.none() | st.just("PCMU"), st.none() | aware,
    media,
)  # fmt: skip
records = st.one_of(calls, turns, tool_calls, usages, ends)


def _light(tenant: str, kind: int, text: str) -> StoreRecord:
    """A cheap record of a given tenant and kind (for properties about order, not content)."""
    cid, t = uuid4(), datetime(2024, 5, 1, tzinfo=UTC)
    options: list[StoreRecord] = [
        CallRecord(tenant, cid, Direction.INBOUND, "", "", t),
        TurnRecord(tenant, cid, 0, Speaker.CALLER, text, t, t),
        ToolCallRecord(tenant, cid, "f", {"q": text}, None, ToolStatus.OK, t, 1.0),
        UsageRecord(tenant, cid, t, llm_tokens_in=len(text)),
        CallEnd(tenant, cid, t, text),
    ]
    return options[kind]


light_records = st.builds(_light, tenants, st.integers(0, 4), st.text(max_size=12))


def _now() -> datetime:
    return datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _turn(tenant: str = "acme", seq: int = 0, text: str = "hello") -> TurnRecord:
    return TurnRecord(tenant, uuid4(), seq, Speaker.CALLER, text, _now(), _now() + timedelta(seconds=1))


# --- serialization ---------------------------------------------------------------------------------------


@given(records)
def test_record_json_round_trip(record: StoreRecord) -> None:
    wire = json.loads(json.dumps(record_to_json(record)))
    back = record_from_json(wire)
    assert back == record
    assert type(back) is type(record)
    assert wire["kind"] == record_kind(record)


def test_decoding_keeps_the_id_and_refuses_records_without_one() -> None:
    turn = _turn()
    wire = record_to_json(turn)
    assert record_from_json(wire) == turn
    del wire["id"]
    with pytest.raises(RecordDecodeError):
        record_from_json(wire)


@pytest.mark.parametrize(
    "bad",
    [{}, {"kind": "nope"}, {"kind": "turn", "tenant_id": "a"}, {"kind": "usage", "id": "not-a-uuid"}, []],
)
def test_decoding_garbage_raises_a_typed_error(bad: object) -> None:
    with pytest.raises(RecordDecodeError):
        record_from_json(bad)  # type: ignore[arg-type]


def test_records_refuse_unusable_tenants_and_naive_times() -> None:
    for bad in ["", "x" * 129, "a\x00b"]:
        with pytest.raises(ValueError):
            check_tenant_id(bad)
    with pytest.raises(ValueError):
        TurnRecord("acme", uuid4(), 0, Speaker.AGENT, "hi", datetime(2024, 1, 1), _now())


def test_tool_call_payloads_are_normalised_to_json() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    rec = ToolCallRecord(
        "acme", uuid4(), "f", {"t": (1, 2), "o": Opaque()}, {(1, 2): "x"}, ToolStatus.OK, _now(), 1
    )
    assert rec.arguments == {"t": [1, 2], "o": "opaque"}
    assert rec.result == "{(1, 2): 'x'}"
    assert decode_lines(encode_lines([rec])).records == (rec,)


def test_non_finite_floats_survive_the_spool() -> None:
    # A NaN from a buggy timer must reach Postgres (which stores or refuses it), not break the spool.
    rec = TurnRecord("acme", uuid4(), 0, Speaker.AGENT, "x", _now(), _now(), {"endpoint": float("nan")})
    [back] = decode_lines(encode_lines([rec])).records
    assert isinstance(back, TurnRecord) and back.id == rec.id and math.isnan(back.latency_ms["endpoint"])


@given(st.lists(light_records, max_size=8), st.data())
def test_a_torn_write_loses_only_the_incomplete_line(recs: list[StoreRecord], data: st.DataObject) -> None:
    encoded = encode_lines(recs)
    cut = data.draw(st.integers(0, len(encoded)))
    decoded = decode_lines(encoded[:cut])
    complete = encoded[:cut].count(b"\n")
    assert list(decoded.records) == recs[:complete]
    assert decoded.bad_lines == ()
    assert decoded.torn_tail == encoded[:cut][len(encode_lines(recs[:complete])) :]


def test_corrupt_lines_are_reported_and_the_rest_still_decodes() -> None:
    a, b = _turn(seq=1), _turn(seq=2)
    data = encode_lines([a]) + b"{not json\n" + b'{"kind":"turn"}\n' + encode_lines([b])
    decoded = decode_lines(data)
    assert decoded.records == (a, b)
    assert decoded.bad_lines == (b"{not json", b'{"kind":"turn"}')
    assert decoded.torn_tail == b""


def test_segment_names_round_trip() -> None:
    for i in (1, 42, 10**11):
        assert parse_segment_index(segment_name(i)) == i
    assert parse_segment_index(REJECTED_FILE) is None
    assert parse_segment_index("seg-1.jsonl") is None


# --- the spool on disk -----------------------------------------------------------------------------------


def _read_all(spool: Spool) -> list[StoreRecord]:
    out: list[StoreRecord] = []
    for path in spool.segments():
        out.extend(spool.read(path).records)
    return out


def test_spool_keeps_order_across_rotated_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", segment_max_bytes=600)
    spool.open()
    written = [_turn(seq=i, text=f"utterance {i}") for i in range(30)]
    for i in range(0, 30, 3):
        spool.append(written[i : i + 3])
    assert spool.segment_count > 3
    assert _read_all(spool) == written


def test_spool_after_restart_appends_to_a_new_segment_and_ignores_a_torn_tail(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.open()
    before = [_turn(seq=1), _turn(seq=2)]
    first.append(before)
    [path] = first.segments()
    with open(path, "ab") as f:  # a crash in the middle of the next write
        f.write(encode_lines([_turn(seq=3)])[:25])
    # no close(): the process died

    second = Spool(tmp_path)
    second.open()
    after = [_turn(seq=4)]
    second.append(after)
    assert len(second.segments()) == 2
    decoded = second.read(path)
    assert list(decoded.records) == before and decoded.torn_tail
    assert _read_all(second) == before + after


def test_removing_a_replayed_segment_is_durable_and_the_spool_empties(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_max_bytes=1)  # one append per segment
    spool.open()
    spool.append([_turn(seq=1)])
    spool.append([_turn(seq=2)])
    oldest, newest = spool.segments()
    spool.remove(oldest)
    assert not oldest.exists() and spool.segments() == [newest]
    reopened = Spool(tmp_path)
    reopened.open()
    assert reopened.segments() == [newest]
    reopened.remove(newest)
    assert reopened.is_empty()
    with pytest.raises(ValueError):
        reopened.remove(newest)


def test_removing_the_segment_being_written_seals_it_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append([_turn(seq=1)])
    [current] = spool.segments()
    spool.remove(current)
    spool.append([_turn(seq=2)])
    [fresh] = spool.segments()
    assert fresh != current
    assert [r.seq for r in _read_all(spool) if isinstance(r, TurnRecord)] == [2]


def test_rejected_lines_go_to_their_own_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    assert spool.reject([b"{bad", b"worse\n"]) == 2
    assert (tmp_path / REJECTED_FILE).read_bytes() == b"{bad\nworse\n"
    assert spool.is_empty()


def test_spool_must_be_opened(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        Spool(tmp_path).append([_turn()])


# --- backoff, batching, usage ----------------------------------------------------------------------------


@given(st.floats(0.01, 1.0), st.floats(1.0, 60.0), st.integers(0, 2**32))
def test_backoff_doubles_with_jitter_up_to_the_cap(initial: float, cap: float, seed: int) -> None:
    b = Backoff(initial_s=initial, max_s=cap, rng=random.Random(seed))
    now = 100.0
    for n in range(20):
        ceiling = min(cap, initial * 2**n)
        assert b.ceiling_s() == pytest.approx(ceiling)
        delay = b.failed(now)
        assert ceiling / 2 <= delay <= ceiling
        assert not b.is_due(now) and b.is_due(now + delay)
        assert b.next_deadline() == now + delay
    b.succeeded()
    assert b.is_due(now) and b.ceiling_s() == pytest.approx(initial)


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0)
    with pytest.raises(ValueError):
        Backoff(initial_s=5, max_s=1)


@given(st.lists(light_records, max_size=30))
def test_grouping_keeps_each_tenants_order_and_runs_partition_it(recs: list[StoreRecord]) -> None:
    groups = group_by_tenant(recs)
    assert sorted(r for _, g in groups for r in map(id, g)) == sorted(map(id, recs))
    for tenant, group in groups:
        assert group == [r for r in recs if r.tenant_id == tenant]
        runs = runs_by_kind(group)
        assert [r for _, run in runs for r in run] == group
        assert all(record_kind(r) == kind for kind, run in runs for r in run)
        assert all(a[0] != b[0] for a, b in itertools.pairwise(runs))


@settings(max_examples=50)
@given(st.lists(usages, max_size=10))
def test_usage_sums_field_by_field(recs: list[UsageRecord]) -> None:
    total = sum_usage(recs)
    assert total.llm_tokens_in == sum(r.llm_tokens_in for r in recs)
    assert total.tts_characters == sum(r.tts_characters for r in recs)
    assert total.minutes == pytest.approx(sum(r.minutes for r in recs))
    assert sum_usage([total, UsageTotals(tool_calls=2)]).tool_calls == total.tool_calls + 2
