"""The turn-latency bench's pure helpers: which packets mark the end of the caller's speech and the start of
the agent's, the CPU normalisation, the server log parsing, and the scripted caller's SIP/SDP parsing."""

from __future__ import annotations

import numpy as np
from bench.agent_harness import log_numbers, parse_turn_latency, server_view
from bench.sip_caller import SentFrame, frame_dbfs, noise_floor, parse_sip, sdp_audio_target
from bench.turn_latency import (
    cpu_per_2s,
    first_speech_after,
    last_speech_ns,
    percentiles,
    reply_heard,
)
from hypothesis import given
from hypothesis import strategies as st


def frames(levels: list[float], start_ns: int = 1_000, step_ns: int = 20_000_000) -> list[SentFrame]:
    return [SentFrame(i, start_ns + i * step_ns, lvl) for i, lvl in enumerate(levels)]


def test_last_speech_is_the_last_loud_frame_not_the_last_frame() -> None:
    sent = frames([-60, -20, -30, -50, -60, -60])
    assert last_speech_ns(sent, since_ns=0) == sent[2].at_ns


def test_last_speech_ignores_frames_before_the_turn() -> None:
    sent = frames([-20, -60, -60])
    assert last_speech_ns(sent, since_ns=sent[1].at_ns) is None
    assert last_speech_ns(sent, since_ns=0) == sent[0].at_ns


def test_first_agent_speech_must_follow_the_callers_last_speech() -> None:
    arrivals = [(100, -10.0), (200, -120.0), (300, -70.0), (400, -30.0), (500, -20.0)]
    assert first_speech_after(arrivals, after_ns=150) == 400  # -70 dBFS is below the speech level
    assert first_speech_after(arrivals, after_ns=0) == 100
    assert first_speech_after(arrivals, after_ns=500) is None


@given(st.lists(st.floats(-120, 0), min_size=1, max_size=60), st.floats(-100, -10))
def test_last_speech_frame_is_above_threshold_and_nothing_later_is(levels: list[float], thr: float) -> None:
    sent = frames(levels)
    at = last_speech_ns(sent, 0, thr)
    loud = [f for f in sent if f.level_dbfs > thr]
    assert at == (loud[-1].at_ns if loud else None)


def test_cpu_per_turn_subtracts_idle_and_scales_to_two_seconds() -> None:
    assert cpu_per_2s(cpu_s=1.0, wall_s=5.0, idle_cpu_per_s=0.04, speech_s=2.0) == 0.8
    assert cpu_per_2s(cpu_s=0.4, wall_s=5.0, idle_cpu_per_s=0.0, speech_s=4.0) == 0.2
    assert cpu_per_2s(cpu_s=0.1, wall_s=5.0, idle_cpu_per_s=0.1, speech_s=2.0) == 0.0


def test_percentiles_of_known_samples() -> None:
    out = percentiles([float(x) for x in range(1, 101)])
    assert out["p50_ms"] == 50.5
    assert out["p95_ms"] == 95.0
    assert percentiles([])["p50_ms"] is None


def test_turn_latency_line_in_console_and_json_rendering() -> None:
    console = (
        "2026-11-25 15:19:34 [info     ] agent.turn_latency  [trunkline.pipeline.handler] call_id=ab12 "
        "endpoint_ms=531.0 transcript_ms=531.0 first_llm_token_ms=542.0 first_tts_audio_ms=662.0 "
        "first_rtp_out_ms=680.0 tenant_id=bench"
    )
    expected = {
        "endpoint": 531.0,
        "transcript": 531.0,
        "first_llm_token": 542.0,
        "first_tts_audio": 662.0,
        "first_rtp_out": 680.0,
    }
    assert parse_turn_latency(console) == expected
    as_json = '{"event": "agent.turn_latency", "endpoint_ms": 531.0, "first_rtp_out_ms": 680, "x": "y"}'
    assert parse_turn_latency(as_json) == {"endpoint": 531.0, "first_rtp_out": 680.0}
    assert log_numbers("a=1 b=x c=-2.5") == {"a": 1.0, "c": -2.5}


def test_server_view_counts_decodes_and_reads_the_heard_line() -> None:
    lines = [
        "[debug] agent.decode_started request_id=1 final=False",
        "[debug] agent.decoded request_id=1 final=False decode_ms=410",
        "[debug] agent.decode_started request_id=2 final=True",
        "[info ] agent.turn_heard reused=True words=9 endpoint_ms=420 transcript_ms=430",
        "[info ] agent.turn_latency endpoint_ms=420.0 first_rtp_out_ms=600.0",
    ]
    view = server_view(lines)
    assert view["server_decodes"] == 2
    assert view["server_decode_ms"] == [410.0]
    assert view["heard_endpoint_ms"] == 420.0
    assert view["internal_ms"] == {"endpoint": 420.0, "first_rtp_out": 600.0}


def test_reply_check_needs_two_of_the_stub_reply_words() -> None:
    assert reply_heard("Sure, Tuesday at 10 works. Anything else?")
    assert not reply_heard("Sorry, I didn't catch that.")


def test_levels_and_noise_floor() -> None:
    assert frame_dbfs(np.zeros(160, np.int16)) == -120.0
    assert abs(frame_dbfs(np.full(160, 3277, np.int16)) - (-20.0)) < 0.1
    floor = noise_floor(1.0, -60.0, seed=3)
    assert abs(frame_dbfs(floor) - (-60.0)) < 1.0
    assert np.array_equal(floor, noise_floor(1.0, -60.0, seed=3))


def test_sip_response_and_sdp_answer_parsing() -> None:
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    body += "m=audio 32010 RTP/AVP 0\r\n"
    raw = (
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\n"
        "t: <sip:+1555@127.0.0.1>;tag=9\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:trunkline@127.0.0.1:5080>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    msg = parse_sip(raw.encode())
    assert msg.status == 200
    assert msg.get("to") == "<sip:+1555@127.0.0.1>;tag=9"  # compact header form
    assert msg.get("contact") == "<sip:trunkline@127.0.0.1:5080>"
    assert sdp_audio_target(msg.body) == ("127.0.0.1", 32010)
    assert parse_sip(b"BYE sip:bench@127.0.0.1 SIP/2.0\r\nCall-ID: c1\r\n\r\n").status is None
