"""A volunteer's earnings stay right once the escrow's record ring reuses a slot (real anvil, stand-in proofs).

The escrow keeps a peer's records of (experiment, stage) in RECORD_RING = 64 slots: round r + 64 rewrites round r's
slot once that record is closed, and `getRecord(r)` then reads empty. The chain's clock jumps (anvil's
evm_setNextBlockTimestamp through `EscrowWorld.goto`), so 64 rounds take no wall time.
"""

from __future__ import annotations

import pytest

from swarm.apps.earnings import EarningsReader, claim_all
from swarm.chain.testing import EscrowWorld

pytestmark = pytest.mark.integration

RING = 64  # SwarmEscrow.RECORD_RING


def test_a_slashed_record_whose_slot_was_reused_is_not_claimable(world: EscrowWorld) -> None:
    assert world.funder.read("RECORD_RING") == RING
    exp = world.create_experiment(num_rounds=RING + 2, audits=1, reward_per_round=1_000, pool=10_000)
    a, b = world.peers[:2]
    a.stake(400)  # rounds 64 and 65 in flight at the end, 100 burned by the slash
    b.stake(200)
    a0, b0, a1, b1, a64, a65 = world.prove([
        world.contribution(a, exp, 0, 0, 10), world.contribution(b, exp, 0, 0, 20),
        world.contribution(a, exp, 1, 0, 11), world.contribution(b, exp, 1, 0, 21),
        world.contribution(a, exp, RING, 0, 12), world.contribution(a, exp, RING + 1, 0, 13),
    ], exp)  # fmt: skip
    reader = EarningsReader(a, exp, a.address)
    a.contribute(a0)
    b.contribute(b0)
    world.goto(exp, 0, "audit")
    b.open_audit(exp, 0, 0, a.address, 0)  # a never answers: round 0's record is slashed
    world.goto(exp, 1, "train")
    a.contribute(a1)
    b.contribute(b1)
    world.goto(exp, 1, "after")
    world.funder.finalize(exp, 0)
    world.funder.finalize(exp, 1)
    b.slash(exp, 0, 0, a.address, 0)
    a.claim(exp, 1, 0)  # round 1's record: claimed (500)
    e = reader.read()
    assert (e.slashed, e.claimed, e.claimed_rounds, e.claimable, e.claimable_rounds) == (1, 500, 1, 0, [])

    world.goto(exp, RING, "train")
    a.contribute(a64)  # rewrites round 0's slot (slashed, so closed)
    world.goto(exp, RING + 1, "train")
    a.contribute(a65)  # rewrites round 1's slot (claimed)
    assert not a.record(exp, 0, 0, a.address).exists and not a.record(exp, 1, 0, a.address).exists
    assert world.funder.round_state(exp, 0).finalized  # round 0 paid b 1,000; nothing of it is a's
    for fresh in (False, True):  # the same reader and one that starts after the reuse
        e = (EarningsReader(a, exp, a.address) if fresh else reader).read()
        assert (e.slashed, e.claimed, e.claimed_rounds) == (1, 500, 1), e
        assert (e.claimable, e.claimable_rounds, e.waiting, e.contributions) == (0, [], 2, 4), e
    world.goto(exp, RING + 1, "after")
    outcome = claim_all(a, exp)  # finalizes 64 and 65 and claims exactly them; round 0 is never tried
    assert sorted(outcome.rounds) == [(RING, 0), (RING + 1, 0)] and outcome.claimed == 2_000
    e = outcome.earnings
    assert (e.slashed, e.claimed, e.claimed_rounds, e.claimable) == (1, 2_500, 3, 0)
