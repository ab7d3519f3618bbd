"""Compile + Groth16 setup of a chunk circuit, keys under zk/keys/<circuit id>/, Solidity verifier export.

A single-party setup (this one) is for development only: whoever knows its entropy can forge proofs. The
default entropy is public, so every developer gets the same keys as the committed verifier (zk/README.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from pathlib import Path

from zk import backends, zokrates_keys
from zk.backends import GROTH16PY, ZOKRATES
from zk.circuit import CircuitParams
from zk.fast_verifier import compile_fast_verifier
from zk.prover import ProofError, ZkWorker

logger = logging.getLogger(__name__)

KEYS_ROOT = Path(__file__).with_name("keys")
VERIFIER_PATH = Path(__file__).resolve().parent.parent / "contracts" / "generated" / "ChunkVerifier.sol"
KEY_FILES = {
    ZOKRATES: ("program.bin", "abi.json", "proving.key", "verification.key.json", "source.zok"),
    GROTH16PY: ("program.bin", "abi.json", backends.R1CS, backends.PROVING_KEY, "verification.key.json", "source.zok"),
}
SETUP_TIMEOUT = 1800.0
DEV_ENTROPY = "swarm development setup: this entropy is public, so these keys are NOT secure"


def keys_dir(params: CircuitParams, root: Path = KEYS_ROOT, entropy: str | None = DEV_ENTROPY,
             backend: str = ZOKRATES) -> Path:
    """zk/keys/<circuit id>/ for zokrates-js's reproducible development keys, <circuit id>-private/ for random
    ones; for groth16py, <circuit id>-groth16py-dev/ holds those same reproducible keys converted for groth16py
    (zk/zokrates_keys.py: same verification key, so the committed verifiers check its proofs) and
    <circuit id>-groth16py/ groth16py's own single-party setup (`entropy=None`: fresh randomness)."""
    if backends.check_backend(backend) == GROTH16PY:
        return root / (f"{params.circuit_id}-{GROTH16PY}-dev" if entropy == DEV_ENTROPY
                       else f"{params.circuit_id}-{GROTH16PY}")
    return root / (params.circuit_id if entropy == DEV_ENTROPY else f"{params.circuit_id}-private")


def has_key_files(d: Path, params: CircuitParams, backend: str = ZOKRATES) -> bool:
    files = KEY_FILES[backends.check_backend(backend)]
    return all((d / f).is_file() for f in files) and (d / "source.zok").read_text() == params.source()


def has_keys(params: CircuitParams, root: Path = KEYS_ROOT, entropy: str | None = DEV_ENTROPY,
             backend: str = ZOKRATES) -> bool:
    return has_key_files(keys_dir(params, root, entropy, backend), params, backend)


def ensure_keys(worker: ZkWorker, params: CircuitParams, root: Path = KEYS_ROOT, force: bool = False,
                entropy: str | None = DEV_ENTROPY, backend: str = ZOKRATES) -> Path:
    """Compile and set up the circuit unless keys for this exact source exist; returns the key folder.

    `entropy=None` draws fresh randomness (keys no one else can reproduce, still single-party). With
    `backend="groth16py"` and the default entropy, zokrates-js's reproducible development keys are converted for
    groth16py (the same keys: the committed verifiers check the proofs); with `entropy=None` the circuit is
    written as circom R1CS and groth16py sets it up (single-party, fresh randomness). Development only either
    way: `python -m zk ceremony` makes real keys."""
    d = keys_dir(params, root, entropy, backend)
    if not force and has_keys(params, root, entropy, backend):
        return d
    with _setup_lock(d):  # another process (a parallel test worker, a second peer) may be setting it up now
        if not force and has_keys(params, root, entropy, backend):
            return d
        return _make_keys(worker, params, root, force, entropy, backend, d)


@contextlib.contextmanager
def _setup_lock(d: Path):
    """An exclusive lock on making the keys of folder `d` (a file next to it), held across processes."""
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _make_keys(worker: ZkWorker, params: CircuitParams, root: Path, force: bool, entropy: str | None,
               backend: str, d: Path) -> Path:
    if backend == GROTH16PY and entropy == DEV_ENTROPY:
        zokrates_dir = ensure_keys(worker, params, root, force=force, entropy=DEV_ENTROPY, backend=ZOKRATES)
        t0 = time.perf_counter()
        zokrates_keys.convert(zokrates_dir, d, params, worker)
        logger.info("circuit %s: zokrates-js's development keys converted for groth16py in %.1f s",
                    params.circuit_id, time.perf_counter() - t0)
        return d
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # with circom's R1CS too, always: converting these keys for groth16py (zk/zokrates_keys.py) then compiles nothing
    info = worker.request("compile", timeout=SETUP_TIMEOUT, source=params.source(), dir=str(d), r1cs=True)
    t1 = time.perf_counter()
    if backend == GROTH16PY:
        backends.dev_setup(d)
    else:
        worker.request("setup", timeout=SETUP_TIMEOUT, dir=str(d), entropy=entropy)
    t2 = time.perf_counter()
    (d / "params.json").write_text(params.model_dump_json(indent=2))
    (d / "source.zok").write_text(params.source())  # written last: its presence marks a complete setup
    logger.info("circuit %s (%s): %d constraints, compiled in %.1f s, set up in %.1f s", params.circuit_id,
                backend, info["constraints"], t1 - t0, t2 - t1)
    return d


def export_verifier(worker: ZkWorker, params: CircuitParams, root: Path = KEYS_ROOT, out: Path = VERIFIER_PATH,
                    entropy: str | None = DEV_ENTROPY) -> Path:
    """Write the Solidity verifier for this circuit's keys as contract `ChunkVerifier` (library `ChunkPairing`)."""
    if not has_keys(params, root, entropy):
        raise ProofError(f"no keys for circuit {params.circuit_id}; run `python -m zk setup` first")
    source = worker.request("export_verifier", dir=str(keys_dir(params, root, entropy)))["source"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rename_verifier(source, params))
    return out


def rename_verifier(source: str, params: CircuitParams) -> str:
    """Rename `Verifier`/`Pairing` so the verifier can sit beside other contracts; note the circuit it checks."""
    source, n = re.subn(r"\bcontract Verifier\b", "contract ChunkVerifier", source)
    if n != 1:
        raise ProofError("the exported verifier has no `contract Verifier`; has zokrates-js changed its template?")
    source = re.sub(r"\bPairing\b", "ChunkPairing", source)
    header = ("// SPDX-License-Identifier: MIT\n"
              f"// Generated by `python -m zk setup` for circuit {params.circuit_id} "
              f"(chunk {params.chunk}, block {params.block}, depth {params.depth}). Do not edit.\n"
              "// Development keys from a single-party setup: see zk/README.md before any real deployment.\n")
    return header + source


VERIFIER_ARTIFACT = "FastChunkVerifier.json"


def fast_setup(params: CircuitParams, root: Path = KEYS_ROOT, key_dir: Path | None = None) -> tuple[Path, dict]:
    """What a deployment proving with groth16py needs: the key folder (`key_dir`, e.g. a ceremony's, or this
    machine's groth16py development keys, made once) and `{"abi", "bytecode"}` of the FastChunkVerifier for
    exactly those keys, to deploy instead of the committed one (which is for zokrates-js's dev keys)."""
    with ZkWorker(timeout=SETUP_TIMEOUT) as worker:
        d = Path(key_dir) if key_dir is not None else ensure_keys(worker, params, root, backend=GROTH16PY)
        if not has_key_files(d, params, GROTH16PY):
            raise ProofError(f"{d} holds no complete groth16py keys for circuit {params.circuit_id}")
        artifact = compile_fast_verifier(worker, d / "verification.key.json")
    # kept next to the keys: a peer proving with them knows its verifier's runtime code (swarm.chain.safety)
    tmp = d / f".{VERIFIER_ARTIFACT}.{os.getpid()}"  # atomic: another process may be reading it (a test worker)
    tmp.write_text(json.dumps(artifact))
    os.replace(tmp, d / VERIFIER_ARTIFACT)
    return d, artifact


def key_dir_verifier(key_dir: Path) -> dict | None:
    """The verifier artifact `fast_setup` wrote next to the keys in `key_dir` (abi, bytecode, deployed_bytecode)."""
    path = Path(key_dir) / VERIFIER_ARTIFACT
    return json.loads(path.read_text()) if path.is_file() else None
