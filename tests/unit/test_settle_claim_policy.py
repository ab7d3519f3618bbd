"""The settler's claim policy (RoundSettler._claim_now): ready rounds wait to share one claimMany, except when
CLAIM_EVERY are ready, the oldest one's record slot is due soon, nothing else is in flight, or collateral is short."""

from __future__ import annotations

from types import SimpleNamespace

from swarm.chain.models import StakeState
from swarm.settlement.settler import CLAIM_ROUNDS, RECORD_RING, OpenRound, RoundSettler

START, ROUND_S, MIN_STAKE = 1_000, 10, 10


class FakeClient:
    def __init__(self, free_contributions: int) -> None:
        self.free = free_contributions * MIN_STAKE

    def read(self, name: str) -> int:
        assert name == "minStake"
        return MIN_STAKE

    def stake_of(self) -> StakeState:
        return StakeState(active=100 * MIN_STAKE, locked=100 * MIN_STAKE - self.free, unbonding=0,
                          unbonding_ready_at=0, batch_experiment=1)  # fmt: skip


def settler(rounds: list[int], free_contributions: int = 10) -> RoundSettler:
    s = RoundSettler.__new__(RoundSettler)  # no prover, no thread: only the policy's state
    s.claim_every, s._min_stake = 4, None
    s.client = FakeClient(free_contributions)
    s._state = SimpleNamespace(round_at=lambda t: max(0, t - START) // ROUND_S)
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
