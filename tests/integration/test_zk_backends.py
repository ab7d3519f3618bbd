"""The groth16py backend (native arkworks) against zokrates-js on the same circuit: its proofs verify with
zokrates-js's verifier off-chain and with zk/fast_verifier.py's contract on a real anvil, tampered public inputs
fail, and both backends agree on what they accept. groth16py's development keys ARE zokrates-js's (converted,
zk/zokrates_keys.py), so each backend accepts the other's proofs; groth16py's own fresh keys (`entropy=None`)
accept only their own."""

from __future__ import annotations

import pytest
import torch
from web3 import Web3

from protocol.contribution import Contribution
from swarm.chain.devchain import DevChain
from zk.background import BackgroundProver
from zk.chunk_prover import ChunkProver
from zk.circuit import SMALL_PARAMS as PARAMS
from zk.commit import Commitment, commit_update
from zk.fast_verifier import compile_fast_verifier
from zk.prover import ProofError, ZkWorker
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

PEER = "0x" + "b7" * 20
CLAIM = {"experiment": 3, "round": 12, "stage": 1, "peer": PEER}
FAST_VERIFIER_GAS = 236_757  # FastChunkVerifier.verifyTx, ZoKrates' dev keys (measured on the dev machine before this backend); varies with calldata


@pytest.fixture(scope="module")
def worker():
    with ZkWorker(timeout=600) as w:
        yield w


@pytest.fixture(scope="module")
def provers(worker) -> dict[str, ChunkProver]:
    """zokrates-js and groth16py with the same development keys, and groth16py with its own fresh keys."""
    return {"zokrates": ChunkProver(worker, PARAMS), "groth16py": ChunkProver(worker, PARAMS, backend="groth16py"),
            "private": ChunkProver(worker, PARAMS, backend="groth16py", entropy=None)}


@pytest.fixture(scope="module")
def commitment() -> Commitment:
    torch.manual_seed(11)
    return commit_update(quantize_update(torch.randn(700) * 0.02, PARAMS.block), PARAMS)


@pytest.fixture(scope="module")
def proofs(provers, commitment) -> dict[str, Contribution]:
    bound = commitment.norm_sq
    return {b: p.prove(commitment, chunk=2, norm_bound=bound, **CLAIM) for b, p in provers.items()}


def changed_inputs(proof: Contribution, bound: int) -> list[tuple[str, Contribution, int]]:
    return [("context", proof.model_copy(update={"round": proof.round + 1}), bound),
            ("root", proof.model_copy(update={"root": proof.root + 1}), bound),
            ("norm_sq", proof.model_copy(update={"norm_sq": proof.norm_sq - 1}), bound),
            ("norm_bound", proof, bound + 1),
            ("chunk", proof.model_copy(update={"chunk": proof.chunk + 1}), bound)]


def test_groth16py_proof_verifies_with_zokrates_js_verifier(provers, proofs, commitment):
    proof = proofs["groth16py"]
    assert proof.proof is not None and proof.root == commitment.root
    assert provers["groth16py"].verify(proof, commitment.norm_sq)
    assert set(provers["groth16py"].last_timing) >= {"witness_s", "prove_s", "prove_cpu_s"}


@pytest.mark.parametrize("backend", ["zokrates", "groth16py", "private"])
def test_both_backends_agree_on_honest_and_tampered_public_inputs(provers, proofs, commitment, backend):
    bound = commitment.norm_sq
    prover = provers[backend]
    verdicts = [prover.verify(proofs[backend], bound)]
    verdicts += [prover.verify(c, b) for _, c, b in changed_inputs(proofs[backend], bound)]
    assert verdicts == [True] + [False] * 5


def test_groth16py_proves_with_zokrates_js_dev_keys_and_fresh_keys_are_other_keys(provers, proofs, commitment):
    bound = commitment.norm_sq
    assert provers["groth16py"].verification_key == provers["zokrates"].verification_key
    assert provers["zokrates"].verify(proofs["groth16py"], bound)
    assert provers["groth16py"].verify(proofs["zokrates"], bound)
    assert not provers["zokrates"].verify(proofs["private"], bound)
    assert not provers["private"].verify(proofs["zokrates"], bound)


def test_both_backends_refuse_a_false_statement(provers, commitment):
    opening = commitment.opening(1)
    bad = opening.model_copy(update={"values": [128, *opening.values[1:]]})  # out of range
    claim = Contribution(**CLAIM, root=commitment.root, norm_sq=commitment.norm_sq, chunk=1)
    for prover in provers.values():
        with pytest.raises(ProofError, match="does not hold"):
            prover.prove_opening(claim, bad, commitment.norm_sq)


def test_background_prover_with_the_fast_backend_and_two_workers(commitment):
    with BackgroundProver(PARAMS, backend="groth16py", workers=2) as bg:
        future = bg.submit(commitment, chunks=[0, 1, 2, 3], norm_bound=commitment.norm_sq, **CLAIM)
        proofs = future.result(timeout=300)
    assert [p.chunk for p in proofs] == [0, 1, 2, 3]
    with ZkWorker() as w:
        prover = ChunkProver(w, PARAMS, backend="groth16py", setup=False)
        assert all(prover.verify(p, commitment.norm_sq) for p in proofs)


def execution_gas(call) -> int:
    """A call's gas estimate less the transaction's intrinsic cost (21,000 + 4/16 gas per zero/non-zero byte)."""
    data = bytes.fromhex(call._encode_transaction_data()[2:])
    return call.estimate_gas() - 21_000 - sum(16 if b else 4 for b in data)


def test_groth16py_proofs_on_anvil_through_the_fast_verifier(worker, provers, proofs, commitment):
    """zk/fast_verifier.py's contract for each backend's keys, compiled by solc-js, deployed on anvil."""
    bound = commitment.norm_sq
    with DevChain(accounts=1) as chain:
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        verifiers = {}
        for backend, prover in provers.items():
            artifact = compile_fast_verifier(worker, prover.dir / "verification.key.json")
            factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
            receipt = w3.eth.wait_for_transaction_receipt(
                factory.constructor().transact({"from": w3.eth.accounts[0]}), timeout=30)
            verifiers[backend] = w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])
        call = lambda b, c, n: verifiers[b].functions.verifyTx(c.proof.abi_tuple(), c.public_inputs(n))
        proof = proofs["groth16py"]
        assert call("zokrates", proof, bound).call() is True  # groth16py's proof, the dev keys' verifier
        assert [call("zokrates", c, b).call() for _, c, b in changed_inputs(proof, bound)] == [False] * 5
        assert call("zokrates", proofs["zokrates"], bound).call() is True
        assert call("private", proofs["private"], bound).call() is True
        assert call("private", proofs["zokrates"], bound).call() is False  # other keys
        assert call("zokrates", proofs["private"], bound).call() is False
        # same contract code, other constants: the gas is the same but for the calldata bytes of the proof
        fast, reference = (execution_gas(call(b, proofs[b], bound)) for b in ("private", "zokrates"))
        assert fast <= reference and call("zokrates", proof, bound).estimate_gas() < FAST_VERIFIER_GAS + 1_000


def test_a_wrong_variable_order_is_caught_before_any_key_is_written(worker, monkeypatch, tmp_path):
    """zk/zokrates_keys.py proves and verifies one statement with the converted key before writing it."""
    from zk import zokrates_keys
    from zk.keys import keys_dir

    monkeypatch.setattr(zokrates_keys, "ark_order", lambda wires, public, args, constraints: list(range(wires)))
    with pytest.raises(ProofError, match="does not verify"):
        zokrates_keys.convert(keys_dir(PARAMS), tmp_path / "out", PARAMS, worker)
    assert not (tmp_path / "out").exists()
