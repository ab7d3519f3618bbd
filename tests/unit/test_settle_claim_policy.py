"""The settler's claim policy (RoundSettler._claim_now): ready rounds wait to share one claimMany, except when
CLAIM_EVERY are ready, the oldest one's record slot is due soon, nothing else is in flight, or collateral is short."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from swarm.chain.models import StakeState
from swarm.settlement.settler import CLAIM_ROUNDS, FINALIZE_SPREAD_S, RECORD_RING, OpenRound, RoundSettler

START, ROUND_S, MIN_STAKE = 1_000, 10, 10


class FakeClient:
    def __init__(self, free_contributions: int, finalized: bool = False) -> None:
        self.free = free_contributions * MIN_STAKE
        self.finalized, self.sent = finalized, []

    def round_state(self, experiment: int, round: int) -> SimpleNamespace:
        return SimpleNamespace(finalized=self.finalized)

    def finalize(self, experiment: int, round: int) -> None:
        self.sent.append(("finalize", round))

    def read(self, name: str) -> int:
        assert name == "minStake"
        return MIN_STAKE

    def stake_of(self) -> StakeState:
        return StakeState(active=100 * MIN_STAKE, locked=100 * MIN_STAKE - self.free, unbonding=0,
                          unbonding_ready_at=0, batch_experiment=1)  # fmt: skip


def settler(rounds: list[int], free_contributions: int = 10, me: str = "0x" + "11" * 20) -> RoundSettler:
    s = RoundSettler.__new__(RoundSettler)  # no prover, no thread: only the policy's state
    s.claim_every, s._min_stake, s.experiment_id, s._me = 4, None, 1, me
    s.client = FakeClient(free_contributions)
    s._state = SimpleNamespace(round_at=lambda t: max(0, t - START) // ROUND_S, audit_end=lambda r: at_round(r + 2))
    s._finalizable_since = {}
    s.rounds = {(r, 0): OpenRound(round=r, stage=0, commitment=None, contributed=True) for r in rounds}
    return s


def at_round(r: int) -> int:
    return START + r * ROUND_S


def test_few_ready_rounds_wait_while_later_ones_are_in_flight() -> None:
    s = settler(list(range(10)))
    ready = [s.rounds[(r, 0)] for r in range(3)]
    assert not s._claim_now(ready, at_round(12))
    assert s._claim_now([*ready, s.rounds[(3, 0)]], at_round(12))  # CLAIM_EVERY ready: one claimMany


def test_a_round_whose_record_slot_is_due_soon_is_claimed() -> None:
    s = settler([5, 6, 7])
    due = at_round(5 + RECORD_RING - CLAIM_ROUNDS)
    assert not s._claim_now([s.rounds[(5, 0)]], due - ROUND_S)
    assert s._claim_now([s.rounds[(5, 0)]], due)


def test_nothing_in_flight_or_short_collateral_claims_at_once() -> None:
    s = settler([0, 1])
    assert s._claim_now(list(s.rounds.values()), at_round(10))  # training stopped: nothing more is coming
    short = settler([0, 1, 2], free_contributions=1)
    assert short._claim_now([short.rounds[(0, 0)]], at_round(10))


def test_the_peers_of_a_round_finalize_it_one_after_another_and_not_when_it_is_finalized(monkeypatch) -> None:
    """Each peer finalizes a round at audit end + its own delay, and only if nobody has: before, every peer sent
    finalize at once and all but one reverted in the block (gas for nothing)."""
    peers = [settler([0], me="0x" + f"{i:02x}" * 20) for i in range(1, 9)]
    delays = [p.finalize_delay(0) for p in peers]
    assert all(0 <= d < FINALIZE_SPREAD_S for d in delays) and len(set(delays)) > 1  # spread, not all at once
    assert all(p.finalize_delay(0) == d for p, d in zip(peers, delays, strict=True))  # deterministic per peer
    s = peers[0]
    monkeypatch.setattr(s, "_in_flight", lambda *a: False)
    monkeypatch.setattr(s, "_sending", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(s, "_claim_now", lambda ready, now: False)
    clock = [100.0]
    monkeypatch.setattr("swarm.settlement.settler.time.monotonic", lambda: clock[0])
    s._settle_all(at_round(2))  # the audit window is over: its turn comes finalize_delay(0) s later
    assert s.client.sent == [] or s.finalize_delay(0) == 0
    clock[0] += s.finalize_delay(0)
    s._settle_all(at_round(2))
    assert s.client.sent == [("finalize", 0)]
    late = settler([0])
    late.client.finalized = True  # another peer's finalize was mined first
    monkeypatch.setattr(late, "_in_flight", lambda *a: False)
    monkeypatch.setattr(late, "_claim_now", lambda ready, now: False)
    late._settle_all(at_round(3))
    clock[0] += FINALIZE_SPREAD_S  # its turn has come: it reads the round as finalized and sends nothing
    late._settle_all(at_round(3))
    assert late.client.sent == [] and late._finalizable_since == {}
