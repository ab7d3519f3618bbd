"""The record ring on a real anvil (escrow, stand-in proofs by real zokrates-js): a peer's record of round r lives
in slot r % 64, so round r + 64's `contribute` reverts RecordSlotBusy while round r is neither claimed nor slashed.
A settler that meets it (here round 0 was contributed outside it and forgotten) finalizes and claims round 0
first, then contributes round 64."""

from __future__ import annotations

from pathlib import Path

import pytest
from settle_support import Recorder, report

from swarm.chain.errors import RevertError
from swarm.chain.testing import EscrowWorld, StandInProver
from swarm.settlement.settler import RECORD_RING, RoundSettler

pytestmark = pytest.mark.integration


def test_a_busy_record_slot_gets_its_old_round_claimed_then_the_contribution(world: EscrowWorld,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    me = world.peers[0]
    x = world.create_experiment(num_rounds=RECORD_RING + 2, pool=10_000, reward_per_round=1_000)
    me.stake(300)
    world.goto(x, 1)
    (old,) = world.prove([world.contribution(me, x, 0, 0, 501)], x)
    me.contribute(old)  # round 0, never claimed
    world.goto(x, RECORD_RING + 1)  # round 64 is over, round 0's audit window long gone
    (new,) = world.prove([world.contribution(me, x, RECORD_RING, 0, 502)], x)
    with pytest.raises(RevertError, match="RecordSlotBusy"):  # what the settler will meet
        me.contribute(new)
    before = me.token_balance()
    events = Recorder()
    with RoundSettler(me, x, prover=StandInProver(), on_event=events, poll_s=0.2, data_dir=tmp_path) as settler:
        settler(report(RECORD_RING, 502))
        claimed = events.wait(lambda e: e.kind == "claimed" and e.round == 0, "round 0 claimed", 60)
        events.wait(lambda e: e.kind == "contributed" and e.round == RECORD_RING, "round 64 contributed", 60)
    assert int(claimed.detail["amount"]) == 1_000
    assert me.token_balance() == before + 1_000
    assert me.record(x, RECORD_RING, 0, me.address).exists
    assert not me.record(x, 0, 0, me.address).exists  # the slot holds round 64 now: round 0 reads as none
