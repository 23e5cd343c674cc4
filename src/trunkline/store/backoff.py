"""Exponential reconnect backoff with full jitter; pure (the caller passes `now` and the random source)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Decides when the next reconnect attempt is due: delay doubles per failure up to `max_s`, jittered."""

    initial_s: float = 0.25
    max_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    next_attempt_at: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("need 0 < initial_s <= max_s")

    def ceiling_s(self) -> float:
        """The largest delay the next failure can produce."""
        return min(self.max_s, self.initial_s * (2.0 ** min(self.failures, 62)))

    def failed(self, now: float) -> float:
        """Record a failed attempt at `now`; returns the delay to the next (in [ceiling/2, ceiling])."""
        ceiling = self.ceiling_s()
        delay = ceiling / 2 + self.rng.random() * ceiling / 2
        self.failures += 1
        self.next_attempt_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.next_attempt_at = 0.0

    def is_due(self, now: float) -> bool:
        return now >= self.next_attempt_at

    def next_deadline(self) -> float:
        return self.next_attempt_at
