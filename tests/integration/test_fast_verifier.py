"""zk/fast_verifier.py's verifiers on a real anvil against the ZoKrates-exported ones of the same keys, with real
proofs: the production chunk circuit (zk's prover) and the stand-in circuit (through the escrow too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3RPCError

from protocol.contribution import Contribution
from protocol.sampling import contribute_chunk
from swarm.chain import DevChain, RevertError
from swarm.chain.build import load_artifact
from swarm.chain.standin import STANDIN_VERIFIER, prove_standin
from swarm.chain.testing import EscrowWorld
from zk.chunk_prover import ChunkProver
from zk.circuit import DEFAULT_PARAMS
from zk.commit import commit_update
from zk.fast_verifier import (
    BASE_FIELD,
    FAST_VERIFIER_PATH,
    SCALAR_FIELD,
    load_verification_key,
    render_fast_verifier,
)
from zk.keys import keys_dir
from zk.prover import ZkWorker
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

FAST_STANDIN = "FastStandInChunkVerifier"
PAIRS = {"chunk": ("ChunkVerifier", "FastChunkVerifier"), "standin": (STANDIN_VERIFIER, FAST_STANDIN)}
PEER = "0x" + "c4" * 20
STANDIN_BOUND = 10**6


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with DevChain(accounts=3) as c:
        yield c


@pytest.fixture(scope="module")
def deployed(chain: DevChain) -> dict[str, Contract]:
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    me = w3.eth.accounts[0]
    contracts = {}
    for name in {n for pair in PAIRS.values() for n in pair}:
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = w3.eth.wait_for_transaction_receipt(
            factory.constructor().transact({"from": me}), timeout=30
        )
        assert receipt.status == 1
        contracts[name] = w3.eth.contract(address=receipt.contractAddress, abi=artifact.abi)
    return contracts


@pytest.fixture(scope="module")
def chunk_proof() -> tuple[Contribution, int]:
    """A production-shape proof (chunk 1024, depth 20) made with the committed development keys."""
    torch.manual_seed(6)
    commitment = commit_update(quantize_update(torch.randn(1024) * 0.01), DEFAULT_PARAMS)
    bound = commitment.norm_sq + 1
    with ZkWorker(timeout=600) as worker:
        prover = ChunkProver(worker, DEFAULT_PARAMS)  # the dev entropy reproduces the committed keys
        c0 = contribute_chunk(commitment.root, PEER, commitment.num_chunks)
        proof = prover.prove(
            commitment, experiment=2, round=3, stage=1, peer=PEER, chunk=c0, norm_bound=bound
        )
    return proof, bound


@pytest.fixture(scope="module")
def standin_proof() -> tuple[Contribution, int]:
    claim = Contribution(experiment=1, round=4, stage=0, peer=PEER, root=987_654_321, norm_sq=500, chunk=0)
    return prove_standin([claim], STANDIN_BOUND)[0], STANDIN_BOUND


@pytest.fixture(params=sorted(PAIRS))
def case(request, deployed, chunk_proof, standin_proof) -> tuple[Contract, Contract, tuple, list[int]]:
    """(ZoKrates' verifier, fast verifier, honest proof tuple, honest public inputs) for one circuit."""
    exported, fast = (deployed[n] for n in PAIRS[request.param])
    proof, bound = chunk_proof if request.param == "chunk" else standin_proof
    return exported, fast, proof.proof.abi_tuple(), proof.public_inputs(bound)


def verdicts(case, proof: tuple, inputs: list[int]) -> tuple[bool | str, bool | str]:
    """Each verifier's answer: True/False, or "revert"."""
    result = []
    for verifier in case[:2]:
        try:
            result.append(verifier.functions.verifyTx(proof, inputs).call())
        except ContractLogicError:
            result.append("revert")
        except Web3RPCError as exc:  # ZoKrates' verifier ends a failed precompile call with `invalid()`
            if "InvalidFEOpcode" not in str(exc):
                raise
            result.append("revert")
    return result[0], result[1]


def without_internal_types(abi: list[dict]) -> list:
    strip = lambda v: (
        {k: strip(x) for k, x in v.items() if k != "internalType"} if isinstance(v, dict)
        else [strip(x) for x in v] if isinstance(v, list) else v
    )  # fmt: skip
    return strip(abi)


def test_committed_fast_verifier_is_generated_from_the_current_keys(chunk_proof) -> None:
    key = keys_dir(DEFAULT_PARAMS) / "verification.key.json"
    expected = render_fast_verifier(
        load_verification_key(key), origin=f"zk/keys/{key.parent.name}/{key.name}"
    )
    assert FAST_VERIFIER_PATH.read_text() == expected, (
        "stale: run `python -m zk setup` and `node contracts/build.mjs`"
    )


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_fast_verifier_has_the_exported_verifiers_abi(pair: str) -> None:
    exported, fast = (load_artifact(n).abi for n in PAIRS[pair])
    assert without_internal_types(fast) == without_internal_types(exported)


def test_both_accept_the_honest_proof(case) -> None:
    _, _, proof, inputs = case
    assert verdicts(case, proof, inputs) == (True, True)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_both_reject_any_changed_public_input(case, index: int) -> None:
    _, _, proof, inputs = case
    changed = list(inputs)
    changed[index] += 1
    assert verdicts(case, proof, changed) == (False, False)


def test_both_reject_a_proof_of_valid_points_in_the_wrong_places(case) -> None:
    _, _, (a, b, c), inputs = case
    assert verdicts(case, (c, b, a), inputs) == (False, False)


@pytest.mark.parametrize("point", ["a", "b", "c"])
def test_both_revert_on_a_proof_point_off_its_curve(case, point: str) -> None:
    _, _, (a, b, c), inputs = case
    tampered = {
        "a": ((a[0], (a[1] + 1) % BASE_FIELD), b, c),
        "b": (a, (b[0], (b[1][0], (b[1][1] + 1) % BASE_FIELD)), c),
        "c": (a, b, (c[0], (c[1] + 1) % BASE_FIELD)),
    }[point]
    assert verdicts(case, tampered, inputs) == ("revert", "revert")


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_an_input_at_or_above_the_field_order_is_rejected(case, index: int) -> None:
    """input + R is the same field element: accepting it would make every statement malleable."""
    _, _, proof, inputs = case
    aliased = list(inputs)
    aliased[index] += SCALAR_FIELD
    assert verdicts(case, proof, aliased) == ("revert", False)  # ZoKrates' `require` reverts; ours says no


def test_a_non_canonical_c_passes_zokrates_verifier_but_not_the_fast_one(case) -> None:
    """ZoKrates' verifier reduces C.y mod q before negating it; ours hands C to the precompile untouched."""
    _, _, (a, b, c), inputs = case
    if c[1] + BASE_FIELD >= 2**256:
        pytest.skip("this proof's C.y has no second 256-bit encoding")
    assert verdicts(case, (a, b, (c[0], c[1] + BASE_FIELD)), inputs) == (True, "revert")


def test_gas_estimate_of_the_fast_verifier_is_enough_to_verify(case) -> None:
    """A verifier that returned false when the pairing ran out of gas would make estimates too low."""
    _, fast, proof, inputs = case
    estimate = fast.functions.verifyTx(proof, inputs).estimate_gas()
    assert fast.functions.verifyTx(proof, inputs).call({"gas": estimate}) is True


def test_escrow_with_the_fast_verifier_accepts_an_honest_contribution_and_rejects_a_forged_one(chain) -> None:
    snapshot = chain.rpc("evm_snapshot", [])
    try:
        world = EscrowWorld(chain, verifier_contract=FAST_STANDIN)
        exp = world.create_experiment(reward_per_round=1_000, pool=5_000)
        honest_peer, forger = world.peers[:2]
        for p in (honest_peer, forger):
            p.stake(100)
        [honest] = world.prove([world.contribution(honest_peer, exp, 0, 0, 41)], exp)
        assert honest_peer.contribute(honest)["status"] == 1
        [other] = world.prove([world.contribution(forger, exp, 0, 0, 42)], exp)
        forged = other.model_copy(update={"root": 43})  # the proof is for root 42
        with pytest.raises(RevertError, match=r"\bInvalidProof\b"):
            forger.contribute(forged)
    finally:
        chain.rpc("evm_revert", [snapshot])
