"""contributeBatch on a real anvil with real Groth16 proofs (zokrates-js stand-in proofs, and the real chunk
circuit's for the batch verifier itself): any peer submits other peers' contributions of a round in one
transaction; the records, collateral and rewards are the named peers'; a bad proof never gets paid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_abi import encode
from eth_utils import keccak

from protocol.contribution import Contribution
from protocol.sampling import contribute_chunk
from swarm.chain import DevChain, RevertError
from swarm.chain.client import ChainClient, batch_words
from swarm.chain.testing import EscrowWorld

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BATCH = "BatchStandInChunkVerifier"
FEE = 7


@pytest.fixture
def bworld(chain: DevChain) -> Iterator[EscrowWorld]:
    """A world whose experiments use the batch stand-in verifier, with a batch fee of FEE per entry."""
    snapshot = chain.rpc("evm_snapshot", [])
    try:
        yield EscrowWorld(chain, verifier_contract=BATCH, batch_fee=FEE)
    finally:
        chain.rpc("evm_revert", [snapshot])


def reverts(name: str):
    return pytest.raises(RevertError, match=rf"\b{name}\b")


def accumulator(contributions: list[Contribution]) -> bytes:
    """The round accumulator after these contributions, in order (SwarmEscrow: keccak(acc, peer, stage, root))."""
    acc = bytes(32)
    for c in contributions:
        acc = keccak(encode(["bytes32", "address", "uint256", "uint256"], [acc, c.peer, c.stage, c.root]))
    return acc


def allow(exp: int, *peers: ChainClient) -> None:
    for p in peers:
        p.allow_batches(exp)


def proven(world: EscrowWorld, exp: int, pairs: list[tuple[ChainClient, int]], round: int = 0,
           root0: int = 1_000) -> list[Contribution]:  # fmt: skip
    return world.prove([world.contribution(p, exp, round, s, root0 + i) for i, (p, s) in enumerate(pairs)], exp)


@pytest.mark.parametrize("size", [1, 2, 50])
def test_a_batch_records_each_contribution_for_its_peer(bworld: EscrowWorld, size: int) -> None:
    w = bworld
    stages = 10  # 5 peers x 10 stages: 50 distinct (peer, stage) records in one round
    exp = w.create_experiment(stage_params=(5_000,) * stages, reward_per_round=1_000, pool=10_000)
    for p in w.peers:
        p.stake(100 * stages)
    allow(exp, *w.peers)
    pairs = [(w.peers[i % 5], i // 5) for i in range(size)]
    batch = proven(w, exp, pairs)
    submitter = w.funder  # not a contributor: it only pays the gas and earns the fee
    before = submitter.token_balance()
    result = submitter.contribute_batch(batch)
    assert result.receipt["status"] == 1 and result.included == batch and not result.skipped and not result.left_out
    assert result.fee == FEE * size and submitter.token_balance() == before + FEE * size
    state = w.funder.round_state(exp, 0)
    assert state.contributions == size
    assert state.accumulator == accumulator(batch)  # the same seed input as one contribute per peer
    for c in batch:
        assert w.funder.record(exp, 0, c.stage, c.peer).exists
    for p in w.peers:
        assert p.stake_of().locked == 100 * sum(1 for q, _ in pairs if q is p)
    assert [(e["peer"].lower(), e["stage"]) for e in w.funder.events("Contributed")] == [
        (c.peer, c.stage) for c in batch]  # fmt: skip
    assert not submitter.record(exp, 0, 0, submitter.address).exists
    w.goto(exp, 0, "after")
    w.funder.finalize(exp, 0)
    share = w.funder.round_state(exp, 0).share
    assert share == 1_000 // size
    p, stage = pairs[0]
    paid = p.token_balance()
    p.claim(exp, 0, stage)
    assert p.token_balance() == paid + share


def test_a_bad_proof_fails_the_whole_batch_and_the_precheck_leaves_it_out(bworld: EscrowWorld) -> None:
    w = bworld
    exp = w.create_experiment(reward_per_round=1_000, pool=10_000)
    a, b, c, d = w.peers[:4]
    for p in (a, b, c, d):
        p.stake(100)
    allow(exp, a, b, c, d)
    good = proven(w, exp, [(a, 0), (b, 0), (c, 1), (d, 1)])
    # d's proof for another norm: a valid proof, of another statement (normSq is a public input; the root, and
    # so c0, stay those the proof was made for)
    bad = good[3].model_copy(update={"norm_sq": good[3].norm_sq + 1})
    batch = [*good[:3], bad]
    submitter = w.peers[4]
    with reverts("InvalidProof"):
        submitter.contribute_batch(batch, precheck=False)
    assert w.funder.round_state(exp, 0).contributions == 0 and d.stake_of().locked == 0
    result = submitter.contribute_batch(batch)  # the free eth_call precheck drops it
    assert result.included == good[:3] and result.left_out == [(bad, "invalid proof")]
    assert not w.funder.record(exp, 0, 1, d.address).exists and d.stake_of().locked == 0
    w.goto(exp, 0, "after")
    w.funder.finalize(exp, 0)
    assert w.funder.round_state(exp, 0).share == 333  # 3 valid contributions share the round: d gets nothing
    with reverts("NoContribution"):
        d.claim(exp, 0, 1)


def test_a_submitter_cannot_redirect_a_reward(bworld: EscrowWorld) -> None:
    w = bworld
    exp = w.create_experiment(reward_per_round=1_000, pool=10_000)
    victim, thief = w.peers[:2]
    for p in (victim, thief):
        p.stake(100)
    allow(exp, victim, thief)  # the thief allows batches too: its entry fails on the proof, not on consent
    (honest,) = proven(w, exp, [(victim, 0)])
    stolen = honest.model_copy(update={"peer": thief.address.lower()})  # the victim's proof, the thief's name
    with reverts("InvalidProof"):  # the proof's context binds the victim's address (and c0 depends on it)
        thief.contribute_batch([stolen], precheck=False)
    result = thief.contribute_batch([honest])  # submitting it honestly pays the fee, not the reward
    assert result.included == [honest] and result.fee == FEE
    assert not w.funder.record(exp, 0, 0, thief.address).exists and thief.stake_of().locked == 0
    assert victim.stake_of().locked == 100
    w.goto(exp, 0, "after")
    w.funder.finalize(exp, 0)
    with reverts("NoContribution"):
        thief.claim(exp, 0, 0)
    before = victim.token_balance()
    victim.claim(exp, 0, 0)
    assert victim.token_balance() == before + 1_000


def test_entries_a_peer_made_unpayable_are_skipped_not_fatal(bworld: EscrowWorld) -> None:
    """A peer cannot make someone else's batch revert: an entry already recorded (it sent its own first) or
    without free collateral (it unbonded) is skipped; the others are recorded; no fee for the submitter's own."""
    w = bworld
    exp = w.create_experiment(reward_per_round=1_000, pool=10_000)
    a, b, c, submitter = w.peers[:4]
    for p in (a, b, c, submitter):
        p.stake(100)
    allow(exp, a, b, c, submitter)
    ca, cb, cc, cs = proven(w, exp, [(a, 0), (b, 0), (c, 0), (submitter, 1)])
    a.contribute(ca)  # a front-runs the batch with its own contribute
    b.request_unbond(100)  # b's collateral leaves before the batch lands
    result = submitter.contribute_batch([ca, cb, cc, cs], precheck=False)
    assert result.included == [cc, cs]
    assert sorted(r for _, r in result.skipped) == ["collateral", "duplicate"]
    assert result.fee == FEE  # c's entry only: the submitter's own earns no fee
    assert w.funder.round_state(exp, 0).contributions == 3
    assert (a.stake_of().locked, b.stake_of().locked, c.stake_of().locked) == (100, 0, 100)
    assert [e["reason"] for e in w.funder.events("ContributionSkipped")] == [1, 2]


def test_a_verifier_without_verify_batch_checks_each_proof(world: EscrowWorld) -> None:
    """The default world's experiments use ZoKrates' stand-in verifier (no verifyBatch): contributeBatch
    checks each proof with verifyTx, same rules."""
    exp = world.create_experiment(reward_per_round=1_000, pool=10_000)
    a, b = world.peers[:2]
    for p in (a, b):
        p.stake(100)
    allow(exp, a, b)
    ca, cb = proven(world, exp, [(a, 0), (b, 1)])
    with reverts("InvalidProof"):
        world.funder.contribute_batch([ca, cb.model_copy(update={"norm_sq": cb.norm_sq + 1})], precheck=False)
    assert world.funder.contribute_batch([ca, cb]).included == [ca, cb]
    assert world.funder.round_state(exp, 0).contributions == 2


def test_a_record_slot_is_reused_after_the_ring_only_once_closed(bworld: EscrowWorld) -> None:
    w = bworld
    ring = w.funder.read("RECORD_RING")
    exp = w.create_experiment(reward_per_round=1_000, pool=10_000, num_rounds=2 * ring + 1)
    a, b = w.peers[:2]
    for p in (a, b):
        p.stake(200)
    allow(exp, a, b)
    (a0,) = proven(w, exp, [(a, 0)])
    (a64, b64) = proven(w, exp, [(a, 0), (b, 0)], round=ring, root0=5_000)
    (a128,) = proven(w, exp, [(a, 0)], round=2 * ring, root0=9_000)
    a.contribute(a0)
    w.goto(exp, ring, "train")
    with reverts("RecordSlotBusy"):  # round 0's record is not claimed: its slot is not free
        a.contribute(a64)
    result = w.funder.contribute_batch([a64, b64], precheck=False)
    assert result.included == [b64] and result.skipped == [(a64, "slot busy")]
    w.funder.finalize(exp, 0)
    a.claim(exp, 0, 0)
    receipt = a.contribute(a64)  # the claimed record's slot is rewritten
    assert a.record(exp, ring, 0, a.address).exists and not a.record(exp, 0, 0, a.address).exists
    assert a.record(exp, ring, 0, a.address).round == ring
    with reverts("AlreadyContributed"):
        a.contribute(a64)
    with reverts("NoContribution"):  # round 0's record is gone from the ring: nothing to claim twice
        a.claim(exp, 0, 0)
    assert receipt["gasUsed"] < 300_000
    w.goto(exp, 2 * ring, "train")
    with reverts("RecordSlotBusy"):
        a.contribute(a128)


def test_contribute_batch_refuses_what_the_submitter_can_check(bworld: EscrowWorld) -> None:
    w = bworld
    exp = w.create_experiment(num_rounds=2)
    a = w.peers[0]
    a.stake(100)
    (ca,) = proven(w, exp, [(a, 0)])
    with pytest.raises(Exception, match="empty batch"):
        w.funder.contribute_batch([])
    with reverts("EmptyBatch"):
        w.funder.transact("contributeBatch", exp, 0, [])
    late = ca.model_copy(update={"round": 1})
    with pytest.raises(Exception, match="one experiment and round"):
        w.funder.contribute_batch([ca, late])
    with reverts("UnknownStage"):
        w.funder.contribute_batch([ca.model_copy(update={"stage": 5})], precheck=False)
    with reverts("NormAboveBound"):
        w.funder.contribute_batch([ca.model_copy(update={"norm_sq": 10**7})], precheck=False)
    w.goto(exp, 1, "audit")
    with reverts("SubmissionClosed"):
        w.funder.contribute_batch([ca], precheck=False)


def test_the_precheck_leaves_out_a_proof_of_another_chunk_and_an_unknown_stage(bworld: EscrowWorld) -> None:
    """A valid proof of a chunk other than the c0 the contract derives, or an entry of a stage the experiment
    lacks, would revert the whole batch: the precheck leaves them out and the rest goes through."""
    w = bworld
    exp = w.create_experiment(reward_per_round=1_000, pool=10_000)
    a, b, c = w.peers[:3]
    for p in (a, b, c):
        p.stake(100)
    allow(exp, a, b, c)
    good = proven(w, exp, [(a, 0), (b, 1)])
    n = c.num_chunks(exp, 0)
    assert n > 1
    c0 = contribute_chunk(2_000, c.address, n)
    (other,) = w.prove([w.contribution(c, exp, 0, 0, 2_000, chunk=(c0 + 1) % n)], exp)
    unknown = good[0].model_copy(update={"stage": w.funder.experiment(exp).num_stages})
    submitter = w.peers[4]
    with reverts("InvalidProof"):
        submitter.contribute_batch([*good, other], precheck=False)
    with reverts("UnknownStage"):
        submitter.contribute_batch([*good, unknown], precheck=False)
    result = submitter.contribute_batch([*good, other, unknown])
    assert result.included == good and result.left_out == [(other, "not chunk c0"), (unknown, "unknown stage")]
    assert not w.funder.record(exp, 0, 0, c.address).exists and c.stake_of().locked == 0
    assert w.funder.round_state(exp, 0).contributions == 2


@pytest.mark.timeout(900)
def test_a_batch_of_real_proofs_of_our_circuit(chain: DevChain) -> None:
    """zk's chunk circuit (CHUNK 1024, DEPTH 20, the committed development keys) proven by zokrates-js, two peers'
    contributions recorded by a third party's contributeBatch through BatchChunkVerifier; a changed input fails."""
    import torch

    from protocol.sampling import contribute_chunk
    from swarm.chain.deploy import DemoConfig, deploy_demo
    from swarm.chain.wallet import Wallet
    from zk.chunk_prover import ChunkProver
    from zk.circuit import DEFAULT_PARAMS
    from zk.commit import commit_update
    from zk.prover import ZkWorker
    from zk.quantize import quantize_update

    snapshot = chain.rpc("evm_snapshot", [])
    try:
        cfg = DemoConfig(stage_params=(3_000,), verifier="BatchChunkVerifier", round_duration=3_600)
        dep = deploy_demo(chain, cfg, stakers=[1, 2])
        submitter = ChainClient(chain.rpc_url, Wallet(chain.accounts[3].private_key), escrow=dep.escrow)
        allow(dep.experiment_id, *(ChainClient(chain.rpc_url, Wallet(chain.accounts[i].private_key),
                                               escrow=dep.escrow) for i in (1, 2)))  # fmt: skip
        assert submitter.registered_shape(dep.verifier).batch
        norm_bound = submitter.experiment(dep.experiment_id).norm_bound
        batch = []
        with ZkWorker(timeout=600) as worker:
            prover = ChunkProver(worker, DEFAULT_PARAMS)
            for i, peer in enumerate(dep.peers):
                torch.manual_seed(i)
                commitment = commit_update(quantize_update(torch.randn(3_000) * 0.01), DEFAULT_PARAMS)
                c0 = contribute_chunk(commitment.root, peer, commitment.num_chunks)
                batch.append(prover.prove(commitment, experiment=dep.experiment_id, round=0, stage=0,
                                          peer=peer.lower(), chunk=c0, norm_bound=norm_bound))  # fmt: skip
        verifier = submitter.contract("BatchChunkVerifier", dep.verifier)
        words = batch_words(batch, norm_bound)
        assert verifier.functions.verifyBatch(words).call() is True
        for k in range(2 * 12):  # any changed word of either proof or its public inputs fails the batch
            if k % 12 in (0, 2, 6, 8, 9, 10):  # A.x, B.x.c0, C.x, context, root, normSq
                changed = list(words)
                changed[k] += 1
                try:
                    ok = verifier.functions.verifyBatch(changed).call()
                except Exception:  # noqa: BLE001 - a point moved off its curve: the precompile reverts
                    ok = False
                assert ok is False, k
        result = submitter.contribute_batch(batch)
        assert len(result.included) == 2 and not result.left_out
        for peer in dep.peers:
            assert submitter.record(dep.experiment_id, 0, 0, peer).exists
            assert submitter.stake_of(peer).locked == cfg.min_stake
    finally:
        chain.rpc("evm_revert", [snapshot])


def test_a_gossiped_proof_is_bound_to_its_experiment_escrow_and_chain(bworld: EscrowWorld, chain: DevChain) -> None:
    """The proof's inputs bind peer, round, stage and chunk; a peer's own contribute binds experiment, escrow and
    chain by its signed transaction. A batch is someone else's transaction, so the escrow records an entry only
    for the one experiment the peer allowed (allowBatches) on that escrow: a proof heard on gossip cannot be
    replayed into another experiment or escrow to lock the peer's collateral where it never answers audits."""
    w = bworld
    home = w.create_experiment(reward_per_round=1_000, pool=10_000)
    trap = w.create_experiment(reward_per_round=1_000, pool=10_000, client=w.peers[4])  # same verifier and shape
    victim, attacker = w.peers[0], w.peers[4]
    victim.stake(300)
    allow(home, victim)
    (c,) = proven(w, home, [(victim, 0)])
    replayed = c.model_copy(update={"experiment": trap})  # the same proof verifies there: no input names it
    result = attacker.contribute_batch([replayed], precheck=False)
    assert result.included == [] and result.skipped == [(replayed, "not allowed")]
    assert attacker.contribute_batch([replayed]).left_out == [(replayed, "not allowed")]
    assert not w.funder.record(trap, 0, 0, victim.address).exists and victim.stake_of().locked == 0
    (other_chunk,) = w.prove([w.contribution(victim, home, 0, 0, c.root, chunk=(c.chunk + 1) % 5)], home)
    w.goto(home, 1, "train")  # round 1 is open and round 0's submissions still are
    for wrong in (c.model_copy(update={"round": 1}), c.model_copy(update={"stage": 1}), other_chunk):
        with reverts("InvalidProof"):  # round, stage, chunk (the escrow derives c0 itself) are in the proof
            attacker.contribute_batch([wrong], precheck=False)
    other = EscrowWorld(chain, verifier_contract=BATCH)  # another escrow on this chain: nothing allowed there
    other.peers[0].stake(100)
    elsewhere = other.create_experiment(reward_per_round=1_000, pool=1_000)
    moved = c.model_copy(update={"experiment": elsewhere})
    assert other.peers[4].contribute_batch([moved], precheck=False).skipped == [(moved, "not allowed")]
    assert attacker.contribute_batch([c]).included == [c]  # where the victim allowed it, it is recorded
    victim.allow_batches(0)
    assert victim.stake_of().batch_experiment == 0
