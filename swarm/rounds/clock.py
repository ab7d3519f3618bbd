"""Rounds are time windows every peer can compute: round(t) = floor((t - start) / duration) on DHT time.

The contract computes the same number from `block.timestamp` (docs/protocol.md), so no peer can open rounds.
A round's averaging phases close at offsets after its end (`RoundTiming`); `adapt_timing` sets them from what the
group reported in the previous round (docs/protocol.md, "Phase timing").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


# ---------------------------------------------------------------------------------------------- phase timing

MAX_ROUND_SHARE = 0.9  # adapted phases of round r end at most this far into round r + 1 (its training window)
HEADROOM_PCT = 125  # a phase lasts at least 125 % of the group's median need ...
SPREAD = 3  # ... and at least the median + this many median absolute deviations
AGREE_DIV = 4  # the agree phase: a quarter of the exchange (accusations, parts fetched from relays)


@dataclass(frozen=True)
class RoundTiming:
    """Seconds after a round's end at which its phases close (all on DHT time, the same for every peer)."""

    commit_s: float
    exchange_s: float
    agree_s: float

    def __post_init__(self) -> None:
        for name in ("commit_s", "exchange_s", "agree_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"RoundTiming.{name} must be a positive number of seconds, got {value!r}")

    @property
    def total(self) -> float:
        return self.commit_s + self.exchange_s + self.agree_s

    @classmethod
    def for_duration(cls, round_duration: float) -> RoundTiming:
        """Commit in the first 35 % of the next round, exchange in the next 30 %, agree in the next 15 %.

        Committing gets the largest share: it starts when the round ends, when a busy peer may be late to it."""
        return cls(0.35 * round_duration, 0.3 * round_duration, 0.15 * round_duration)


@dataclass(frozen=True)
class AdaptedTiming:
    """What `adapt_timing` decided: the phases to use, what the group's reports say it needs, and whether that fits."""

    timing: RoundTiming
    need: RoundTiming | None  # None: too few reports, the fallback timing is used
    fits: bool  # False: the need is above MAX_ROUND_SHARE of the round; `timing` is the need scaled down to fit


class TimingReport(Protocol):
    """The figures a peer reports in its signed commit record about its previous round (0: none)."""

    last_commit_ms: int  # from that round's end until its commit record was stored
    last_exchange_ms: int  # from the commit deadline until it held every part it pulled (or gave up)
    last_pulled: int  # how many other peers' updates it pulled


def _need_ms(values: list[int]) -> int:
    """A robust upper estimate of what the group needs: max(125 % of the median, median + SPREAD x MAD), integers
    only, so every peer computes the same number from the same reports (at most half of them can be lies)."""
    values = sorted(values)
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
    dev = sorted(abs(v - median) for v in values)
    mad = dev[mid] if len(dev) % 2 else (dev[mid - 1] + dev[mid]) // 2
    return max(median * HEADROOM_PCT // 100, median + SPREAD * mad)


def adapt_timing(reports: Sequence[TimingReport], *, fallback: RoundTiming, floor: RoundTiming,
                 round_duration: float) -> AdaptedTiming:
    """Phases for the next round from the previous round's agreed reports (its kept peers' commit records).

    Deterministic: every honest peer of the group holds the same kept records, so all get the same deadlines.
    Fewer than a majority of reports (the group's first rounds, a peer that missed the round): `fallback`.
    commit = need of the reported commit times; exchange = need of the per-update exchange times x (group - 1);
    agree = exchange / AGREE_DIV; each at least `floor`'s. Above MAX_ROUND_SHARE of the round, what each phase
    needs above its floor is cut by one factor to fit and `fits` is False (the caller warns: rounds are too short)."""
    if not (math.isfinite(round_duration) and round_duration > 0):
        raise ValueError(f"round_duration must be a positive number of seconds, got {round_duration!r}")
    full = [r for r in reports if r.last_commit_ms > 0 and r.last_exchange_ms > 0 and r.last_pulled > 0]
    if not reports or 2 * len(full) <= len(reports):
        return AdaptedTiming(fallback, None, fallback.total <= MAX_ROUND_SHARE * round_duration)
    commit_ms = _need_ms([r.last_commit_ms for r in full])
    per_update_us = _need_ms([1000 * r.last_exchange_ms // r.last_pulled for r in full])
    exchange_ms = per_update_us * max(len(reports) - 1, 1) // 1000
    need = RoundTiming(max(commit_ms / 1000, floor.commit_s), max(exchange_ms / 1000, floor.exchange_s),
                       max(exchange_ms // AGREE_DIV / 1000, floor.agree_s))  # fmt: skip
    cap = MAX_ROUND_SHARE * round_duration
    if need.total <= cap:
        return AdaptedTiming(need, need, True)
    # what each phase needs above its floor is cut by the same factor, so the total is the cap (or the floors)
    g = max(cap - floor.total, 0.0) / (need.total - floor.total)
    fitted = RoundTiming(*(lo + (hi - lo) * g for lo, hi in ((floor.commit_s, need.commit_s),
                                                             (floor.exchange_s, need.exchange_s),
                                                             (floor.agree_s, need.agree_s))))  # fmt: skip
    return AdaptedTiming(fitted, need, False)


@dataclass(frozen=True)
class PhaseObservation:
    """What one peer saw of its phases in one round (VerifiedAverager.last_phases; benchmarks read it)."""

    round: int
    timing: RoundTiming  # the phases it used
    commit_s: float  # round end -> its commit record stored (or its commit done, if too late to store)
    exchange_s: float  # commit deadline -> it held every part it pulled (or its exchange gave up)
    pulled: int  # other peers' updates it pulled
    late_s: float  # how long after its agree deadline the round returned (0: on time)

    @property
    def exchange_overran(self) -> bool:
        return self.exchange_s > self.timing.exchange_s
