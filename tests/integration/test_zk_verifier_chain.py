"""The committed Solidity verifier (contracts/generated/ChunkVerifier.sol, built by swarm.chain's solc-js build)
deployed on a real anvil: it accepts an honest proof made with the reproducible development keys, rejects tampering."""

from __future__ import annotations

import pytest
import torch
from web3 import Web3

from protocol.sampling import contribute_chunk
from swarm.chain.build import load_artifact
from swarm.chain.devchain import DevChain
from zk.chunk_prover import ChunkProver
from zk.circuit import DEFAULT_PARAMS
from zk.commit import commit_update
from zk.prover import ZkWorker
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

PEER = "0x" + "c3" * 20


@pytest.fixture(scope="module")
def honest():
    """A production-shape proof (chunk 1024, depth 20) of a 3,000-value update, its bound and the off-chain verdict."""
    torch.manual_seed(5)
    commitment = commit_update(quantize_update(torch.randn(3000) * 0.01), DEFAULT_PARAMS)
    bound = commitment.norm_sq + 1
    with ZkWorker(timeout=600) as worker:
        prover = ChunkProver(worker, DEFAULT_PARAMS)  # the dev entropy reproduces the committed verifier's keys
        c0 = contribute_chunk(commitment.root, PEER, commitment.num_chunks)
        proof = prover.prove(commitment, experiment=1, round=9, stage=0, peer=PEER, chunk=c0, norm_bound=bound)
        assert prover.verify(proof, bound)
    return proof, bound


@pytest.fixture(scope="module")
def verifier():
    artifact = load_artifact("ChunkVerifier")
    with DevChain(accounts=1) as chain:
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        me = w3.eth.accounts[0]
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = w3.eth.wait_for_transaction_receipt(factory.constructor().transact({"from": me}), timeout=30)
        assert receipt.status == 1
        yield w3.eth.contract(address=receipt.contractAddress, abi=artifact.abi)


def test_exported_verifier_on_anvil_accepts_an_honest_proof(verifier, honest):
    proof, bound = honest
    assert verifier.functions.verifyTx(proof.proof.abi_tuple(), proof.public_inputs(bound)).call() is True


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_exported_verifier_rejects_any_changed_public_input(verifier, honest, index):
    proof, bound = honest
    inputs = proof.public_inputs(bound)
    inputs[index] += 1
    assert verifier.functions.verifyTx(proof.proof.abi_tuple(), inputs).call() is False


def test_exported_verifier_rejects_a_tampered_proof(verifier, honest):
    proof, bound = honest
    a, b, c = proof.proof.abi_tuple()
    swapped = (c, b, a)  # valid curve points, wrong proof
    assert verifier.functions.verifyTx(swapped, proof.public_inputs(bound)).call() is False
