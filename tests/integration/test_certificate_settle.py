"""Certifiers of a (round, stage) group on a real anvil: each signs the group's certificate once the submission
window is over, hears the others' signatures (gossip bodies handed over in-process: the relay is tested in
test_gossip_relay.py), the first in duty order sends `certify` once, and a restart keeps what was heard
(journal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm.chain.testing import EscrowWorld
from swarm.settlement.certificate import CertificateSignature, Certifier, sort_addresses
from swarm.settlement.journal import Journal

pytestmark = pytest.mark.integration


def _journal(tmp_path: Path, who: str) -> Journal:
    return Journal(tmp_path / f"{who}.sqlite", {"peer": who.lower()})


def test_group_certifies_once_and_a_restart_keeps_the_signatures(world: EscrowWorld, tmp_path: Path) -> None:
    exp = world.create_experiment(reward_per_round=900, pool=900, num_rounds=2, require_certificate=True)
    peers = world.peers[:4]
    roots = {p.address: 500 + i for i, p in enumerate(peers)}
    proven = world.prove([world.contribution(p, exp, 0, 0, roots[p.address]) for p in peers], exp)
    for p, c in zip(peers, proven, strict=True):
        p.stake(100)
        p.contribute(c)
    rider = peers[3]  # committed and proved on chain, but its parts never reached the group: not averaged
    averaged = {a: r for a, r in roots.items() if a != rider.address}
    journals = {p.address: _journal(tmp_path, p.address) for p in peers}
    wire: list[bytes] = []
    certifiers = {p.address: Certifier(p, exp, publish=lambda body, r, s: wire.append(body),
                                       journal=journals[p.address]) for p in peers}  # fmt: skip
    for p in peers:  # every honest peer's verified round averaged the same three; the rider claims all four
        certifiers[p.address].on_report(0, 0, roots if p is rider else averaged)
    state = world.funder.experiment(exp)
    world.goto(exp, 0, "audit")
    now = world.funder.block_timestamp()
    honest = [certifiers[p.address] for p in peers if p is not rider]
    for c in certifiers.values():
        c.step(now, state)  # each signs and publishes; nothing is sent before enough signatures are heard
    assert len(wire) == 4 and not any(c.sent for c in certifiers.values())
    rider_msg = CertificateSignature.from_bytes(wire[3])
    assert rider_msg.included == 0b1111 and CertificateSignature.from_bytes(wire[0]).included != 0b1111

    # the first honest certifier in duty order restarts before hearing anything: its journal keeps its message
    first = min(honest, key=lambda c: c.duty_time(c.pending[(0, 0)], state))
    journal = journals[first.me]
    restarted = Certifier(world.funder.with_wallet(first.client.wallet), exp, journal=journal)
    restarted.client.attach(world.escrow)
    assert restarted.pending[(0, 0)].signatures == first.pending[(0, 0)].signatures
    certifiers[first.me] = restarted
    for c in certifiers.values():
        for body in wire:
            c.on_gossip(body)
    due = first.duty_time(first.pending[(0, 0)], state)  # the first honest rank's turn (a rider has no quorum)
    for c in certifiers.values():
        c.step(due, state)
    late = now + 30  # past every duty time, within the audit window: the others find it on chain
    world.chain.set_next_timestamp(late)
    world.funder.send_eth(world.funder.address, 0)  # a block at `late`
    for c in certifiers.values():
        c.step(late, state)
    assert sum(len(c.sent) for c in certifiers.values()) == 1 and restarted.sent == [(0, 0)]
    assert restarted.pending[(0, 0)].signatures.keys() == set(sort_addresses(averaged))  # the rider's differs
    (event,) = world.funder.events("Certified")
    assert event["contributors"] == 4
    assert [world.funder.record(exp, 0, 0, p.address).certified for p in peers] == [True, True, True, False]
    assert Certifier(restarted.client, exp, journal=journal).pending[(0, 0)].done  # sent: not sent again
    restarted.step(state.audit_end(0), state)
    assert not restarted.pending and not journal.certificates()  # the round's windows are over: forgotten
    world.goto(exp, 0, "after")
    world.funder.finalize(exp, 0)
    paid = {}
    for p in peers:
        before = p.token_balance()
        p.claim(exp, 0, 0)
        paid[p.address] = p.token_balance() - before
    assert paid == {p.address: (0 if p is rider else 900 // 4) for p in peers}
    for j in journals.values():
        j.close()


def test_a_round_reported_before_a_restart_is_still_certified(world: EscrowWorld, tmp_path: Path) -> None:
    exp = world.create_experiment(reward_per_round=900, pool=900, num_rounds=1, require_certificate=True)
    peer = world.peers[0]
    (c,) = world.prove([world.contribution(peer, exp, 0, 0, 777)], exp)
    peer.stake(100)
    peer.contribute(c)
    journal = _journal(tmp_path, peer.address)
    Certifier(peer, exp, journal=journal).on_report(0, 0, {peer.address: 777})  # then the process dies
    restarted = Certifier(peer, exp, journal=journal)  # the journal kept what the round averaged
    state = world.funder.experiment(exp)
    world.goto(exp, 0, "audit")
    restarted.step(state.submission_end(0), state)  # alone: 1 of 1 signatures, its own duty
    assert restarted.sent == [(0, 0)] and world.funder.record(exp, 0, 0, peer.address).certified
    journal.close()
