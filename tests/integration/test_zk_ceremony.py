"""The multi-party setup (`python -m zk ceremony`, zk/ceremony.py) on a small chunk circuit: local phase 1, three
phase-2 contributors passing files, a public beacon; the transcript verifies, the final keys prove chunks that
verify off-chain and on anvil, and a tampered contribution is rejected with a clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from web3 import Web3

from swarm.chain.devchain import DevChain
from zk import ceremony
from zk.__main__ import main as zk_cli
from zk.chunk_prover import ChunkProver
from zk.circuit import CircuitParams
from zk.commit import commit_update
from zk.keys import KEYS_ROOT
from zk.prover import ZkWorker
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PARAMS = CircuitParams(chunk=64, block=64, depth=2)  # ~2.6k constraints: powers of tau of 2^12
POWER = 12
# A local phase 1 is circuit-independent and its `prepare phase2` takes minutes: made once per machine (the
# first run pays it), then imported as a deployment imports a public transcript (`init(..., ptau=...)`).
PHASE1_CACHE = KEYS_ROOT / "ptau" / f"local_{POWER}.ptau"
PEER = "0x" + "3c" * 20
CLAIM = {"experiment": 5, "round": 2, "stage": 0, "peer": PEER}
CONTRIBUTORS = ("alice", "bob", "carol")
BEACON = "5c" * 32


@pytest.fixture(scope="module")
def transcript(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("ceremony")
    if not PHASE1_CACHE.is_file():
        PHASE1_CACHE.parent.mkdir(parents=True, exist_ok=True)
        partial = PHASE1_CACHE.with_suffix(".partial.ptau")
        records = ceremony.local_phase1(partial, POWER, contributions=2)
        assert [r["name"] for r in records] == ["local phase-1 contribution 1", "local phase-1 contribution 2"]
        assert all(len(r["hash"]) == 128 for r in records)
        partial.rename(PHASE1_CACHE)
    zkeys = [ceremony.init(d, PARAMS, ptau=PHASE1_CACHE)]
    assert json.loads((d / "ceremony.json").read_text())["power"] <= POWER
    hashes = []
    for i, name in enumerate(CONTRIBUTORS, start=1):  # each would run on its own machine: only files pass
        zkeys.append(d / f"circuit_{i:04d}.zkey")
        hashes.append(ceremony.contribute(zkeys[-2], zkeys[-1], name))
    final = d / "circuit_final.zkey"
    # the beacon step through the CLI, as a coordinator would run it
    assert zk_cli(["ceremony", "beacon", str(zkeys[-1]), str(final), "--hash", BEACON]) == 0
    return {"dir": d, "zkeys": zkeys, "final": final, "hashes": hashes}


@pytest.fixture(scope="module")
def keys(transcript, tmp_path_factory) -> Path:
    return ceremony.finalize(transcript["dir"], transcript["final"], tmp_path_factory.mktemp("keys"))


def test_every_contribution_and_the_beacon_verify(transcript):
    report = ceremony.verify(transcript["dir"], transcript["final"])
    for name in CONTRIBUTORS:
        assert name in report
    assert "final beacon" in report
    assert all(len(h) == 128 and h in report.replace("\n", "").replace(" ", "").replace("\t", "")
               for h in transcript["hashes"])


def test_the_final_keys_prove_chunks_that_verify_off_and_on_chain(keys):
    torch.manual_seed(8)
    commitment = commit_update(quantize_update(torch.randn(200) * 0.01, PARAMS.block), PARAMS)
    bound = commitment.norm_sq
    with ZkWorker(timeout=600) as worker:
        prover = ChunkProver(worker, PARAMS, backend="groth16py", key_dir=keys)
        proof = prover.prove(commitment, chunk=1, norm_bound=bound, **CLAIM)
        assert prover.verify(proof, bound) and not prover.verify(proof, bound + 1)
        source = (keys / "FastChunkVerifier.sol").read_text()
        artifact = worker.request("compile_solidity", source=source, name="FastChunkVerifier")
    with DevChain(accounts=1) as chain:
        w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = w3.eth.wait_for_transaction_receipt(
            factory.constructor().transact({"from": w3.eth.accounts[0]}), timeout=30)
        verifier = w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])
        inputs = proof.public_inputs(bound)
        assert verifier.functions.verifyTx(proof.proof.abi_tuple(), inputs).call() is True
        inputs[1] += 1
        assert verifier.functions.verifyTx(proof.proof.abi_tuple(), inputs).call() is False


def test_a_tampered_contribution_is_rejected_with_a_clear_message(transcript, tmp_path):
    bad = tmp_path / "tampered.zkey"
    shutil.copyfile(transcript["zkeys"][2], bad)  # bob's contribution
    raw = bytearray(bad.read_bytes())
    at = len(raw) * 3 // 4  # inside the key's points
    raw[at : at + 8] = bytes(b ^ 0x5A for b in raw[at : at + 8])
    bad.write_bytes(bytes(raw))
    with pytest.raises(ceremony.CeremonyError, match="does NOT verify"):
        ceremony.verify(transcript["dir"], bad)
    with pytest.raises(ceremony.CeremonyError, match="does NOT verify"):
        ceremony.finalize(transcript["dir"], bad, tmp_path / "keys")
    assert zk_cli(["ceremony", "verify", str(transcript["dir"]), str(bad)]) == 1


def test_verify_outside_a_ceremony_folder_says_what_is_missing(transcript, tmp_path):
    with pytest.raises(ceremony.CeremonyError, match="not a ceremony folder"):
        ceremony.verify(tmp_path, transcript["final"])
