"""Commitment, Merkle openings, Poseidon vectors, chunk sampling and circuit shapes (no processes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eth_abi import encode
from eth_hash.auto import keccak

from protocol.contribution import FIELD_MODULUS
from protocol.sampling import SamplingError, challenged_chunks, contribute_chunk
from zk.circuit import CircuitParams
from zk.commit import CommitError, MerkleTree, commit_update, leaf_of, node, root_of, verify_opening
from zk.poseidon import poseidon, poseidon_reference
from zk.quantize import quantize_update

PARAMS = CircuitParams(chunk=128, block=64, depth=6)
PEER = "0x" + "ab" * 20


@pytest.fixture(scope="module")
def commitment():
    torch.manual_seed(0)
    return commit_update(quantize_update(torch.randn(1000) * 0.01, PARAMS.block), PARAMS)


def test_poseidon_matches_circomlib_and_zokrates_vector():
    # poseidon([1, 2]) as circomlib and ZoKrates' stdlib compute it (checked against the circuit in integration).
    assert poseidon([1, 2]) == 7853200120776062878684798364095072458815029376092732009249414926327459813530
    assert 0 <= poseidon([FIELD_MODULUS - 1] * 6) < FIELD_MODULUS
    with pytest.raises(ValueError, match="1 to 6"):
        poseidon([1] * 7)


def test_root_fixes_the_total_norm_which_is_the_update_norm(commitment):
    q = commitment.update
    assert commitment.norm_sq == q.norm_sq() > 0
    assert commitment.num_chunks == 8  # ceil(1000 / 128)
    assert commitment.root == root_of(commitment.tree.top)
    assert sum(n for _, n in commitment.tree.levels[0]) == commitment.norm_sq


def test_every_chunk_opens_against_the_root(commitment):
    for i in range(commitment.num_chunks):
        assert verify_opening(commitment.root, commitment.norm_sq, commitment.opening(i), PARAMS)


@pytest.mark.parametrize("field,change", [
    ("values", lambda o: {"values": [o.values[0] + 1, *o.values[1:]]}),
    ("scales", lambda o: {"scales": [o.scales[0] + 1, *o.scales[1:]]}),
    ("sibling_hashes", lambda o: {"sibling_hashes": [o.sibling_hashes[0] + 1, *o.sibling_hashes[1:]]}),
    ("sibling_norms", lambda o: {"sibling_norms": [o.sibling_norms[0] + 1, *o.sibling_norms[1:]]}),
    ("chunk", lambda o: {"chunk": o.chunk + 1}),
])
def test_a_changed_opening_does_not_open(commitment, field, change):
    o = commitment.opening(2)
    assert not verify_opening(commitment.root, commitment.norm_sq, o.model_copy(update=change(o)), PARAMS)


def test_wrong_norm_or_out_of_range_data_does_not_open(commitment):
    o = commitment.opening(7)  # the last chunk: zero-padded from 1000 to 1024 values
    assert o.values[-1] == 0 and len(o.values) == PARAMS.chunk
    assert not verify_opening(commitment.root, commitment.norm_sq + 1, o, PARAMS)
    assert not verify_opening(commitment.root, commitment.norm_sq, o.model_copy(update={"values": [-128] * 128}),
                              PARAMS)


def test_merkle_path_recomputes_the_top_with_empty_subtrees():
    leaves = [leaf_of(np.full(128, i, dtype=np.int8), [i + 1, i + 2], PARAMS) for i in range(3)]
    tree = MerkleTree.build(leaves, PARAMS.depth)
    cur, index = leaves[2], 2
    for sib in tree.path(2):
        cur = node(sib, cur) if index & 1 else node(cur, sib)
        index >>= 1
    assert cur == tree.top and cur[1] == sum(n for _, n in leaves)


def test_update_too_large_for_the_tree_or_wrong_block_size_is_refused():
    small = CircuitParams(chunk=64, block=64, depth=1)
    with pytest.raises(CommitError, match="do not fit"):
        commit_update(quantize_update(torch.randn(200), 64), small)
    with pytest.raises(CommitError, match="block size"):
        commit_update(quantize_update(torch.randn(200), 128), small)


def test_opening_out_of_range_chunk_raises(commitment):
    with pytest.raises(CommitError, match="out of range"):
        commitment.opening(commitment.num_chunks)


def test_contribute_chunk_is_the_protocol_keccak_formula():
    root = 123456789
    expected = int.from_bytes(keccak(encode(["uint256", "address"], [root, PEER])), "big") % 97
    assert contribute_chunk(root, PEER, 97) == expected
    assert contribute_chunk(root, PEER.upper().replace("0X", "0x"), 97) == expected


def test_challenged_chunks_follow_the_seed_and_cover_the_range():
    seed = keccak(b"round seed")
    cs = challenged_chunks(seed, PEER, 3, 200, 10)
    assert cs == challenged_chunks(int.from_bytes(seed, "big"), PEER, 3, 200, 10)
    assert set(cs) == set(range(10))
    assert cs[5] == int.from_bytes(keccak(encode(["bytes32", "address", "uint256", "uint256"],
                                                 [seed, PEER, 3, 5])), "big") % 10
    assert cs != challenged_chunks(seed, PEER, 4, 200, 10)
    with pytest.raises(SamplingError):
        challenged_chunks(b"short", PEER, 3, 1, 10)


def test_circuit_source_carries_its_shape_and_id():
    src = PARAMS.source()
    assert "const u32 CHUNK = 128;" in src and "const u32 DEPTH = 6;" in src
    assert PARAMS.circuit_id != CircuitParams(chunk=128, block=64, depth=7).circuit_id
    with pytest.raises(ValueError, match="divide"):
        CircuitParams(chunk=96, block=64)


@pytest.mark.parametrize("n", range(1, 7))
def test_fast_poseidon_equals_the_round_by_round_definition(n):
    rng = np.random.default_rng(n)
    for _ in range(10):
        xs = [int.from_bytes(rng.bytes(32), "big") % FIELD_MODULUS for _ in range(n)]
        assert poseidon(xs) == poseidon_reference(xs)
