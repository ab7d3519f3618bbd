"""Prove and verify chunks of a committed update; a proof comes back as a `protocol.contribution.Contribution`."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from protocol.contribution import Contribution, ContributionError, Groth16Proof
from zk import backends
from zk.backends import DEFAULT_BACKEND, GROTH16PY
from zk.circuit import DEFAULT_PARAMS, CircuitParams
from zk.commit import ChunkOpening, Commitment
from zk.keys import DEV_ENTROPY, KEYS_ROOT, ensure_keys, has_key_files, keys_dir
from zk.prover import ProofError, ZkWorker
from zk.quantize import QMAX

logger = logging.getLogger(__name__)


def witness_args(context: int, root: int, norm_sq: int, norm_bound: int, opening: ChunkOpening) -> list:
    """The circuit's arguments in zokrates-js's JSON form: fields as decimal strings, u8/u32 as hex."""
    return [
        str(context), str(root), str(norm_sq), str(norm_bound),
        [f"0x{(v + QMAX) & 0xFF:02x}" for v in opening.values],
        [f"0x{s & 0xFFFFFFFF:08x}" for s in opening.scales],
        [str(h) for h in opening.sibling_hashes],
        [str(n) for n in opening.sibling_norms],
    ]


class ChunkProver:
    """Proves chunks of one circuit shape with a running ZkWorker; keys are set up once (cached on disk).

    `backend` picks the Groth16 prover (zk/backends.py): "zokrates" (zokrates-js WASM, the default and fallback)
    or "groth16py" (native arkworks, in-process; the worker still computes the witness). `key_dir` uses the
    keys of a folder as they are, e.g. a ceremony's (`python -m zk ceremony finalize`), instead of dev keys.
    `last_timing` holds the witness and proving seconds (wall and this thread's CPU) of the last proof."""

    def __init__(self, worker: ZkWorker, params: CircuitParams = DEFAULT_PARAMS, keys_root: Path = KEYS_ROOT,
                 setup: bool = True, entropy: str | None = DEV_ENTROPY, backend: str = DEFAULT_BACKEND,
                 key_dir: Path | None = None) -> None:
        self.worker, self.params, self.backend = worker, params, backends.check_backend(backend)
        if key_dir is not None:
            self.dir = Path(key_dir)
            if not has_key_files(self.dir, params, backend):
                raise ProofError(f"{self.dir} holds no complete {backend} keys for circuit {params.circuit_id}")
        elif setup:
            self.dir = ensure_keys(worker, params, keys_root, entropy=entropy, backend=backend)
        else:
            self.dir = keys_dir(params, keys_root, entropy, backend)
            if not has_key_files(self.dir, params, backend):
                raise ProofError(f"no {backend} keys for circuit {params.circuit_id} under {keys_root}; run "
                                 f"`python -m zk setup`")
        self._pk = None
        if backend == GROTH16PY:
            self.verification_key = json.loads((self.dir / "verification.key.json").read_text())
            self._pk = backends.load_proving_key(self.dir)
        else:
            self.verification_key = worker.request("load", dir=str(self.dir))["vk"]
        self.last_timing: dict[str, float] = {}

    def prove(self, commitment: Commitment, *, experiment: int, round: int, stage: int, peer: str, chunk: int,
              norm_bound: int) -> Contribution:
        """Prove chunk `chunk` of `commitment` for (experiment, round, stage, peer); raises ProofError if false."""
        if commitment.params != self.params:
            raise ProofError(f"the commitment was made for circuit {commitment.params.circuit_id}, this prover "
                             f"runs {self.params.circuit_id}")
        if commitment.norm_sq > norm_bound:
            raise ProofError(f"the update's squared norm {commitment.norm_sq} is over the bound {norm_bound}: "
                             f"clip the update (or lower the learning rate) before committing")
        try:
            claim = Contribution(experiment=experiment, round=round, stage=stage, peer=peer,
                                 root=commitment.root, norm_sq=commitment.norm_sq, chunk=chunk)
        except ValueError as exc:
            raise ProofError(f"cannot build the contribution record: {exc}") from exc
        return self.prove_opening(claim, commitment.opening(chunk), norm_bound)

    def prove_opening(self, claim: Contribution, opening: ChunkOpening, norm_bound: int) -> Contribution:
        """Prove an opening for a claim as given (no checks on this side: the circuit is the judge)."""
        args = witness_args(claim.context(), claim.root, claim.norm_sq, norm_bound, opening)
        t0, c0 = time.perf_counter(), time.thread_time()
        if self.backend == GROTH16PY:
            proof = self._prove_groth16py(args, t0, c0)
        else:
            result = self.worker.request("prove", dir=str(self.dir), args=args)
            try:
                proof = Groth16Proof.from_zokrates(result["proof"])
            except (ContributionError, KeyError, TypeError) as exc:
                raise ProofError(f"the worker returned no usable proof: {exc}") from exc
            self.last_timing = {"total_s": time.perf_counter() - t0}
        return claim.model_copy(update={"proof": proof})

    def _prove_groth16py(self, args: list, t0: float, c0: float) -> Groth16Proof:
        fd, name = tempfile.mkstemp(prefix="swarm-zk-", suffix=".wtns")
        os.close(fd)
        wtns = Path(name)
        try:
            self.worker.request("witness", dir=str(self.dir), args=args, out=str(wtns))
            t1, c1 = time.perf_counter(), time.thread_time()
            proof = backends.prove_wtns(self._pk, wtns)
        finally:
            wtns.unlink(missing_ok=True)
        t2, c2 = time.perf_counter(), time.thread_time()
        self.last_timing = {"witness_s": t1 - t0, "prove_s": t2 - t1, "prove_cpu_s": c2 - c1, "total_s": t2 - t0}
        return proof

    def prove_chunks(self, commitment: Commitment, chunks: Iterable[int], **claim: int | str) -> list[Contribution]:
        """One proof per distinct chunk (the contribute chunk c0, audited chunks, or all of them in strict mode)."""
        return [self.prove(commitment, chunk=c, **claim) for c in dict.fromkeys(chunks)]

    def verify(self, contribution: Contribution, norm_bound: int) -> bool:
        """Off-chain Groth16 verification of a contribution's proof against its public inputs."""
        if contribution.proof is None:
            return False
        inputs = [f"0x{x:064x}" for x in contribution.public_inputs(norm_bound)]
        return bool(self.worker.request("verify", vk=self.verification_key, proof=contribution.proof.to_zokrates(),
                                        inputs=inputs)["valid"])
