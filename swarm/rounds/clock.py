"""Rounds are time windows every peer can compute: round(t) = floor((t - start) / duration) on DHT time.

The contract computes the same number from `block.timestamp` (docs/protocol.md), so no peer can open rounds.
"""

from __future__ import annotations

import math

from hivemind.utils import get_dht_time


class RoundClock:
    """The round clock of one experiment (`start_time` and `round_duration` come from its ExperimentRecord)."""

    def __init__(self, start_time: float, round_duration: float) -> None:
        if not (math.isfinite(round_duration) and round_duration > 0):
            raise ValueError(f"round_duration must be a positive number of seconds, got {round_duration!r}")
        if not math.isfinite(start_time):
            raise ValueError(f"start_time must be a finite time in seconds, got {start_time!r}")
        self.start_time, self.round_duration = float(start_time), float(round_duration)

    def round_at(self, t: float) -> int:
        """The round whose window holds time `t` (negative before the experiment starts)."""
        return math.floor((t - self.start_time) / self.round_duration)

    def current_round(self, now: float | None = None) -> int:
        return self.round_at(get_dht_time() if now is None else now)

    def round_start(self, r: int) -> float:
        return self.start_time + r * self.round_duration

    def round_end(self, r: int) -> float:
        """When round `r`'s training window closes (the next round's start)."""
        return self.start_time + (r + 1) * self.round_duration

    def seconds_to_next_round(self, now: float | None = None) -> float:
        """Seconds until the current round's window closes (always > 0)."""
        now = get_dht_time() if now is None else now
        return max(self.round_end(self.round_at(now)) - now, 1e-9)
