"""Certified participation on a real anvil (SwarmEscrow + SwarmCertifier, solc-js artifacts, stand-in proofs):
a requireCertificate experiment pays only the records that more than 2/3 of their (round, stage)'s contributors
certified; anything short of that, or signed by others, or made for another place, reverts."""

from __future__ import annotations

import pytest

from swarm.chain import RevertError
from swarm.chain.testing import EscrowWorld
from swarm.rounds.parts import sign_digest
from swarm.settlement.certificate import certificate_hash, signed_digest, sort_addresses

pytestmark = pytest.mark.integration

REWARD = 1_200


def reverts(name: str):
    return pytest.raises(RevertError, match=rf"\b{name}\b")


def _setup(world: EscrowWorld, n: int, *, stage: int = 0, rounds: int = 3, cert: bool = True) -> tuple[int, list]:
    exp = world.create_experiment(reward_per_round=REWARD, pool=5 * REWARD, num_rounds=rounds,
                                  require_certificate=cert)  # fmt: skip
    peers = world.peers[:n]
    proven = world.prove([world.contribution(p, exp, 0, stage, 100 + i) for i, p in enumerate(peers)], exp)
    for p, c in zip(peers, proven, strict=True):
        p.stake(100)
        p.contribute(c)
    return exp, peers


def _sign(world: EscrowWorld, exp: int, signers: list, contributors: list[str], included: int, *, round: int = 0,
          stage: int = 0, chain_id: int | None = None, escrow: str | None = None) -> list[bytes]:  # fmt: skip
    h = certificate_hash(world.funder.chain_id() if chain_id is None else chain_id, escrow or world.escrow, exp,
                         round, stage, contributors, included)  # fmt: skip
    by = {s.address: sign_digest(s.wallet.account, h) for s in signers}
    return [by[a] for a in sort_addresses(by)]


def test_certified_records_are_paid_and_the_rest_goes_back_to_the_pool(world: EscrowWorld) -> None:
    exp, peers = _setup(world, 4)
    contributors = sort_addresses(p.address for p in peers)
    rider = next(p for p in peers if p.address == contributors[1])
    included = 0b1101  # everyone but contributors[1], whose parts never came
    digest = certificate_hash(world.funder.chain_id(), world.escrow, exp, 0, 0, contributors, included)
    assert bytes(world.funder.read("certificateDigest", exp, 0, 0, contributors, included,
                                   contract=world.funder.certifier())) == signed_digest(digest)  # fmt: skip
    world.goto(exp, 0, "audit")
    signers = [p for p in peers if p is not rider]  # 3 of 4 > 2/3
    receipt = world.funder.certify(exp, 0, 0, contributors, included,
                                   _sign(world, exp, signers, contributors, included))  # fmt: skip
    print(f"certify, 4 contributors, 3 signatures: {receipt['gasUsed']} gas")
    assert [p.record(exp, 0, 0, p.address).certified for p in peers] == [p is not rider for p in peers]
    (event,) = world.funder.events("Certified")
    assert (event["contributors"], event["included"]) == (4, included)
    world.goto(exp, 0, "after")
    world.funder.finalize(exp, 0)
    share = world.funder.round_state(exp, 0).share
    assert share == REWARD // 4 and world.funder.round_state(exp, 0).cert_required
    pool = world.funder.experiment(exp).pool
    for p in peers:
        before = p.token_balance()
        p.claim(exp, 0, 0)
        assert p.token_balance() - before == (0 if p is rider else share)
        assert p.stake_of().locked == 0  # the claim ends the liability either way
    assert world.funder.experiment(exp).pool == pool + share  # the rider's share went back to the funder's pool


def test_certificates_short_of_two_thirds_or_not_by_contributors_revert(world: EscrowWorld) -> None:
    exp, peers = _setup(world, 3)
    outsider = world.peers[-1]
    contributors = sort_addresses(p.address for p in peers)
    full = 0b111
    world.goto(exp, 0, "audit", -1)
    with reverts("NotInCertifyWindow"):  # records are not final before the submission window closes
        world.funder.certify(exp, 0, 0, contributors, full, _sign(world, exp, peers, contributors, full))
    world.goto(exp, 0, "audit")
    certify = lambda sigs, who=contributors, inc=full: world.funder.certify(exp, 0, 0, who, inc, sigs)
    with reverts("TooFewSigners"):  # 2 of 3 is not more than 2/3
        certify(_sign(world, exp, peers[:2], contributors, full))
    with reverts("BadSigner"):  # a non-contributor's signature does not count
        certify(_sign(world, exp, [*peers[:2], outsider], contributors, full))
    two = _sign(world, exp, peers[:2], contributors, full)
    with reverts("BadSigner"):  # one signer twice
        certify([two[0], two[1], two[1]])
    with reverts("BadSigner"):  # signatures out of order
        certify(list(reversed(_sign(world, exp, peers, contributors, full))))
    forged = bytearray(_sign(world, exp, peers, contributors, full)[0])
    forged[5] ^= 1
    with reverts("BadSigner"):
        certify([bytes(forged), *_sign(world, exp, peers, contributors, full)[1:]])
    with reverts("BadSigner"):  # signed for another bitmap than the one sent
        certify(_sign(world, exp, peers, contributors, 0b011))
    for where in ({"round": 1}, {"stage": 1}, {"chain_id": 1}, {"escrow": world.token}):
        with reverts("BadSigner"):  # made for another round, stage, chain or escrow
            certify(_sign(world, exp, peers, contributors, full, **where))
    with reverts("BadSigner"):  # made for another experiment
        certify(_sign(world, exp + 1, peers, contributors, full))
    without = sort_addresses(p.address for p in peers[:2])  # leaving a contributor out of the list
    with reverts("NotTheContributors"):
        certify(_sign(world, exp, peers[:2], without, 0b11), without, 0b11)
    unsorted = list(reversed(contributors))
    with reverts("NotTheContributors"):
        certify(_sign(world, exp, peers, unsorted, full), unsorted)
    with reverts("BadSigner"):  # only the certifier may mark records
        world.funder.transact("markCertified", exp, 0, 0, contributors, full)
    sigs = _sign(world, exp, peers, contributors, full)
    certify(sigs)
    with reverts("AlreadyCertified"):  # a replay of the same certificate
        certify(sigs)


def test_without_require_certificate_nothing_changes_and_certify_reverts(world: EscrowWorld) -> None:
    exp, peers = _setup(world, 3, cert=False)
    contributors = sort_addresses(p.address for p in peers)
    world.goto(exp, 0, "audit")
    with reverts("NotTheContributors"):  # no group is counted: there is nothing to certify
        world.funder.certify(exp, 0, 0, contributors, 0b111, _sign(world, exp, peers, contributors, 0b111))
    world.goto(exp, 0, "after")
    world.funder.finalize(exp, 0)
    for p in peers:
        before = p.token_balance()
        p.claim(exp, 0, 0)
        assert p.token_balance() - before == REWARD // 3


def test_a_batch_counts_the_group_and_nobody_certified_pays_nobody(world: EscrowWorld) -> None:
    exp = world.create_experiment(reward_per_round=REWARD, pool=5 * REWARD, num_rounds=2, require_certificate=True)
    peers = world.peers[:3]
    for p in peers:
        p.stake(100)
        p.allow_batches(exp)
    proven = world.prove([world.contribution(p, exp, 0, 0, 7 + i) for i, p in enumerate(peers)], exp)
    assert len(world.funder.contribute_batch(proven).included) == 3
    contributors = sort_addresses(p.address for p in peers)
    world.goto(exp, 0, "audit")
    with reverts("NotTheContributors"):  # the batch's three records are counted
        world.funder.certify(exp, 0, 0, contributors[:2], 0b11, _sign(world, exp, peers[:2], contributors[:2], 0b11))
    world.goto(exp, 0, "after")
    world.funder.finalize(exp, 0)
    pool = world.funder.experiment(exp).pool
    for p in peers:
        before = p.token_balance()
        p.claim(exp, 0, 0)
        assert p.token_balance() == before  # no certificate: nobody is paid ...
    assert world.funder.experiment(exp).pool == pool + 3 * (REWARD // 3)  # ... and the funder keeps the round
