"""The adaptive phase-timing rule (swarm.rounds.clock.adapt_timing): deterministic, bounded, and it converges."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from swarm.rounds.clock import MAX_ROUND_SHARE, RoundTiming, adapt_timing
from swarm.rounds.parts import CommitRecord

FALLBACK = RoundTiming(commit_s=2.5, exchange_s=3.5, agree_s=1.5)
FLOOR = RoundTiming(commit_s=1.0, exchange_s=1.0, agree_s=0.5)


@dataclass(frozen=True)
class Report:
    last_commit_ms: int
    last_exchange_ms: int
    last_pulled: int


def adapt(reports, round_duration=60.0, floor=FLOOR):
    return adapt_timing(reports, fallback=FALLBACK, floor=floor, round_duration=round_duration)


def test_no_or_too_few_reports_fall_back_to_the_configured_timing():
    assert adapt([]).timing == FALLBACK and adapt([]).need is None
    fresh = [Report(0, 0, 0)] * 3  # the group's first round: nobody has figures yet
    assert adapt(fresh).timing == FALLBACK
    half = [Report(2000, 3000, 2), Report(2100, 3100, 2), Report(0, 0, 0), Report(0, 0, 0)]
    assert adapt(half).timing == FALLBACK  # a majority must report, or a minority would set the deadlines


def test_the_phases_follow_the_median_need_of_the_kept_peers():
    reports = [Report(2000, 4000, 2), Report(2200, 4400, 2), Report(2400, 3600, 2)]
    got = adapt(reports)
    # commit: median 2200, MAD 200 -> max(2750, 2800) ms; exchange per update: median 2000 ms, MAD 200 ->
    # max(2500, 2600) x (3 - 1) updates; agree: a quarter of the exchange
    assert got.fits and got.need == got.timing
    assert got.timing == RoundTiming(commit_s=2.8, exchange_s=5.2, agree_s=1.3)


def test_the_rule_is_deterministic_in_any_order_and_from_signed_records():
    rng = random.Random(7)
    reports = [Report(rng.randint(100, 5000), rng.randint(100, 20000), rng.randint(1, 31)) for _ in range(32)]
    first = adapt(reports).timing
    for _ in range(20):
        rng.shuffle(reports)
        assert adapt(reports).timing == first
    records = [CommitRecord(peer_id=f"p{i}", round=1, stage=0, root=1, norm_sq=1, numel=10, num_chunks=1,
                            part_key=bytes(32), anchor_round=0, anchor_digest=bytes(32), last_commit_ms=r.last_commit_ms,
                            last_exchange_ms=r.last_exchange_ms, last_pulled=r.last_pulled)
               for i, r in enumerate(reports)]  # fmt: skip
    wire = [CommitRecord.from_wire(r.to_wire()) for r in records]  # what every peer reads from the DHT
    assert adapt(wire).timing == first


def test_the_exchange_grows_with_the_group():
    small = adapt([Report(500, 1000, 1)] * 2).timing  # 1 s per pulled update, 2 peers
    big = adapt([Report(500, 1000 * 15, 15)] * 16).timing  # the same per update, 16 peers
    assert small.exchange_s == pytest.approx(1.25) and big.exchange_s == pytest.approx(1.25 * 15)


def test_phases_never_go_below_the_floor_and_a_fast_group_gets_shorter_rounds():
    fast = adapt([Report(50, 60, 2)] * 3).timing
    assert fast == FLOOR and fast.total < FALLBACK.total
    only_grow = adapt([Report(50, 60, 2)] * 3, floor=FALLBACK).timing  # the default floor: the configured timing
    assert only_grow == FALLBACK


def test_a_group_that_needs_more_than_the_round_is_cut_to_fit_and_says_so():
    slow = [Report(5000, 40_000, 31)] * 32  # 32 peers that each needed 40 s to pull 31 updates
    got = adapt(slow, round_duration=30.0)
    assert not got.fits and got.need is not None and got.need.total > MAX_ROUND_SHARE * 30.0
    assert got.timing.total == pytest.approx(MAX_ROUND_SHARE * 30.0)
    above = [(t - lo) / (n - lo) for t, n, lo in zip((got.timing.commit_s, got.timing.exchange_s, got.timing.agree_s),
                                                      (got.need.commit_s, got.need.exchange_s, got.need.agree_s),
                                                      (FLOOR.commit_s, FLOOR.exchange_s, FLOOR.agree_s))]  # fmt: skip
    assert above == pytest.approx([above[0]] * 3) and 0 < above[0] < 1  # one factor cuts what is above the floor
    with pytest.raises(ValueError, match="round_duration"):
        adapt(slow, round_duration=0.0)


def test_a_minority_of_liars_cannot_stretch_or_squeeze_the_phases():
    honest = [Report(2000, 4000, 2), Report(2200, 4400, 2), Report(2400, 3600, 2)]
    base = adapt(honest + [Report(2200, 4000, 2)] * 2).timing
    stretched = adapt(honest + [Report(2**32 - 1, 2**32 - 1, 1)] * 2).timing
    squeezed = adapt(honest + [Report(1, 1, 2**16 - 1)] * 2).timing
    for t in (stretched, squeezed):  # within the honest reports' range, far from the liars'
        assert 0.5 * base.total < t.total < 2 * base.total


def test_an_overrunning_exchange_converges_within_a_few_rounds():
    """The group needs 13.5 s to pull 31 updates; the fixed table gave 6.8 s. A peer that gives up at the agree
    deadline reports the time it had, so the exchange grows by at least 1.25x a round until it covers the need."""
    need_s, timing = 13.5, RoundTiming(commit_s=3.6, exchange_s=6.8, agree_s=2.6)
    for rnd in range(8):
        seen = min(need_s, timing.exchange_s + timing.agree_s)  # it gave up at its agree deadline
        reports = [Report(1500, int(seen * 1000), 31)] * 32
        timing = adapt(reports, round_duration=60.0).timing
        if timing.exchange_s >= need_s:
            break
    assert timing.exchange_s >= need_s and rnd <= 3
    assert adapt([Report(1500, int(need_s * 1000), 31)] * 32).timing == timing  # and stays there


def test_round_timing_refuses_non_positive_phases():
    with pytest.raises(ValueError, match="exchange_s"):
        RoundTiming(commit_s=1.0, exchange_s=0.0, agree_s=1.0)
    with pytest.raises(ValueError, match="commit_s"):
        RoundTiming(commit_s=float("nan"), exchange_s=1.0, agree_s=1.0)


def _record(i: int, commit_ms: int, exchange_ms: int, pulled: int, anchor: bytes = bytes(32)) -> CommitRecord:
    return CommitRecord(peer_id=f"p{i}", round=4, stage=0, root=1, norm_sq=1, numel=10, num_chunks=1,
                        part_key=bytes(32), anchor_round=3, anchor_digest=anchor, last_commit_ms=commit_ms,
                        last_exchange_ms=exchange_ms, last_pulled=pulled)  # fmt: skip


def test_an_averager_uses_the_previous_rounds_kept_records_and_warns_when_the_round_is_too_short(caplog):
    import torch

    from swarm.rounds.clock import RoundClock
    from swarm.rounds.verified import VerifiedAverager

    module = torch.nn.Linear(4, 2)
    av = VerifiedAverager(None, "exp", 0, module, clock=RoundClock(0.0, 20.0), timing=FALLBACK, adaptive=True,
                          timing_floor=FLOOR, start=False)  # fmt: skip
    on_dht: dict[int, dict] = {}
    av._read_records = lambda r, wait_s: on_dht.get(r, {})  # the DHT's records of round r
    assert av.round_timing(5) == FALLBACK  # nothing kept, nothing on the DHT
    av._kept_records = (4, [_record(i, 800, 1500, 3) for i in range(4)])
    assert av.round_timing(5) == adapt([Report(800, 1500, 3)] * 4, round_duration=20.0).timing != FALLBACK
    assert av.round_timing(6) == FALLBACK  # it missed round 5 and reads nothing of it: the configured timing
    camp = [_record(i, 900, 2000, 3) for i in range(3)]
    on_dht[5] = {r.peer_id: r for r in [*camp, _record(9, 50, 50, 3, anchor=b"\1" * 32)]}  # one peer elsewhere
    assert av.round_timing(6) == adapt([Report(900, 2000, 3)] * 3, round_duration=20.0).timing  # the camp's
    av._kept_records = (4, [_record(i, 3000, 60_000, 31) for i in range(32)])
    with caplog.at_level("WARNING", logger="swarm.rounds.verified"):
        got = av.round_timing(5)
    assert got.total == pytest.approx(MAX_ROUND_SHARE * 20.0)
    assert "lengthen the round duration" in caplog.text and "at least" in caplog.text
    fixed = VerifiedAverager(None, "exp", 0, module, clock=RoundClock(0.0, 20.0), timing=FALLBACK, start=False)
    fixed._kept_records = av._kept_records
    assert not fixed.adaptive and fixed.round_timing(5) == FALLBACK  # an explicit timing stays fixed by default
    default = VerifiedAverager(None, "exp", 0, module, clock=RoundClock(0.0, 20.0), start=False)
    default._kept_records = (4, [_record(i, 100, 200, 3) for i in range(4)])
    assert default.adaptive and default.round_timing(5) == RoundTiming.for_duration(20.0)  # floor: only grows
