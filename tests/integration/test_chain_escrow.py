"""SwarmEscrow on a real anvil with real Groth16 proofs: the whole life cycle and every revert path."""

from __future__ import annotations

import pytest

from swarm.chain import RevertError
from swarm.chain.testing import EscrowWorld

pytestmark = pytest.mark.integration


FIELDS = ["verifier", "start", "round", "submit", "audit", "k", "rounds", "chunk", "reward", "bound", "minlog", "stages",
          "cert"]


def _with(params: tuple, change: dict) -> tuple:
    out = list(params)
    for k, value in change.items():
        out[FIELDS.index(k)] = value
    return tuple(out)


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
    staked.stake(200)  # two contributions below: minStake (100) of collateral each
    ok, no_stake, early, bad_stage, too_big = world.prove([
        world.contribution(staked, exp, 0, 0, 5), world.contribution(unstaked, exp, 0, 0, 5),
        world.contribution(staked, exp, 2, 0, 5), world.contribution(staked, exp, 0, 0, 7, chunk=0),
        world.contribution(staked, exp, 0, 1, 9, norm_sq=10**6),
    ], exp)  # fmt: skip
    with reverts("CollateralUnavailable"):
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
    a.stake(500)  # collateral for several contributions: each replay below fails on the proof, not the stake
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
    a.stake(200)
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
    assert a.stake_of().locked == 200
    a.claim_many(exp, [0, 1], [0, 1])
    assert a.token_balance() == before + 1_200
    assert a.stake_of().locked == 0  # the claim ends both contributions' liability


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
    # stand-in shape pinned by the world: CHUNK 1000, DEPTH 8, 1 s per proof; floors: submit >= 10 + 1 and
    # audit - audit // 2 >= 10 + k * 1
    good = (world.verifier, 0, 10, 11, 22, 1, 1, 1_000, 0, 10, 0, [1], False)
    world.funder.transact("createExperiment", good)  # every window exactly at its floor
    world.funder.transact("createExperiment", _with(good, {"audit": 26, "k": 3, "stages": [256_000]}))
    cases = [
        ("stages", {"stages": []}),
        ("auditsPerPeer", {"k": 9}),  # more sampled audits than bits 0..7
        ("auditsPerPeer", {"k": 0}),  # no audits: c0 alone can be ground
        ("verifier not allowed", {"verifier": world.funder.address}),  # not a contract
        ("verifier not allowed", {"verifier": world.token}),  # a contract, but not a pinned verifier
        ("chunkSize is not the verifier's CHUNK", {"chunk": 500}),
        (r"stageParams: more chunks than 2\*\*DEPTH", {"stages": [256_001]}),  # 257 chunks > 2**8
        ("submitWindow too short", {"submit": 10}),
        ("auditWindow too short", {"audit": 20}),  # 10 s left to answer after the last opening, 11 needed
        ("auditWindow too short", {"audit": 24, "k": 3}),  # 12 s left, 13 needed
        ("minNormLog2", {"minlog": 4}),  # 2**4 > normBound 10
        ("numRounds", {"rounds": 2**40 + 1}),  # a record keeps its round in 40 bits
    ]
    for field, change in cases:
        with pytest.raises(RevertError, match=rf"InvalidExperiment\(field={field}"):
            world.funder.transact("createExperiment", _with(good, change))
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
    cheat.request_unbond(100)  # free stake may unbond; only the locked collateral is slashable
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
    honest_before = honest.token_balance()
    honest.answer_audit(good, 1)
    assert honest.token_balance() == honest_before + world.audit_bond  # a wrong accusation pays the accused
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
    burn = world.funder.read("BURN_ADDRESS")
    burned_before = world.funder.token_balance(burn)
    world.funder.slash(exp, 0, 0, cheat.address, 0)  # anyone may call it; the opener is paid
    s = cheat.stake_of()
    assert (s.active, s.locked, s.unbonding) == (100, 0, 100)  # only the contribution's collateral (100) is taken
    assert auditor.token_balance() == auditor_before + 20 + world.audit_bond  # 20% of 100, and its bond back
    assert world.funder.token_balance(burn) == burned_before + 80  # the rest is burned
    assert world.funder.experiment(exp).pool == pool_before  # no pool (no funder) receives a slash
    assert world.funder.audit(exp, 0, 0, cheat.address, 0).settled
    with reverts("AlreadySlashed"):
        auditor.slash(exp, 0, 0, cheat.address, 0)
    # the slashed peer earns nothing: the whole round's reward goes to the honest one
    auditor.finalize(exp, 0)
    assert world.funder.round_state(exp, 0).share == 1_000
    with reverts("PeerSlashed"):
        cheat.claim(exp, 0, 0)
    honest.claim(exp, 0, 1)
    assert [(e["amount"], e["reporter"]) for e in world.funder.events("Slashed")] == [(100, auditor.address)]


def test_an_unanswered_record_gets_no_share_whether_finalize_comes_before_or_after_the_slash(
    world: EscrowWorld,
) -> None:
    exp = world.create_experiment(pool=5_000, audits=1)
    a, b = world.peers[:2]
    a.stake(100)
    b.stake(100)
    ca, cb = world.prove([world.contribution(a, exp, 0, 0, 5), world.contribution(b, exp, 0, 0, 6)], exp)
    a.contribute(ca)
    b.contribute(cb)
    world.goto(exp, 0, "audit")
    b.open_audit(exp, 0, 0, a.address, 0)
    assert world.funder.round_state(exp, 0).unanswered == 1
    world.goto(exp, 0, "after")
    b.finalize(exp, 0)  # finalized before anyone slashed: the caught record does not dilute the honest share
    assert world.funder.round_state(exp, 0).share == 1_000
    assert world.funder.experiment(exp).pool == 4_000
    with reverts("UnansweredAudit"):
        a.claim(exp, 0, 0)
    b.slash(exp, 0, 0, a.address, 0)
    assert world.funder.experiment(exp).pool == 4_000  # nothing of a's went to the pool
    before = b.token_balance()
    b.claim(exp, 0, 0)
    assert b.token_balance() == before + 1_000


def test_stake_outlives_its_liability_whatever_the_unbonding_delay(world: EscrowWorld) -> None:
    """Liability outlasting the unbonding delay: an experiment whose audit window (2,000 s) is twice the escrow's
    unbonding delay (1,000 s). A peer that contributes and at once unbonds everything gets back only its free
    stake after the delay; the contribution's collateral stays locked (not unbondable) until its audit is over,
    and is slashed from there when the audit goes unanswered. So no check of the delay against the windows is
    needed at experiment creation: liability is backed by locked stake, which cannot unbond, not by the delay."""
    from swarm.chain.testing import Timing

    long = Timing(submit_window=50, audit_window=2 * world.timing.unbonding_delay)
    exp = world.create_experiment(pool=10_000, audits=1, timing=long)
    peer, auditor = world.peers[:2]
    peer.stake(300)
    (c,) = world.prove([world.contribution(peer, exp, 0, 0, 5)], exp)
    peer.contribute(c)
    with reverts("InsufficientStake"):  # 100 of the 300 is locked
        peer.request_unbond(300)
    peer.request_unbond(200)
    world.goto(exp, 0, "audit")
    auditor.open_audit(exp, 0, 0, peer.address, 0)
    world.chain.increase_time(world.timing.unbonding_delay + 1)
    peer.withdraw()  # the free stake leaves after the delay ...
    s = peer.stake_of()
    assert (s.active, s.locked, s.unbonding) == (100, 100, 0)  # ... the liable collateral does not
    with reverts("InsufficientStake"):
        peer.request_unbond(100)
    with reverts("AuditWindowNotOver"):  # the delay is over, the liability is not
        auditor.slash(exp, 0, 0, peer.address, 0)
    world.goto(exp, 0, "after")
    auditor.slash(exp, 0, 0, peer.address, 0)
    s = peer.stake_of()
    assert (s.active, s.locked) == (0, 0)
