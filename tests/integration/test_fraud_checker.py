"""PartFraudChecker on a real anvil: Solidity Poseidon equals zk/poseidon.py, the on-chain Merkle-sum root of a
part equals zk.commit's root for a real commitment, and the wallet signature binds every field of the evidence."""

from __future__ import annotations

import random

import pytest
import torch

from swarm.chain import DevChain
from swarm.chain.client import ChainClient
from swarm.chain.wallet import Wallet
from swarm.rounds.parts import (
    EvidenceDomain,
    Part,
    WalletSigner,
    evidence_digest,
    evidence_root,
    make_parts,
    new_round_key,
    part_evidence,
    sign_digest,
)  # fmt: skip
from zk.circuit import SMALL_PARAMS
from zk.commit import commit_update
from zk.poseidon import P, poseidon
from zk.quantize import quantize_update

PART_CHUNKS = 4


@pytest.fixture(scope="module")
def checker(chain: DevChain) -> tuple[ChainClient, object]:
    client = ChainClient(chain.rpc_url, Wallet(chain.accounts[0].private_key))
    address, _ = client.deploy("PartFraudChecker")
    return client, client.contract("PartFraudChecker", address)


@pytest.fixture(scope="module")
def commitment():
    torch.manual_seed(7)
    q = quantize_update(torch.randn(SMALL_PARAMS.chunk * 9 + 17), block_size=SMALL_PARAMS.block)  # 10 chunks
    return commit_update(q, SMALL_PARAMS)


def test_poseidon_matches_zk(checker) -> None:
    client, c = checker
    rng = random.Random(3)
    edge = [0, 1, P - 1, P, P + 5, 2**256 - 1]
    for _ in range(12):
        a, b, x, y = (rng.choice(edge) if rng.random() < 0.3 else rng.randrange(P) for _ in range(4))
        assert client.read("poseidon2", a, b, contract=c) == poseidon([a, b])
        assert client.read("poseidon4", a, b, x, y, contract=c) == poseidon([a, b, x, y])


@pytest.mark.parametrize("part_chunks", [1, PART_CHUNKS, 16])
def test_part_root_is_the_committed_root(checker, commitment, part_chunks: int) -> None:
    """Every part of a real commitment (the last one padded past the update's end) gives its root on chain."""
    client, c = checker
    domain = EvidenceDomain(chain_id=1, escrow=client.address, experiment_id=1)
    key, _ = new_round_key()
    wallet = WalletSigner(Wallet("0x" + "11" * 32).account, domain)
    parts = make_parts(commitment, "peer", 3, 0, key, part_chunks, wallet)
    for part in parts[:: max(1, len(parts) // 3)] + [parts[-1]]:
        leaves = [x for leaf in part.leaf_nodes() for x in leaf]
        path = [x for sib in part.path_nodes() for x in sib]
        first = part.first_chunk(part_chunks)
        root, norm, ok = client.read("partRoot", first, leaves, path, contract=c)
        assert (root, norm, ok) == (commitment.root, commitment.norm_sq, True)
        assert evidence_root(first, part.leaf_nodes(), part.path_nodes()) == (root, norm, True)
    bad = parts[0].leaf_nodes()
    bad[0] = (bad[0][0], bad[0][1] + 1)
    flat = [x for leaf in bad for x in leaf]
    root, norm, ok = client.read("partRoot", 0, flat, [x for s in parts[0].path_nodes() for x in s], contract=c)
    assert ok and (root, norm) != (commitment.root, commitment.norm_sq) and norm == commitment.norm_sq + 1


def test_signature_binds_every_field(checker, commitment) -> None:
    """signerOf recovers the wallet for exactly the escrow, experiment, round, stage, chunk, leaves and path it
    signed; a change of any of them (or of the chain id) recovers someone else."""
    client, c = checker
    wallet = Wallet("0x" + "22" * 32)
    escrow = "0x" + "ab" * 20
    chain_id = client.chain_id()
    domain = EvidenceDomain(chain_id=chain_id, escrow=client.w3.to_checksum_address(escrow), experiment_id=5)
    key, _ = new_round_key()
    part: Part = make_parts(commitment, "peer", 9, 1, key, PART_CHUNKS, WalletSigner(wallet.account, domain))[1]
    leaves = [x for leaf in part.leaf_nodes() for x in leaf]
    path = [x for sib in part.path_nodes() for x in sib]
    ev = (PART_CHUNKS, leaves, path, part.wallet_signature)
    signer = client.read("signerOf", domain.escrow, 5, 9, 1, ev, contract=c)
    assert signer == wallet.address
    changed = [
        (client.address, 5, 9, 1, ev),
        (domain.escrow, 6, 9, 1, ev),
        (domain.escrow, 5, 8, 1, ev),
        (domain.escrow, 5, 9, 0, ev),
        (domain.escrow, 5, 9, 1, (0, leaves, path, part.wallet_signature)),
        (domain.escrow, 5, 9, 1, (PART_CHUNKS, [leaves[0] ^ 1, *leaves[1:]], path, part.wallet_signature)),
        (domain.escrow, 5, 9, 1, (PART_CHUNKS, leaves, [*path[:-1], path[-1] + 1], part.wallet_signature)),
    ]
    for args in changed:
        assert client.read("signerOf", *args, contract=c) != wallet.address
    other_chain = EvidenceDomain(chain_id=chain_id + 1, escrow=domain.escrow, experiment_id=5)
    digest = evidence_digest(other_chain, 9, 1, PART_CHUNKS, part.leaf_nodes(), part.path_nodes())
    assert client.read("signerOf", domain.escrow, 5, 9, 1, (PART_CHUNKS, leaves, path, sign_digest(
        wallet.account, digest)), contract=c) != wallet.address
    assert client.read("signerOf", domain.escrow, 5, 9, 1, (PART_CHUNKS, leaves, path, b"\x01" * 10),
                       contract=c) == "0x" + "00" * 20


def test_python_evidence_mirrors_the_checker(commitment) -> None:
    """part_evidence: None for an honest part; the evidence for a part whose signed leaves do not give the root."""
    from swarm.rounds.parts import CommitRecord

    wallet = Wallet("0x" + "33" * 32)
    domain = EvidenceDomain(chain_id=31337, escrow="0x" + "cd" * 20, experiment_id=2)
    key, public = new_round_key()
    parts = make_parts(commitment, "peer", 4, 0, key, PART_CHUNKS, WalletSigner(wallet.account, domain))
    record = CommitRecord(peer_id="peer", round=4, stage=0, root=commitment.root, norm_sq=commitment.norm_sq,
                          numel=commitment.update.numel, num_chunks=commitment.num_chunks, part_key=public,
                          anchor_round=-1, anchor_digest=b"\0" * 32, wallet=wallet.address, chain_id=31337,
                          escrow=domain.escrow, chain_experiment=2)  # fmt: skip
    assert all(part_evidence(record, p, PART_CHUNKS) is None for p in parts)
    leaves = parts[1].leaf_nodes()
    leaves[2] = (leaves[2][0] + 1, leaves[2][1])
    lying = parts[1].wallet_signed(WalletSigner(wallet.account, domain), leaves, PART_CHUNKS).signed(key)
    ev = part_evidence(record, lying, PART_CHUNKS)
    assert ev is not None and ev[0] == PART_CHUNKS and ev[3] == lying.wallet_signature
    other = WalletSigner(Wallet("0x" + "44" * 32).account, domain)
    assert part_evidence(record, parts[1].wallet_signed(other, leaves, PART_CHUNKS), PART_CHUNKS) is None
