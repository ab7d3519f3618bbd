"""The escrow audit's attacks (contracts/README.md, "Rules"), each run as the attacker would run
it on a real anvil with the real contracts and real stand-in proofs. Each test asserts that the attacker ends
with less than it started (or is refused before it can spend anything) and that the honest party loses nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from eth_abi import encode
from eth_utils import keccak

from swarm.chain import RevertError
from swarm.chain.client import ChainClient
from swarm.chain.models import ExperimentSpec
from swarm.chain.safety import STANDIN_VERIFIERS, UnsafeExperiment, check_experiment
from swarm.chain.testing import STANDIN_CHUNK, STANDIN_DEPTH, EscrowWorld, Timing

pytestmark = pytest.mark.integration

STANDIN_SHAPE = SimpleNamespace(chunk=STANDIN_CHUNK, depth=STANDIN_DEPTH)


def reverts(name: str):
    return pytest.raises(RevertError, match=rf"\b{name}\b")


def wealth(c: ChainClient) -> int:
    """Tokens the account controls: wallet plus stake (active and unbonding)."""
    s = c.stake_of()
    return c.token_balance() + s.active + s.unbonding


def audit_and_slash(world: EscrowWorld, opener: ChainClient, exp: int, peer: ChainClient, stage: int = 0) -> None:
    world.goto(exp, 0, "audit")
    opener.open_audit(exp, 0, stage, peer.address, 0)
    world.goto(exp, 0, "after")
    world.funder.slash(exp, 0, stage, peer.address, 0)


# ---------------------------------------------------------------------------------------------------- audit #1


def test_a_cheater_cannot_slash_itself_in_its_own_experiment_to_keep_its_stake(world: EscrowWorld) -> None:
    cheat, honest, auditor = world.peers[:3]
    x = world.create_experiment(pool=5_000, audits=1)
    cheat.stake(200)
    honest.stake(100)
    bad, good = world.prove([world.contribution(cheat, x, 0, 0, 5), world.contribution(honest, x, 0, 0, 6)], x)
    cheat.contribute(bad)
    honest.contribute(good)
    start, honest_start, auditor_start = wealth(cheat), wealth(honest), wealth(auditor)

    # the cheater sets up its own experiment B with the shortest windows the escrow allows
    b = world.create_experiment(audits=1, num_rounds=1, client=cheat, timing=Timing(
        round_duration=1, submit_window=11, audit_window=22))  # fmt: skip
    cheat.contribute(bad.model_copy(update={"experiment": b}))  # the same proof: its inputs do not name the experiment
    audit_and_slash(world, cheat, b, cheat)  # it audits itself and has itself slashed in B
    world.goto(b, 0, "after", offset=world.timing.slash_grace)
    cheat.finalize(b, 0)
    with reverts("ZeroAmount"):  # B's pool received nothing of the slash: there is nothing to reclaim
        cheat.reclaim_pool(b)
    with reverts("InsufficientStake"):  # and the collateral backing X cannot leave either
        cheat.request_unbond(100)

    # the honest audit in X still takes the collateral that backed the contribution to X
    audit_and_slash(world, auditor, x, cheat)
    assert wealth(cheat) == start - 80 - 100 < start  # B: 100 lost, 20 back as its own reporter; X: 100 lost
    assert wealth(auditor) == auditor_start + 20  # bond back plus 20% of the collateral
    world.funder.finalize(x, 0)
    honest.claim(x, 0, 0)
    assert wealth(honest) == honest_start + 1_000  # the whole round: the cheater's record gets no share


# ---------------------------------------------------------------------------------------------------- audit #2


def test_a_funder_cannot_declare_windows_nobody_can_answer_in_nor_a_rigged_verifier(world: EscrowWorld) -> None:
    funder = world.funder
    now = funder.block_timestamp()
    rigged, _ = funder.deploy("RiggedVerifier", now + 150)  # accepts contributions, rejects later audit answers
    spec = ExperimentSpec(
        verifier=world.verifier, start=now, round_duration=10, submit_window=11, audit_window=22, audits_per_peer=1,
        num_rounds=5, chunk_size=STANDIN_CHUNK, reward_per_round=1_000, norm_bound=10**6, stage_params=[5_000])
    funder.create_experiment(spec)  # at the floors: allowed
    with pytest.raises(RevertError, match="auditWindow too short"):
        funder.create_experiment(spec.model_copy(update={"audit_window": 2}))
    with pytest.raises(RevertError, match="verifier not allowed"):
        funder.create_experiment(spec.model_copy(update={"verifier": rigged}))


def test_the_peer_refuses_an_experiment_it_cannot_serve_before_it_stakes(world: EscrowWorld) -> None:
    victim = world.peers[0]
    tight = world.create_experiment(audits=2, timing=Timing(submit_window=15, audit_window=24))
    start = wealth(victim)
    check_experiment(victim, tight, params=STANDIN_SHAPE, verifiers=STANDIN_VERIFIERS)  # the escrow's 1 s/proof
    with pytest.raises(UnsafeExperiment, match=r"audit window 24 s leaves 12 s to answer 2 audits"):
        check_experiment(victim, tight, params=STANDIN_SHAPE, verifiers=STANDIN_VERIFIERS, proof_seconds=5)
    with pytest.raises(UnsafeExperiment, match="not one we prove for"):  # zk's real verifiers by default
        check_experiment(victim, tight, params=STANDIN_SHAPE)
    with pytest.raises(UnsafeExperiment, match="does not exist"):
        check_experiment(victim, 999, params=STANDIN_SHAPE, verifiers=STANDIN_VERIFIERS)

    # an escrow that an attacker deployed itself, pinning its rigged verifier, named by a DHT record
    attacker = world.peers[1]
    rigged, _ = attacker.deploy("RiggedVerifier", attacker.block_timestamp() + 150)
    shape = attacker.verifier_shape(rigged, chunk=STANDIN_CHUNK, depth=STANDIN_DEPTH, proof_seconds=1)
    own = attacker.with_wallet(attacker.wallet)
    own.deploy_escrow(world.token, min_stake=100, unbonding_delay=1_000, slash_grace=100, reporter_bps=2_000,
                      audit_bond=10, verifiers=[shape])  # fmt: skip
    exp = own.create_experiment(ExperimentSpec(
        verifier=rigged, start=own.block_timestamp(), round_duration=100, submit_window=50, audit_window=100,
        audits_per_peer=2, num_rounds=5, chunk_size=STANDIN_CHUNK, reward_per_round=10**6, norm_bound=10**6,
        stage_params=[5_000]))  # fmt: skip
    with pytest.raises(UnsafeExperiment, match="verifier .* is not one we prove for"):
        check_experiment(ChainClient(world.chain.rpc_url, victim.wallet, escrow=own.escrow_address), exp,
                         params=STANDIN_SHAPE, verifiers=STANDIN_VERIFIERS)
    assert wealth(victim) == start  # refused before staking anything


# ---------------------------------------------------------------------------------------------------- audit #3


def test_one_stake_backs_one_contribution_at_a_time_and_each_slash_takes_its_own_collateral(
    world: EscrowWorld,
) -> None:
    reuser, auditor = world.peers[:2]
    x = world.create_experiment(audits=1)
    y = world.create_experiment(audits=1)
    reuser.stake(100)  # one minStake
    c0, c1 = world.prove([world.contribution(reuser, x, 0, 0, 5), world.contribution(reuser, x, 0, 1, 6)], x)
    reuser.contribute(c0)
    with reverts("CollateralUnavailable"):  # a second stage of the same round
        reuser.contribute(c1)
    with reverts("CollateralUnavailable"):  # another experiment
        reuser.contribute(c1.model_copy(update={"experiment": y}))
    reuser.stake(100)
    reuser.contribute(c1)  # with a second minStake it may back a second contribution
    start = wealth(reuser)
    world.goto(x, 0, "audit")
    auditor.open_audit(x, 0, 0, reuser.address, 0)
    auditor.open_audit(x, 0, 1, reuser.address, 0)
    world.goto(x, 0, "after")
    auditor.slash(x, 0, 0, reuser.address, 0)
    auditor.slash(x, 0, 1, reuser.address, 0)
    assert [e["amount"] for e in auditor.events("Slashed")] == [100, 100]  # not (200, 0)
    assert wealth(reuser) == start - 200


# ---------------------------------------------------------------------------------------------------- audit #4


def test_a_zero_update_is_refused_and_the_funder_may_set_a_norm_floor(world: EscrowWorld) -> None:
    rider, honest = world.peers[:2]
    exp = world.create_experiment(pool=5_000, min_norm_log2=10)  # normSq >= 1024
    rider.stake(300)
    honest.stake(100)
    zero, tiny, useful = world.prove([world.contribution(rider, exp, 0, 0, 5, norm_sq=0),
                                      world.contribution(rider, exp, 0, 1, 6, norm_sq=1_023),
                                      world.contribution(honest, exp, 0, 0, 7, norm_sq=50_000)], exp)  # fmt: skip
    with reverts("NormBelowMinimum"):
        rider.contribute(zero)
    with reverts("NormBelowMinimum"):
        rider.contribute(tiny)
    honest.contribute(useful)
    world.goto(exp, 0, "after")
    world.funder.finalize(exp, 0)
    assert world.funder.round_state(exp, 0).share == 1_000  # the free rider took nothing of the round


def test_a_targeted_audit_answered_pays_the_accused_and_unanswered_slashes_it(world: EscrowWorld) -> None:
    accused, liar, receiver = world.peers[:3]
    exp = world.create_experiment(pool=5_000)
    accused.stake(100)
    liar.stake(100)
    c_accused, c_liar = world.prove([world.contribution(accused, exp, 0, 0, 5),
                                     world.contribution(liar, exp, 0, 0, 6)], exp)  # fmt: skip
    accused.contribute(c_accused)
    liar.contribute(c_liar)
    n = accused.num_chunks(exp, 0)
    with reverts("ChunkOutOfRange"):
        receiver.open_targeted_audit(exp, 0, 0, accused.address, n)
    # a false accusation (during the round, before the audit window) on chunk 3
    accused_start, receiver_start = wealth(accused), wealth(receiver)
    j = receiver.open_targeted_audit(exp, 0, 0, accused.address, 3)
    assert j == 8 and receiver.audit(exp, 0, 0, accused.address, j).chunk == 3
    (answer,) = world.prove([world.contribution(accused, exp, 0, 0, 5, chunk=3)], exp)
    accused.answer_audit(answer, j)
    assert wealth(accused) == accused_start + world.audit_bond  # the accuser's bond pays the accused
    assert wealth(receiver) == receiver_start - world.audit_bond
    # true evidence: the liar cannot prove chunk 4 of data that does not match its root
    j = receiver.open_targeted_audit(exp, 0, 0, liar.address, 4)
    liar_start = wealth(liar)
    world.goto(exp, 0, "after")
    world.peers[3].slash(exp, 0, 0, liar.address, j)  # a front-runner sends the slash...
    # ...the opener is paid: its second bond back and 20% of the collateral (its first bond went to the accused)
    assert wealth(receiver) == receiver_start - world.audit_bond + 20
    assert wealth(liar) == liar_start - 100


def test_targeted_audit_slots_are_bounded(world: EscrowWorld) -> None:
    peer, receiver = world.peers[:2]
    exp = world.create_experiment()
    peer.stake(100)
    (c,) = world.prove([world.contribution(peer, exp, 0, 0, 5)], exp)
    peer.contribute(c)
    assert [receiver.open_targeted_audit(exp, 0, 0, peer.address, k % 5) for k in range(8)] == list(range(8, 16))
    with reverts("NoTargetedAuditSlot"):
        receiver.open_targeted_audit(exp, 0, 0, peer.address, 0)


# -------------------------------------------------------------------------------------------------- audit #8-9


def test_a_griefer_cannot_finalize_an_underfunded_round_before_the_funder_tops_up(world: EscrowWorld) -> None:
    honest, griefer = world.peers[:2]
    exp = world.create_experiment(pool=0, reward_per_round=1_000)
    honest.stake(100)
    (c,) = world.prove([world.contribution(honest, exp, 0, 0, 5)], exp)
    honest.contribute(c)
    world.goto(exp, 0, "after")
    with reverts("NotFinalizable"):  # the pool does not cover the round yet: only the funder, or after the grace
        griefer.finalize(exp, 0)
    world.funder.fund(exp, 5_000)
    griefer.finalize(exp, 0)
    before = wealth(honest)
    honest.claim(exp, 0, 0)
    assert wealth(honest) == before + 1_000


def test_the_funder_cannot_reclaim_what_finished_rounds_owe(world: EscrowWorld) -> None:
    honest = world.peers[0]
    exp = world.create_experiment(pool=5_000, reward_per_round=1_000, num_rounds=1)
    honest.stake(100)
    (c,) = world.prove([world.contribution(honest, exp, 0, 0, 5)], exp)
    honest.contribute(c)
    world.goto(exp, 0, "after", offset=world.timing.slash_grace)
    with reverts("RoundsNotFinalized"):
        world.funder.reclaim_pool(exp)
    honest.finalize(exp, 0)
    before = world.funder.token_balance()
    world.funder.reclaim_pool(exp)
    assert world.funder.token_balance() == before + 4_000
    start = wealth(honest)
    honest.claim(exp, 0, 0)
    assert wealth(honest) == start + 1_000


# ------------------------------------------------------------------------------------------------- issue 9 seed


def test_the_last_submitter_cannot_steer_the_audit_seed(world: EscrowWorld) -> None:
    first, last = world.peers[:2]
    exp = world.create_experiment(audits=2)
    first.stake(100)
    last.stake(100)
    c1, c2 = world.prove([world.contribution(first, exp, 0, 0, 5), world.contribution(last, exp, 0, 0, 6)], exp)
    first.contribute(c1)
    last.contribute(c2)  # the last root of the round: before, the seed was keccak256(acc) and it could grind it
    with reverts("NotInAuditOpening"):  # no seed before the submission window is over
        last.arm_seed(exp, 0)
    world.goto(exp, 0, "audit")
    assert last.round_seed(exp, 0) is None
    snapshot = world.chain.rpc("evm_snapshot", [])
    seeds = []
    for extra_blocks in (0, 1):  # the same roots, armed in two different blocks
        for _ in range(extra_blocks):
            world.chain.rpc("evm_mine", [])
        armed = last.arm_seed(exp, 0)
        with reverts("SeedAlreadyFixed"):
            first.arm_seed(exp, 0)
        assert last.round_seed(exp, 0) is None  # not in the arming block itself: its hash is not known there
        world.chain.rpc("evm_mine", [])
        block = last.w3.eth.get_block(armed["blockNumber"])
        acc = last.round_state(exp, 0).accumulator
        seed = last.round_seed(exp, 0)
        assert seed == keccak(encode(["bytes32", "bytes32"], [acc, bytes(block["hash"])]))
        seeds.append((seed, [last.audit_chunk(exp, 0, 0, last.address, j) for j in range(2)]))
        world.revert_to(snapshot)
        snapshot = world.chain.rpc("evm_snapshot", [])
    assert seeds[0][0] != seeds[1][0]  # the roots alone do not decide the seed: a block after them does
    first.open_audit(exp, 0, 0, last.address, 0)  # the client arms it when needed, then opens
    assert first.round_seed(exp, 0) is not None
