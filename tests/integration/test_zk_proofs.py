"""Chunk proofs through real zokrates-js: honest updates prove and verify, cheats cannot be proven or replayed."""

from __future__ import annotations

import asyncio
from multiprocessing import resource_tracker

import numpy as np
import pytest
import torch

from protocol.contribution import FIELD_MODULUS, Contribution
from protocol.sampling import challenged_chunks, contribute_chunk
from zk import leaves
from zk import poseidon as poseidon_module
from zk.background import BackgroundProver
from zk.chunk_prover import ChunkProver
from zk.circuit import SMALL_PARAMS as PARAMS
from zk.commit import ChunkOpening, Commitment, MerkleTree, commit_update, leaf_of, root_of
from zk.poseidon import poseidon, poseidon_python
from zk.prover import ProofError, ZkWorker
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PEER = "0x" + "5a" * 20
CLAIM = {"experiment": 7, "round": 41, "stage": 2, "peer": PEER}


@pytest.fixture(scope="module")
def worker():
    with ZkWorker() as w:
        yield w


@pytest.fixture(scope="module")
def prover(worker):
    return ChunkProver(worker, PARAMS)  # compiles and sets up once (cached under zk/keys/<circuit id>/)


@pytest.fixture(scope="module")
def commitment() -> Commitment:
    torch.manual_seed(3)
    return commit_update(quantize_update(torch.randn(900) * 0.02, PARAMS.block), PARAMS)


@pytest.fixture(scope="module")
def bound(commitment) -> int:
    return 2 * commitment.norm_sq


@pytest.fixture(scope="module")
def honest(prover, commitment, bound) -> Contribution:
    c0 = contribute_chunk(commitment.root, PEER, commitment.num_chunks)
    return prover.prove(commitment, chunk=c0, norm_bound=bound, **CLAIM)


def test_native_and_python_poseidon_equal_the_circuit_stdlib(worker):
    """Test vectors made by the circuit itself (zokrates-js computing the stdlib's poseidon), random and edge."""
    rng = np.random.default_rng(0)
    edges = [0, 1, FIELD_MODULUS - 1, 2**248 - 1, 2**128]
    for n in (1, 2, 4, 6):  # the widths the commitment uses: root, inner node, leaf sponge (and 1)
        for xs in ([int.from_bytes(rng.bytes(32), "big") % FIELD_MODULUS for _ in range(n)],
                   [edges[(k + n) % len(edges)] for k in range(n)]):
            expected = int(worker.request("poseidon", inputs=[str(x) for x in xs])["hash"])
            assert poseidon(xs) == poseidon_python(xs) == expected


def test_honest_update_proves_and_verifies(prover, honest, commitment, bound):
    assert honest.proof is not None and honest.root == commitment.root and honest.norm_sq == commitment.norm_sq
    assert honest.chunk == contribute_chunk(commitment.root, PEER, commitment.num_chunks)
    assert prover.verify(honest, bound)
    assert prover.verify(Contribution.from_msgpack(honest.to_msgpack()), bound)


@pytest.mark.parametrize("change", [
    {"root": 12345}, {"round": 42}, {"stage": 3}, {"peer": "0x" + "5b" * 20}, {"norm_sq": 1}, {"experiment": 0},
])
def test_proof_with_a_public_input_changed_fails(prover, honest, bound, change):
    forged = honest.model_copy(update=change)
    if "experiment" in change:  # the experiment is not in the statement: the contract binds it by storage
        assert prover.verify(forged, bound)
    else:
        assert not prover.verify(forged, bound)


def test_proof_with_another_bound_fails(prover, honest, bound):
    assert not prover.verify(honest, bound + 1)


def test_proof_for_one_chunk_does_not_pass_as_anothers(prover, honest, commitment, bound):
    other = (honest.chunk + 1) % commitment.num_chunks
    assert not prover.verify(honest.model_copy(update={"chunk": other}), bound)


def test_python_and_circuit_commitments_agree_on_every_chunk_kind(prover, commitment, bound):
    last = commitment.num_chunks - 1  # zero-padded, sits next to an empty subtree
    proof = prover.prove(commitment, chunk=last, norm_bound=bound, **CLAIM)
    assert prover.verify(proof, bound)


def test_norm_over_the_bound_cannot_be_proven(prover, honest, commitment):
    with pytest.raises(ProofError, match="over the bound"):
        prover.prove(commitment, chunk=0, norm_bound=commitment.norm_sq - 1, **CLAIM)
    with pytest.raises(ProofError, match="does not hold"):  # past the Python check: the circuit refuses too
        prover.prove_opening(honest, commitment.opening(honest.chunk), commitment.norm_sq - 1)


def _single_leaf_claim(values: np.ndarray, scales: list[int]) -> tuple[Contribution, ChunkOpening]:
    """A cheater's own commitment to one chunk with these values and scales (Python computes it willingly)."""
    tree = MerkleTree.build([leaf_of(values, scales, PARAMS)], PARAMS.depth)
    path = tree.path(0)
    claim = Contribution(**CLAIM, root=root_of(tree.top), norm_sq=tree.top[1], chunk=0)
    opening = ChunkOpening(chunk=0, values=values.tolist(), scales=scales, sibling_hashes=[h for h, _ in path],
                           sibling_norms=[n for _, n in path])
    return claim, opening


def test_value_out_of_range_cannot_be_proven(prover):
    values = np.zeros(PARAMS.chunk, dtype=np.int16)
    values[5] = 128  # carried as byte 255, i.e. the code -128 or 128: outside [-127, 127]
    claim, opening = _single_leaf_claim(values, [1000, 1000])
    with pytest.raises(ProofError, match="does not hold"):
        prover.prove_opening(claim, opening, 1 << 120)


def test_scale_over_the_maximum_cannot_be_proven(prover):
    claim, opening = _single_leaf_claim(np.ones(PARAMS.chunk, dtype=np.int16), [PARAMS.scale_max + 1, 1])
    with pytest.raises(ProofError, match="does not hold"):
        prover.prove_opening(claim, opening, 1 << 120)


def test_negative_norm_in_a_sibling_cannot_hide_the_total(prover):
    """A subtree claiming norm p - n would cancel n in the field sum: the range check on siblings refuses it."""
    big = np.full(PARAMS.chunk, 100, dtype=np.int16)
    leaf = leaf_of(big, [1 << 20, 1 << 20], PARAMS)
    liar = (leaf[0], FIELD_MODULUS - leaf[1] + 5)  # the second leaf "has" norm -n + 5
    tree = MerkleTree.build([leaf, liar], PARAMS.depth)
    top_norm = tree.top[1] % FIELD_MODULUS
    assert top_norm == 5
    path = tree.path(0)
    claim = Contribution(**CLAIM, root=poseidon([tree.top[0], top_norm]), norm_sq=top_norm, chunk=0)
    opening = ChunkOpening(chunk=0, values=big.tolist(), scales=[1 << 20, 1 << 20],
                           sibling_hashes=[h for h, _ in path], sibling_norms=[n % FIELD_MODULUS for _, n in path])
    with pytest.raises(ProofError, match="does not hold"):
        prover.prove_opening(claim, opening, 1000)


def test_chunk_index_beyond_the_tree_cannot_be_proven(prover, honest, commitment, bound):
    beyond = honest.model_copy(update={"chunk": honest.chunk + PARAMS.max_chunks})
    with pytest.raises(ProofError, match="does not hold"):
        prover.prove_opening(beyond, commitment.opening(honest.chunk), bound)


def test_worker_still_proves_after_refusing_false_statements(prover, commitment, bound):
    """Runs after the refusals above, on the same worker process."""
    pid = prover.worker.pid
    with pytest.raises(ProofError):
        prover.prove_opening(Contribution(**CLAIM, root=1, norm_sq=1), commitment.opening(1), bound)
    proof = prover.prove(commitment, chunk=1, norm_bound=bound, **CLAIM)
    assert prover.verify(proof, bound) and prover.worker.pid == pid


def test_background_prover_proves_while_the_caller_keeps_training(prover, commitment, bound):
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    chunks = [*challenged_chunks(b"\x11" * 32, PEER, 2, 2, commitment.num_chunks), 0, 0]
    with BackgroundProver(PARAMS, workers=2) as bg:  # two provers share the chunks of the job
        future = bg.submit(commitment, chunks=chunks, norm_bound=bound, **CLAIM)
        steps = 0
        while not future.done():  # the training loop goes on while the proof is made
            loss = model(torch.randn(32, 64)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        proofs = future.result()
    assert steps > 0
    assert [p.chunk for p in proofs] == list(dict.fromkeys(chunks))
    assert all(prover.verify(p, bound) for p in proofs)


def test_background_prover_reports_a_failed_job_and_shutdown_cancels_the_queue(commitment):
    with BackgroundProver(PARAMS) as bg:
        bad = bg.submit(commitment, chunks=[0], norm_bound=commitment.norm_sq - 1, **CLAIM)
        with pytest.raises(ProofError, match="over the bound"):
            bad.result(timeout=60)
        with pytest.raises(ProofError, match="over the bound"):  # the same through asyncio
            asyncio.run(bg.prove_async(commitment, chunks=[1], norm_bound=commitment.norm_sq - 1, **CLAIM))
        queued = [bg.submit(commitment, chunks=[i], norm_bound=commitment.norm_sq, **CLAIM) for i in range(3)]
    assert all(f.done() for f in queued)  # proved, or failed with ProofError by the shutdown: none is left hanging
    for f in queued:
        assert f.exception() is None or isinstance(f.exception(), ProofError)
    with pytest.raises(ProofError, match="not running"):
        bg.submit(commitment, chunks=[0], norm_bound=commitment.norm_sq, **CLAIM)


def test_commit_hashed_in_a_process_pool_equals_the_serial_commit(monkeypatch):
    """Without the native extension `processes=n` is a pool of spawned processes (with it, threads: unit tests)."""
    torch.manual_seed(8)
    q = quantize_update(torch.randn(PARAMS.chunk * 70) * 0.01, PARAMS.block)  # 70 chunks: over the pool minimum
    serial = commit_update(q, PARAMS)
    monkeypatch.setattr(leaves, "_native_fits", lambda scales: False)
    monkeypatch.setattr(poseidon_module, "_native", None)
    poseidon_module._native_ready.cache_clear()
    try:
        pooled = commit_update(q, PARAMS, processes=2)
    finally:  # a spawn pool leaves multiprocessing's resource tracker running until we exit: stop it now
        resource_tracker._resource_tracker._stop()
        poseidon_module._native_ready.cache_clear()
    assert (pooled.root, pooled.norm_sq, pooled.tree.levels[0]) == (serial.root, serial.norm_sq, serial.tree.levels[0])
