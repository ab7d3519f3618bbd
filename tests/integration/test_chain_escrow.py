"""SwarmEscrow on a real anvil with real Groth16 proofs: the whole life cycle and every revert path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swarm.chain import DevChain, RevertError
from swarm.chain.testing import EscrowWorld

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with DevChain(accounts=6) as c:
        yield c


@pytest.fixture
def world(chain: DevChain) -> Iterator[EscrowWorld]:
    snapshot = chain.rpc("evm_snapshot", [])
    try:
        yield EscrowWorld(chain)
    finally:
        chain.rpc("evm_revert", [snapshot])


def reverts(name: str):
    return pytest.raises(RevertError, match=rf"\b{name}\b")


def test_life_cycle_stake_contribute_finalize_claim(world: EscrowWorld) -> None:
    exp = world.create_experiment(reward_per_round=1_000, pool=5_000)
    a, b, c = world.peers[:3]
    for p in (a, b, c):
        p.stake(100)
    proven = world.prove([world.contribution(a, exp, 0, 0, 11), world.contribution(b, exp, 0, 1, 22),
                          world.contribution(c, exp, 0, 0, 33)], exp)
    for p, contribution in zip((a, b, c), proven, strict=True):
        p.contribute(contribution)
    assert world.funder.round_state(exp, 0).contributions == 3
    world.goto(exp, 0, "after")
    world.funder.finalize(exp, 0)
    state = world.funder.round_state(exp, 0)
    assert state.finalized and state.share == 333  # 1000 // 3; the dust (1) stays in the pool
    assert world.funder.experiment(exp).pool == 5_000 - 999
    before = a.token_balance()
    a.claim(exp, 0, 0)
    assert a.token_balance() == before + 333
    assert a.record(exp, 0, 0, a.address).claimed
    events = world.funder.events("Contributed")
    assert [(e["peer"], e["root"]) for e in events] == [(a.address, 11), (b.address, 22), (c.address, 33)]
    assert world.funder.events("Claimed")[0]["amount"] == 333


def test_contribute_rejects_unstaked_late_early_and_out_of_range(world: EscrowWorld) -> None:
    exp = world.create_experiment(num_rounds=3)
    staked, unstaked = world.peers[:2]
    staked.stake(100)
    ok, no_stake, early, bad_stage, too_big = world.prove([
        world.contribution(staked, exp, 0, 0, 5), world.contribution(unstaked, exp, 0, 0, 5),
        world.contribution(staked, exp, 2, 0, 5), world.contribution(staked, exp, 0, 0, 7, chunk=0),
        world.contribution(staked, exp, 0, 1, 9, norm_sq=10**6),
    ], exp)  # fmt: skip
    with reverts("BelowMinStake"):
        unstaked.contribute(no_stake)
    with reverts("RoundNotOpen"):
        staked.contribute(early)
    with reverts("UnknownStage"):
        staked.transact("contribute", exp, 0, 7, 5, 100, ok.proof.abi_tuple())
    with reverts("UnknownExperiment"):
        staked.transact("contribute", 99, 0, 0, 5, 100, ok.proof.abi_tuple())
    with reverts("RoundOutOfRange"):
        staked.transact("contribute", exp, 3, 0, 5, 100, ok.proof.abi_tuple())
    with reverts("NormAboveBound"):
        staked.transact("contribute", exp, 0, 0, 5, 10**6 + 1, ok.proof.abi_tuple())
    with reverts("InvalidProof"):  # a valid proof, but of a chunk that is not c0
        staked.contribute(bad_stage) if bad_stage.chunk != ok.chunk else pytest.fail("pick another root")
    staked.contribute(too_big)  # normSq == normBound is allowed
    world.goto(exp, 0, "audit")
    with reverts("SubmissionClosed"):
        staked.contribute(ok)


def test_a_proof_cannot_be_replayed_for_another_round_stage_or_sender(world: EscrowWorld) -> None:
    exp = world.create_experiment()
    a, b = world.peers[:2]
    a.stake(100)
    b.stake(100)
    (proof_a,) = world.prove([world.contribution(a, exp, 0, 0, 42)], exp)
    a.contribute(proof_a)
    with reverts("AlreadyContributed"):
        a.contribute(proof_a)
    with reverts("InvalidProof"):  # the same proof for stage 1
        a.transact("contribute", exp, 0, 1, 42, 100, proof_a.proof.abi_tuple())
    world.goto(exp, 1)
    with reverts("InvalidProof"):  # the same proof for round 1
        a.transact("contribute", exp, 1, 0, 42, 100, proof_a.proof.abi_tuple())
    with reverts("InvalidProof"):  # the same proof sent by another peer (context binds msg.sender)
        b.transact("contribute", exp, 1, 0, 42, 100, proof_a.proof.abi_tuple())
    tampered = proof_a.proof.model_copy(update={"c": (proof_a.proof.c[0], proof_a.proof.c[1] ^ 1)})
    with pytest.raises(RevertError):  # not even a curve point: the verifier's pairing call fails
        a.transact("contribute", exp, 1, 0, 42, 100, tampered.abi_tuple())


def test_finalize_and_claim_reject_early_double_and_foreign_calls(world: EscrowWorld) -> None:
    exp = world.create_experiment(pool=10_000)
    a, b = world.peers[:2]
    a.stake(100)
    (ca,) = world.prove([world.contribution(a, exp, 0, 0, 3)], exp)
    a.contribute(ca)
    with reverts("NotFinalizable"):
        b.finalize(exp, 0)
    with reverts("NotFinalized"):
        a.claim(exp, 0, 0)
    world.goto(exp, 0, "after")
    b.finalize(exp, 0)
    with reverts("AlreadyFinalized"):
        b.finalize(exp, 0)
    with reverts("NoContribution"):
        b.claim(exp, 0, 0)
    a.claim(exp, 0, 0)
    with reverts("AlreadyClaimed"):
        a.claim(exp, 0, 0)
    with reverts("RoundOutOfRange"):
        b.finalize(exp, 10)
    # a round with no valid contribution takes nothing from the pool
    world.goto(exp, 1, "after")
    b.finalize(exp, 1)
    assert world.funder.experiment(exp).pool == 10_000 - 1_000


def test_claim_many_pays_several_rounds_in_one_transfer(world: EscrowWorld) -> None:
    exp = world.create_experiment(pool=10_000, reward_per_round=600)
    a = world.peers[0]
    a.stake(100)
    c0, c1 = world.prove([world.contribution(a, exp, 0, 0, 8), world.contribution(a, exp, 1, 1, 9)], exp)
    a.contribute(c0)
    world.goto(exp, 1)
    a.contribute(c1)
    world.goto(exp, 1, "after")
    a.finalize(exp, 0)
    a.finalize(exp, 1)
    before = a.token_balance()
    with reverts("LengthMismatch"):
        a.claim_many(exp, [0, 1], [0])
    a.claim_many(exp, [0, 1], [0, 1])
    assert a.token_balance() == before + 1_200


def test_staking_and_unbonding_rules(world: EscrowWorld) -> None:
    a = world.peers[0]
    with reverts("ZeroAmount"):
        a.stake(0)
    with reverts("BelowMinStake"):
        a.stake(99)
    a.stake(150)
    with reverts("InsufficientStake"):
        a.request_unbond(151)
    with reverts("NothingUnbonding"):
        a.withdraw()
    a.request_unbond(50)
    s = a.stake_of()
    assert (s.active, s.unbonding) == (100, 50)
    with reverts("UnbondingNotReady"):
        a.withdraw()
    world.chain.increase_time(world.timing.unbonding_delay)
    before = a.token_balance()
    a.withdraw()
    assert a.token_balance() == before + 50 and a.stake_of().unbonding == 0


def test_experiment_parameters_are_checked(world: EscrowWorld) -> None:
    with reverts("InvalidExperiment"):  # no stages
        world.funder.transact("createExperiment", (world.verifier, 0, 10, 0, 10, 1, 1, 1, 0, 0, []))
    with reverts("InvalidExperiment"):  # more audits than the bitmaps hold
        world.funder.transact("createExperiment", (world.verifier, 0, 10, 0, 10, 17, 1, 1, 0, 0, [1]))
    with reverts("InvalidExperiment"):  # windows longer than the unbonding delay
        world.funder.transact("createExperiment", (world.verifier, 0, 10_000, 0, 0, 0, 1, 1, 0, 0, [1]))
    with reverts("InvalidExperiment"):  # a verifier that is not a contract
        world.funder.transact("createExperiment", (world.funder.address, 0, 10, 0, 0, 0, 1, 1, 0, 0, [1]))
    exp = world.create_experiment(num_rounds=1)
    with reverts("ZeroAmount"):
        world.funder.fund(exp, 0)
    world.peers[0].fund(exp, 700)  # anyone may fund
    with reverts("NotFunder"):
        world.peers[0].reclaim_pool(exp)
    with reverts("ReclaimTooEarly"):
        world.funder.reclaim_pool(exp)
    world.goto(exp, 0, "after", offset=world.timing.slash_grace)
    before = world.funder.token_balance()
    world.funder.reclaim_pool(exp)
    assert world.funder.token_balance() == before + 700


def test_unanswered_audit_is_slashed_once_with_the_stated_split(world: EscrowWorld) -> None:
    exp = world.create_experiment(pool=10_000, audits=2)
    cheat, honest, auditor = world.peers[:3]
    cheat.stake(300)
    honest.stake(100)
    cheat.request_unbond(100)  # unbonding stake stays slashable
    c_cheat, c_honest = world.prove([world.contribution(cheat, exp, 0, 0, 5), world.contribution(honest, exp, 0, 1, 6)],
                                    exp)
    cheat.contribute(c_cheat)
    honest.contribute(c_honest)
    with reverts("NotInAuditOpening"):
        auditor.open_audit(exp, 0, 0, cheat.address, 0)
    world.goto(exp, 0, "audit")
    with reverts("AuditIndexOutOfRange"):
        auditor.open_audit(exp, 0, 0, cheat.address, 2)
    with reverts("NoContribution"):
        auditor.open_audit(exp, 0, 1, cheat.address, 0)
    auditor.open_audit(exp, 0, 0, cheat.address, 0)
    auditor.open_audit(exp, 0, 1, honest.address, 1)
    with reverts("AuditAlreadyOpen"):
        auditor.open_audit(exp, 0, 0, cheat.address, 0)
    # the honest peer answers with a proof of the audited chunk c_1; a proof of another chunk fails
    j_chunk = honest.audit_chunk(exp, 0, 1, honest.address, 1)
    wrong = (j_chunk + 1) % honest.num_chunks(exp, 1)
    good, bad = world.prove([world.contribution(honest, exp, 0, 1, 6, chunk=j_chunk),
                             world.contribution(honest, exp, 0, 1, 6, chunk=wrong)], exp)
    with reverts("InvalidProof"):
        honest.answer_audit(bad, 1)
    with reverts("AuditNotOpen"):
        honest.answer_audit(good, 0)
    honest.answer_audit(good, 1)
    with reverts("AuditAlreadyAnswered"):
        honest.answer_audit(good, 1)
    with reverts("AuditWindowNotOver"):
        auditor.slash(exp, 0, 0, cheat.address, 0)
    world.goto(exp, 0, "after")
    with reverts("NotInAuditWindow"):
        honest.answer_audit(good, 1)
    with reverts("AuditAlreadyAnswered"):
        auditor.slash(exp, 0, 1, honest.address, 1)
    with reverts("AuditNotOpen"):
        auditor.slash(exp, 0, 0, cheat.address, 1)
    pool_before, auditor_before = world.funder.experiment(exp).pool, auditor.token_balance()
    auditor.slash(exp, 0, 0, cheat.address, 0)
    assert cheat.stake_of().active == 0 and cheat.stake_of().unbonding == 0
    assert auditor.token_balance() == auditor_before + 60  # 20% of 300 to the reporter
    assert world.funder.experiment(exp).pool == pool_before + 240  # the rest back to the pool
    with reverts("AlreadySlashed"):
        auditor.slash(exp, 0, 0, cheat.address, 0)
    # the slashed peer earns nothing: the whole round's reward goes to the honest one
    auditor.finalize(exp, 0)
    assert world.funder.round_state(exp, 0).share == 1_000
    with reverts("PeerSlashed"):
        cheat.claim(exp, 0, 0)
    honest.claim(exp, 0, 1)
    with reverts("NothingUnbonding"):
        cheat.withdraw()  # nothing left to withdraw: unbonding was slashed too
    assert [e["amount"] for e in world.funder.events("Slashed")] == [300]


def test_claim_is_refused_while_an_audit_is_unanswered_and_a_late_slash_returns_the_share(world: EscrowWorld) -> None:
    exp = world.create_experiment(pool=5_000, audits=1)
    a, b = world.peers[:2]
    a.stake(100)
    b.stake(100)
    ca, cb = world.prove([world.contribution(a, exp, 0, 0, 5), world.contribution(b, exp, 0, 0, 6)], exp)
    a.contribute(ca)
    b.contribute(cb)
    world.goto(exp, 0, "audit")
    b.open_audit(exp, 0, 0, a.address, 0)
    world.goto(exp, 0, "after")
    b.finalize(exp, 0)  # finalized before anyone slashed: a's share is set aside
    with reverts("UnansweredAudit"):
        a.claim(exp, 0, 0)
    pool = world.funder.experiment(exp).pool
    b.slash(exp, 0, 0, a.address, 0)
    assert world.funder.experiment(exp).pool == pool + 500 + 80  # a's share back, plus 80% of its stake
