"""What a peer checks about an experiment before it stakes or contributes, and the protocol's window floors.

The escrow already refuses experiments with an unknown verifier or windows below its floor (contracts/README.md,
"Safe experiments"). A peer still checks, because the escrow it was pointed at (by a DHT record it cannot fully
trust) may not be ours, and because its own prover may be slower than the escrow's registered figure:

    check_experiment(client, experiment_id)      # raises UnsafeExperiment with the reason, else returns the state
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from web3 import Web3

from swarm.chain.build import load_artifacts
from swarm.chain.client import ChainClient
from swarm.chain.errors import ChainError, RevertError
from swarm.chain.models import ExperimentState
from zk.circuit import DEFAULT_PARAMS, CircuitParams

INCLUSION_MARGIN_S = 10  # SwarmEscrow.INCLUSION_MARGIN: a few L2 blocks to get a transaction in
# One chunk proof of the default circuit (CHUNK 1024, DEPTH 20) took 14.15 s on a 2-core machine at load 8-11
# (BENCHMARKS.md "zk", 3-5x an idle core): that is our "slow laptop", rounded up.
REAL_PROOF_SECONDS = 15
STANDIN_PROOF_SECONDS = 1  # the stand-in circuit proves in well under a second
REAL_VERIFIERS = ("FastChunkVerifier", "ChunkVerifier", "BatchChunkVerifier")  # zk's circuit, DEFAULT_PARAMS' keys
STANDIN_VERIFIERS = ("FastStandInChunkVerifier", "StandInChunkVerifier", "BatchStandInChunkVerifier")
# zk/batch_verifier.py's verifiers (verifyTx + verifyBatch): pinned with VerifierShape.batch, so contributeBatch
# checks a whole batch with one pairing call
BATCH_VERIFIERS = ("BatchChunkVerifier", "BatchStandInChunkVerifier")
KEY_DIR_BATCH_VERIFIER = "BatchChunkVerifier.json"  # next to a key folder's keys: its batch verifier's artifact


class UnsafeExperiment(ChainError):
    """An experiment a peer must not stake for or contribute to (unknown verifier, windows too short, ...)."""

    summary = "refusing the experiment: "


def min_submit_window(proof_seconds: int) -> int:
    """The shortest submission window: a proof of c0 after the round ends, plus inclusion."""
    return INCLUSION_MARGIN_S + proof_seconds


def min_audit_window(audits_per_peer: int, proof_seconds: int) -> int:
    """The shortest audit window: audits open in its first half, and the half left must hold all k proofs made
    one after another on one core, plus inclusion (the escrow's rule)."""
    return 2 * (INCLUSION_MARGIN_S + audits_per_peer * proof_seconds)


def known_code_hashes(names: Sequence[str]) -> dict[bytes, str]:
    """Runtime code hashes of the verifiers we can prove for (from the committed artifacts)."""
    artifacts = load_artifacts()
    return {Web3.keccak(hexstr=artifacts[n].deployed_bytecode): n for n in names if n in artifacts}


def key_dir_code_hashes(key_dir) -> dict[bytes, str]:
    """The runtime code hashes of the verifiers made for the keys in `key_dir` (zk.keys.fast_setup's
    FastChunkVerifier, swarm.chain.deploy.key_dir_batch_verifier's BatchChunkVerifier), those recorded."""
    from zk.keys import key_dir_verifier

    found = {}
    artifact = key_dir_verifier(key_dir)
    if artifact is not None and artifact.get("deployed_bytecode"):
        found[Web3.keccak(hexstr=artifact["deployed_bytecode"])] = f"FastChunkVerifier of {key_dir}"
    batch = Path(key_dir) / KEY_DIR_BATCH_VERIFIER  # swarm.chain.deploy.key_dir_batch_verifier writes it
    if batch.is_file() and (code := json.loads(batch.read_text()).get("deployed_bytecode")):
        found[Web3.keccak(hexstr=code)] = f"BatchChunkVerifier of {key_dir}"
    return found


def check_experiment(
    client: ChainClient, experiment_id: int, *, params: CircuitParams = DEFAULT_PARAMS,
    verifiers: Sequence[str] = REAL_VERIFIERS, proof_seconds: int | None = None, prover_workers: int = 1,
    stage: int | None = None, stage_chunks: int | None = None, extra_code_hashes: Mapping[bytes, str] = {},
) -> ExperimentState:  # fmt: skip
    """Refuse (UnsafeExperiment) an experiment this peer cannot serve safely; returns its on-chain state.

    Checks: the experiment exists; its verifier's code is one of `verifiers` (our circuit's keys) and the
    escrow pins it with our CHUNK/DEPTH; every stage fits 2**DEPTH chunks (and `stage` has `stage_chunks`);
    the submission window holds one proof and the answer half of the audit window holds k proofs on
    `prover_workers` cores at `proof_seconds` each (default: the larger of ours and the escrow's figure),
    each plus the inclusion margin; the experiment has rounds left.
    """
    try:
        e = client.experiment(experiment_id)
    except RevertError as exc:
        raise UnsafeExperiment(f"experiment {experiment_id} does not exist on escrow {client.escrow_address}") from exc
    where = f"experiment {experiment_id} (escrow {client.escrow_address})"
    name = {**known_code_hashes(verifiers), **extra_code_hashes}.get(client.code_hash(e.verifier))
    if name is None:
        raise UnsafeExperiment(f"{where}: its verifier {e.verifier} is not one we prove for ({', '.join(verifiers)}); "
                               "a verifier we do not know may reject honest audit answers, so we will not stake")
    shape = client.registered_shape(e.verifier)
    if shape is None or shape.chunk != params.chunk or shape.depth != params.depth:
        raise UnsafeExperiment(f"{where}: the escrow does not pin {name} with CHUNK {params.chunk} and DEPTH "
                               f"{params.depth} (it has {shape}); our proofs would not fit its chunk count")
    for s in range(e.num_stages):
        n = client.num_chunks(experiment_id, s)
        if n > 1 << params.depth:
            raise UnsafeExperiment(f"{where}: stage {s} has {n} chunks, more than 2**{params.depth}: chunks past "
                                   "that cannot be proven, so their audits cannot be answered")
        if s == stage and stage_chunks is not None and n != stage_chunks:
            raise UnsafeExperiment(f"{where}: stage {s} has {n} chunks on-chain but {stage_chunks} here (another "
                                   "model cut or chunk size)")
    seconds = max(proof_seconds or 0, shape.proof_seconds)
    per_worker = -(-e.audits_per_peer // max(1, prover_workers))
    if e.submit_window < min_submit_window(seconds):
        raise UnsafeExperiment(f"{where}: submission window {e.submit_window} s is shorter than one proof "
                               f"({seconds} s) plus {INCLUSION_MARGIN_S} s to get it included")
    if e.audit_window - e.audit_window // 2 < INCLUSION_MARGIN_S + per_worker * seconds:
        raise UnsafeExperiment(f"{where}: audit window {e.audit_window} s leaves {e.audit_window - e.audit_window // 2}"
                               f" s to answer {e.audits_per_peer} audits, less than {per_worker} proofs of {seconds} s"
                               f" plus {INCLUSION_MARGIN_S} s: an honest peer would be slashed")
    if client.block_timestamp() >= e.submission_end(e.num_rounds - 1):
        raise UnsafeExperiment(f"{where}: its last round's submissions are over")
    return e
