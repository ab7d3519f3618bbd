"""The watcher on a real anvil with the real escrow and real stand-in proofs (zokrates-js): it arms the seed,
checks the audit proofs it hears, opens the one audit whose proof never came (one watcher, not all), slashes it
after the window and is paid the reporter's share; a lost proof costs it its bond and nobody is slashed.

The watchers' passes are run by hand (`step()`) while the test moves the chain's clock, so every duty time is hit
exactly; the swarm end to end is tests/integration/test_watch_swarm.py.
"""

from __future__ import annotations

import pytest

from protocol.sampling import challenged_chunks
from swarm.chain.client import ChainClient
from swarm.chain.testing import EscrowWorld
from swarm.network.gossip.messages import GossipMessage
from swarm.rounds.parts import Accusation, CommitRecord
from swarm.settlement.settler import SettlementEvent
from swarm.settlement.watcher import Watcher

pytestmark = pytest.mark.integration


def mine(world: EscrowWorld) -> None:
    world.chain.rpc("evm_mine", [])


def watcher(world: EscrowWorld, peer: ChainClient, experiment: int, events: list, since: int) -> Watcher:
    client = ChainClient(world.chain.rpc_url, peer.wallet, escrow=world.escrow)
    return Watcher(client, experiment, on_event=events.append, from_block=since)


def contribute(world: EscrowWorld, peers: list[ChainClient], experiment: int, roots: list[int]) -> None:
    for p in peers:
        p.stake(300)
    proven = world.prove([world.contribution(p, experiment, 0, 0, r) for p, r in zip(peers, roots, strict=True)],
                         experiment)  # fmt: skip
    for p, c in zip(peers, proven, strict=True):
        p.contribute(c)


def audit_proofs(world: EscrowWorld, peer: ChainClient, experiment: int, root: int, chunks: list[int]) -> list:
    wanted = [world.contribution(peer, experiment, 0, 0, root, chunk=c) for c in chunks]
    return [GossipMessage.for_contribution("x", c, audit=True) for c in world.prove(wanted, experiment)]


def kinds(events: list[SettlementEvent]) -> list[str]:
    return [e.kind for e in events if e.kind != "watch_failed"] + [
        f"FAILED {e.detail}" for e in events if e.kind == "watch_failed"
    ]


def test_the_audit_whose_proof_never_came_is_opened_once_slashed_and_the_reporter_paid(world: EscrowWorld):
    """Four contributors, two of them watching (a, b): the honest peers' proofs are gossiped, the silent one's are
    not (only a valid proof of a chunk that is not audited, which must not count)."""
    honest, silent, a, b = world.peers[:4]
    x = world.create_experiment(audits=1, pool=5_000)
    since = world.funder.block_number()
    roots = {honest: 4242, silent: 777, a: 31, b: 32}
    contribute(world, list(roots), x, list(roots.values()))
    events_a, events_b = [], []
    wa, wb = watcher(world, a, x, events_a, since), watcher(world, b, x, events_b, since)
    state, n = world.funder.experiment(x), world.funder.num_chunks(x, 0)

    world.goto(x, 0, "audit", offset=4 * 2)  # every arming rank is due (ARM_STEP_S apart)
    mine(world)
    for w in (wa, wb):
        w.step()  # the first arms the seed; the second's try reverts SeedAlreadyFixed, which is normal
    assert kinds(events_a) + kinds(events_b) == ["seed_armed"]
    mine(world)
    seed = world.funder.round_seed(x, 0)
    assert seed is not None

    gossip = []
    for p, root in roots.items():
        (chunk,) = challenged_chunks(seed, p.address.lower(), 0, 1, n)
        if p is silent:
            chunk = (chunk + 1) % n  # a valid proof, of a chunk nobody asked for
        gossip += audit_proofs(world, p, x, root, [chunk])
    for w in (wa, wb):
        for msg in gossip:
            w.on_gossip(msg)
        w.step()
    target = silent.address.lower()
    first, second = sorted((wa, wb), key=lambda w: w.open_time(w.rounds[0], target) or float("inf"))
    due = first.open_time(first.rounds[0], target)
    assert due is not None and state.submission_end(0) < due < state.submission_end(0) + state.audit_window // 2
    assert all(w.opened == [] for w in (wa, wb))  # heard everything it needs but the silent peer's: waits its turn

    world.goto(x, 0, "audit", offset=int(due) - state.submission_end(0) + 1)
    mine(world)
    second.step()
    first.step()
    assert first.opened == [(0, 0, target, 0)] and second.opened == []
    world.goto(x, 0, "audit", offset=state.audit_window // 2 - 3)  # every backup is due: the audit is open already
    mine(world)
    second.step()
    assert second.opened == []
    for p in (honest, a, b):
        assert p.record(x, 0, 0, p.address).audits_opened == 0  # their proofs were heard: never audited
    assert silent.record(x, 0, 0, silent.address).audits_opened == 1

    # the opener's peer restarts: its new watcher looks back over the rounds that can still be slashed
    events_first = events_a if first is wa else events_b
    first = watcher(world, ChainClient(world.chain.rpc_url, first.client.wallet), x, events_first, None)
    first.start()
    first.shutdown()  # started (lookback, started_at) and stopped: its passes are run by hand below
    first.step()
    assert first.rounds[0].audits == {(0, target, 0): first.me}  # read back from before its start
    balance = first.client.token_balance()
    stake = silent.stake_of()
    world.goto(x, 0, "after", offset=1)
    mine(world)
    second.step()  # not the opener: it waits a quarter of the audit window before it backs the slash up
    assert second.slashes == []
    first.step()
    assert first.slashes == [(0, 0, target)]
    min_stake = world.funder.read("minStake")
    reward = min_stake * world.funder.read("reporterBps") // 10_000
    assert first.earned == reward > 0
    assert first.client.token_balance() == balance + reward + world.audit_bond  # the share, and the bond back
    assert silent.stake_of().active == stake.active - min_stake
    assert not any(p.record(x, 0, 0, p.address).slashed for p in (honest, a, b))
    world.goto(x, 0, "after", offset=state.audit_window // 4 + 2)
    mine(world)
    second.step()
    assert second.slashes == []  # it read the Slashed event: nothing to back up
    slashed = [e for e in events_a + events_b if e.kind == "slashed"]
    assert len(slashed) == 1 and slashed[0].detail["peer"] == target and slashed[0].detail["mine"]
    assert not [e for e in events_a + events_b if e.kind == "watch_failed"], kinds(events_a + events_b)
    gas = {e.kind: e.detail["gas"] for e in events_a + events_b}
    print(f"\nwatcher gas: armSeed {gas['seed_armed']}, openAudit {gas['audit_opened']} (+ the bond's approve), "
          f"slash {gas['slashed']}")


def test_a_proof_lost_on_the_way_costs_the_watcher_its_bond_and_nobody_is_slashed(world: EscrowWorld):
    honest, a = world.peers[:2]
    x = world.create_experiment(audits=1, pool=5_000)
    since = world.funder.block_number()
    contribute(world, [honest], x, [4242])
    events: list = []
    w = watcher(world, a, x, events, since)
    state = world.funder.experiment(x)
    world.goto(x, 0, "audit", offset=4)  # its arming duty is due whatever its rank
    mine(world)
    w.step()
    mine(world)
    balance = w.client.token_balance()
    world.goto(x, 0, "audit", offset=state.audit_window // 2 - 3)
    mine(world)
    w.step()  # nothing heard: it opens the audit
    assert w.opened == [(0, 0, honest.address.lower(), 0)]
    chunk = honest.audit_chunk(x, 0, 0, honest.address, 0)
    (proof,) = world.prove([world.contribution(honest, x, 0, 0, 4242, chunk=chunk)], x)
    honest.answer_audit(proof, 0)  # its settler answers on-chain: the bond goes to it
    world.goto(x, 0, "after", offset=state.audit_window)
    mine(world)
    w.step()
    assert w.slashes == [] and w.bonds_lost == world.audit_bond
    assert w.client.token_balance() == balance - world.audit_bond
    assert not honest.record(x, 0, 0, honest.address).slashed


def test_a_watcher_ignores_junk_on_gossip_and_other_experiments(world: EscrowWorld):
    honest, a = world.peers[:2]
    x = world.create_experiment(audits=1, pool=5_000)
    since = world.funder.block_number()
    contribute(world, [honest], x, [4242])
    w = watcher(world, a, x, [], since)
    world.goto(x, 0, "audit", offset=4)
    mine(world)
    w.step()
    mine(world)
    w.step()
    seed = world.funder.round_seed(x, 0)
    chunk = challenged_chunks(seed, honest.address.lower(), 0, 1, world.funder.num_chunks(x, 0))[0]
    (good,) = world.prove([world.contribution(honest, x, 0, 0, 4242, chunk=chunk)], x)
    other_root = good.model_copy(update={"root": 4243})  # not the root it contributed
    other_experiment = good.model_copy(update={"experiment": x + 1})
    bad_proof = good.model_copy(update={"proof": good.proof.model_copy(update={"a": (good.proof.c[0], good.proof.c[1])})})
    far_future = good.model_copy(update={"round": 10**6})  # would keep a round's state forever
    for c in (other_root, other_experiment, bad_proof, far_future):
        w.on_gossip(GossipMessage.for_contribution("x", c, audit=True))
    w.step()
    assert w.rounds[0].proven == set() and 10**6 not in w.rounds
    w.on_gossip(GossipMessage.for_contribution("x", good, audit=True))
    w.step()
    assert w.rounds[0].proven == {(0, honest.address.lower(), chunk)}


def accusation(accused: str, root: int, chunk: int, round: int = 0, stage: int = 0) -> Accusation:
    """An accusation as a verified round makes it (the record and part are what the stage peer checked; the
    watcher needs the record's root to find the accused's contribution)."""
    record = CommitRecord(peer_id=accused, round=round, stage=stage, root=root, norm_sq=100, numel=4096,
                          num_chunks=4, part_key=bytes(32), anchor_round=-1, anchor_digest=bytes(32))
    return Accusation(accuser="QmAccuser", accused=accused, round=round, stage=stage, chunk=chunk,
                      reason="leaf hashes do not match", record=record.to_wire(), part=b"")


def test_an_accusation_becomes_a_targeted_audit_of_its_chunk_slashed_unanswered_and_paid_when_false(world):
    """Issue 7's chain half: our own accusation (a StagePeer evidence sink) names the accused by DHT peer id and
    root; the watcher finds its contribution by that root and opens a targeted audit of exactly that chunk with its
    bond. Left unanswered: slashed, the reporter paid. Answered (a false accusation): the bond goes to the accused."""
    silent, answering, a = world.peers[:3]
    x = world.create_experiment(audits=1, pool=5_000)
    since = world.funder.block_number()
    contribute(world, [silent, answering], x, [777, 4242])
    events: list = []
    w = Watcher(ChainClient(world.chain.rpc_url, a.wallet, escrow=world.escrow), x, on_event=events.append,
                from_block=since, targeted=True)  # fmt: skip
    w.on_accusation(accusation("QmSilent", 777, chunk=3))
    w.on_accusation(accusation("QmAnswering", 4242, chunk=2))
    w.on_accusation(accusation("QmNotContributed", 999, chunk=1))  # no contribution with that root: nothing
    balance = w.client.token_balance()
    w.step()  # still in the submission window: targeted audits may open from the contribution on
    opened = {(e.detail["peer"], e.detail["chunk"], e.detail["j"]) for e in events if e.kind == "audit_opened"}
    assert opened == {(silent.address.lower(), 3, 8), (answering.address.lower(), 2, 8)}
    assert {e.detail["peer_id"] for e in events if e.kind == "evidence"} == {"QmSilent", "QmAnswering"}
    assert world.funder.audit(x, 0, 0, silent.address, 8).chunk == 3
    assert w.client.token_balance() == balance - 2 * world.audit_bond

    (proof,) = world.prove([world.contribution(answering, x, 0, 0, 4242, chunk=2)], x)
    before = answering.token_balance()
    answering.answer_audit(proof, 8)  # it can prove that chunk: the accusation was false
    assert answering.token_balance() == before + world.audit_bond
    stake = silent.stake_of().active
    world.goto(x, 0, "after", offset=1)
    mine(world)
    w.step()
    min_stake = world.funder.read("minStake")
    reward = min_stake * world.funder.read("reporterBps") // 10_000
    assert w.slashes == [(0, 0, silent.address.lower())] and w.earned == reward
    assert silent.stake_of().active == stake - min_stake
    assert not answering.record(x, 0, 0, answering.address).slashed
    assert w.bonds_lost == world.audit_bond  # the false accusation's bond
    assert w.client.token_balance() == balance - world.audit_bond + reward  # one bond back with the share
    assert not [e for e in events if e.kind == "watch_failed"], kinds(events)
