"""slashMismatch on a real anvil with the real escrow (issue 7, evidence reaches the chain): a part whose wallet-
signed leaves and path do not hash to the root its signer contributed slashes it at once and pays the reporter; a
part that does (a false accusation) reverts and moves nothing; evidence does not replay in another experiment or
round, nor slash twice, nor work with another signer. The watcher sends it from an accusation on its own."""

from __future__ import annotations

import time

import pytest
import torch

from swarm.chain.client import ChainClient
from swarm.chain.errors import RevertError
from swarm.chain.testing import EscrowWorld
from swarm.rounds.parts import (
    Accusation,
    CommitRecord,
    EvidenceDomain,
    Part,
    WalletSigner,
    make_parts,
    new_round_key,
    part_evidence,
)  # fmt: skip
from swarm.settlement.watcher import Watcher
from zk.circuit import SMALL_PARAMS
from zk.commit import Commitment, commit_update
from zk.quantize import quantize_update

pytestmark = pytest.mark.integration
PART_CHUNKS = 4
NORM_BOUND = 2**120


@pytest.fixture(scope="module")
def commitment() -> Commitment:
    torch.manual_seed(11)
    q = quantize_update(torch.randn(SMALL_PARAMS.chunk * 9 + 5) * 0.01, block_size=SMALL_PARAMS.block)
    return commit_update(q, SMALL_PARAMS)


def contribute(world: EscrowWorld, peer: ChainClient, experiment: int, c: Commitment, round: int = 0) -> None:
    if peer.stake_of().active == 0:
        peer.stake(300)
    (proven,) = world.prove([world.contribution(peer, experiment, round, 0, c.root, c.norm_sq)], experiment)
    peer.contribute(proven)


def signed_parts(world: EscrowWorld, peer: ChainClient, experiment: int, c: Commitment, round: int = 0,
                 signer: ChainClient | None = None) -> tuple[CommitRecord, list[Part], WalletSigner, object]:
    """The parts `peer` sends in a verified round of `experiment` (its leaves signed by `signer`, default itself)."""
    domain = EvidenceDomain(chain_id=world.funder.chain_id(), escrow=world.escrow, experiment_id=experiment)
    wallet = WalletSigner((signer or peer).wallet.account, domain)
    key, public = new_round_key()
    record = CommitRecord(peer_id="QmCheater", round=round, stage=0, root=c.root, norm_sq=c.norm_sq,
                          numel=c.update.numel, num_chunks=c.num_chunks, part_key=public, anchor_round=-1,
                          anchor_digest=bytes(32), wallet=peer.address, chain_id=domain.chain_id, escrow=world.escrow,
                          chain_experiment=experiment)  # fmt: skip
    return record, make_parts(c, "QmCheater", round, 0, key, PART_CHUNKS, wallet), wallet, key


def lie(part: Part, wallet: WalletSigner, key) -> Part:
    """The same part with one leaf changed (as data that is not the committed one hashes), signed again."""
    leaves = part.leaf_nodes()
    leaves[1] = (leaves[1][0] ^ 1, leaves[1][1] + 5)
    return part.wallet_signed(wallet, leaves, PART_CHUNKS).signed(key)


def flat(part: Part) -> tuple:
    return (part.first_chunk(PART_CHUNKS), [x for n in part.leaf_nodes() for x in n],
            [x for n in part.path_nodes() for x in n], part.wallet_signature)


def checker(client: ChainClient):
    return client.contract("PartFraudChecker", client.read("fraudChecker"))


def slash_mismatch(reporter: ChainClient, experiment: int, peer: ChainClient, c: Commitment, ev: tuple,
                   round: int = 0):
    return reporter.transact("slashMismatch", experiment, round, 0, peer.address, c.root, c.norm_sq, ev,
                             contract=checker(reporter))


def reverts(name: str, fn, *args, **kwargs) -> None:
    with pytest.raises(RevertError) as info:
        fn(*args, **kwargs)
    assert info.value.error_name == name, info.value


def test_a_lying_part_slashes_at_once_and_pays_the_reporter_once(world: EscrowWorld, commitment) -> None:
    cheater, reporter = world.peers[:2]
    x = world.create_experiment(audits=1, pool=5_000, norm_bound=NORM_BOUND)
    contribute(world, cheater, x, commitment)
    record, parts, wallet, key = signed_parts(world, cheater, x, commitment)
    ev = part_evidence(record, lie(parts[1], wallet, key), PART_CHUNKS)
    assert ev is not None
    stake, balance, burned = cheater.stake_of().active, reporter.token_balance(), world.funder.read("burned")
    receipt = slash_mismatch(reporter, x, cheater, commitment, ev)  # inside the submission window: at once
    min_stake = world.funder.read("minStake")
    reward = min_stake * world.funder.read("reporterBps") // 10_000
    assert cheater.stake_of().active == stake - min_stake
    assert reporter.token_balance() == balance + reward
    assert world.funder.read("burned") == burned + min_stake - reward
    assert cheater.record(x, 0, 0, cheater.address).slashed
    print(f"\nslashMismatch of a {PART_CHUNKS}-chunk part at depth {SMALL_PARAMS.depth}: {receipt['gasUsed']} gas")
    reverts("AlreadySlashed", slash_mismatch, reporter, x, cheater, commitment, ev)  # never twice
    assert reporter.token_balance() == balance + reward
    # the slashed record leaves the round's valid ones and takes no audit any more
    assert world.funder.round_state(x, 0).unanswered == 1
    world.goto(x, 0, "audit", offset=1)
    world.chain.rpc("evm_mine", [])
    reverts("AlreadySlashed", reporter.transact, "openTargetedAudit", x, 0, 0, cheater.address, 0)


def test_a_true_part_reverts_and_nothing_moves(world: EscrowWorld, commitment) -> None:
    cheater, reporter = world.peers[:2]
    x = world.create_experiment(audits=1, pool=5_000, norm_bound=NORM_BOUND)
    contribute(world, cheater, x, commitment)
    record, parts, _, _ = signed_parts(world, cheater, x, commitment)
    assert all(part_evidence(record, p, PART_CHUNKS) is None for p in parts)
    stake, balance = cheater.stake_of().active, reporter.token_balance()
    for p in (parts[0], parts[-1]):
        reverts("NoMismatch", slash_mismatch, reporter, x, cheater, commitment, flat(p))
    # a root or norm other than the contributed one is refused by the escrow, whatever the part
    lying = part_evidence(record, lie(parts[0], signed_parts(world, cheater, x, commitment)[2],
                                      new_round_key()[0]), PART_CHUNKS)  # fmt: skip
    reverts("InvalidProof", reporter.transact, "slashMismatch", x, 0, 0, cheater.address, commitment.root,
            commitment.norm_sq + 5, lying, contract=checker(reporter))
    assert (cheater.stake_of().active, reporter.token_balance()) == (stake, balance)
    assert not cheater.record(x, 0, 0, cheater.address).slashed


def test_evidence_does_not_replay_and_needs_the_peers_own_wallet(world: EscrowWorld, commitment) -> None:
    cheater, reporter, other = world.peers[:3]
    x = world.create_experiment(audits=1, pool=5_000, norm_bound=NORM_BOUND)
    y = world.create_experiment(audits=1, pool=5_000, norm_bound=NORM_BOUND)
    contribute(world, cheater, x, commitment)
    contribute(world, cheater, y, commitment)
    record, parts, wallet, key = signed_parts(world, cheater, x, commitment)
    ev = part_evidence(record, lie(parts[0], wallet, key), PART_CHUNKS)
    reverts("WrongSigner", slash_mismatch, reporter, y, cheater, commitment, ev)  # another experiment
    world.goto(x, 1)
    contribute(world, cheater, x, commitment, round=1)
    reverts("WrongSigner", slash_mismatch, reporter, x, cheater, commitment, ev, round=1)  # another round
    # signed by another wallet than the accused's
    _, parts2, wallet2, key2 = signed_parts(world, cheater, x, commitment, signer=other)
    forged = flat(lie(parts2[0], wallet2, key2))
    reverts("WrongSigner", slash_mismatch, reporter, x, cheater, commitment, forged)
    # nobody but the checker may make the escrow slash
    reverts("NotFraudChecker", reporter.transact, "slashMismatch", x, 0, 0, cheater.address, commitment.root,
            commitment.norm_sq, reporter.address)
    assert not cheater.record(x, 0, 0, cheater.address).slashed
    assert not cheater.record(y, 0, 0, cheater.address).slashed
    slash_mismatch(reporter, x, cheater, commitment, ev)  # the evidence does hold where it was made
    assert cheater.record(x, 0, 0, cheater.address).slashed


def test_the_watcher_slashes_from_its_accusation(world: EscrowWorld, commitment) -> None:
    """A StagePeer evidence sink hands the watcher an accusation whose part lies: once the accused's contribution
    is read, the watcher sends slashMismatch (no bond) and is paid; a true part's accusation slashes nobody."""
    cheater, honest, me = world.peers[:3]
    x = world.create_experiment(audits=1, pool=5_000, norm_bound=NORM_BOUND)
    since = world.funder.block_number()
    torch.manual_seed(5)
    other = commit_update(quantize_update(torch.randn(300) * 0.01, block_size=SMALL_PARAMS.block), SMALL_PARAMS)
    contribute(world, cheater, x, commitment)
    contribute(world, honest, x, other)
    record, parts, wallet, key = signed_parts(world, cheater, x, commitment)
    record_h, parts_h, _, _ = signed_parts(world, honest, x, other)
    events: list = []
    w = Watcher(ChainClient(world.chain.rpc_url, me.wallet, escrow=world.escrow), x, on_event=events.append,
                from_block=since)  # fmt: skip
    for rec, part in ((record, lie(parts[1], wallet, key)), (record_h.model_copy(update={"peer_id": "QmHonest"}),
                                                               parts_h[0])):
        w.on_accusation(Accusation(accuser="QmMe", accused=rec.peer_id, round=0, stage=0, chunk=part.index * 4,
                                   reason="the chunks and path do not hash to the committed root",
                                   record=rec.to_wire(), part=part.to_bytes()))  # fmt: skip
    stake = cheater.stake_of().active
    deadline = time.monotonic() + 30  # its duty rank among the round's contributors: 0 or 2 s after reading it
    while not w.mismatch_slashes and time.monotonic() < deadline:
        w.step()
        time.sleep(0.5)
    assert w.mismatch_slashes == [(0, 0, cheater.address.lower())]
    assert cheater.stake_of().active < stake and not honest.record(x, 0, 0, honest.address).slashed
    assert w.earned == world.funder.read("minStake") * world.funder.read("reporterBps") // 10_000
    assert [e.detail["on_chain"] for e in events if e.kind == "evidence"] == [True, False]
    assert not [e for e in events if e.kind == "watch_failed"], events
