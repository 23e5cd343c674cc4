"""Per-turn latency breakdown (pure): monotonic timestamps of each stage from the caller's end of speech to
the first packet of the agent's answer, turned into the cumulative milliseconds the call record stores
(`trunkline.store.LATENCY_STAGES`: endpoint, transcript, first_llm_token, first_tts_audio, first_rtp_out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("endpoint", "transcript", "first_llm_token", "first_tts_audio", "first_rtp_out")


@dataclass(slots=True)
class TurnLatency:
    """Stage times (monotonic seconds) of one turn; `speech_end_s` is where the caller's speech stopped.

    `mark` keeps the first time given for a stage (later marks of the same stage are ignored), so the
    adapter can mark "first TTS audio" on every chunk without bookkeeping."""

    speech_end_s: float
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, stage: str, at_s: float) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown latency stage {stage!r}")
        self.marks.setdefault(stage, at_s)

    def has(self, stage: str) -> bool:
        return stage in self.marks

    def breakdown_ms(self) -> dict[str, float]:
        """Milliseconds from the end of speech to each stage reached, in pipeline order (never negative)."""
        return {
            stage: round(max(0.0, (self.marks[stage] - self.speech_end_s) * 1000.0), 1)
            for stage in STAGES
            if stage in self.marks
        }

    def total_ms(self) -> float | None:
        """End of speech → first RTP packet out (the mouth-to-wire delay), None if not reached."""
        at = self.marks.get("first_rtp_out")
        return None if at is None else round(max(0.0, (at - self.speech_end_s) * 1000.0), 1)
