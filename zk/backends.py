"""Groth16 proving backends behind one zk/ API: zokrates-js (WASM, the reference) and groth16py (native arkworks).

ZoKrates stays the circuit language and compiler in both: zokrates-js compiles the circuit (for `groth16py` also
to circom's R1CS format, `circuit.r1cs`) and computes the witness (for `groth16py` in circom's `.wtns` format);
only the Groth16 prover differs. groth16py proves in-process and releases the GIL, so several threads prove at
once. Its verification key is stored in zokrates-js's JSON layout (`verification.key.json`), so verifying
(zokrates-js's verifier, zk/fast_verifier.py's contract) is the same for both backends.

groth16py is GPL-3.0 (zk/README.md, "Backends"); it is imported only when its backend is used.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from protocol.contribution import Groth16Proof
from zk.prover import ProofError

ZOKRATES = "zokrates"
GROTH16PY = "groth16py"
BACKENDS = (ZOKRATES, GROTH16PY)
FAST_BACKEND = GROTH16PY
DEFAULT_BACKEND = ZOKRATES  # of this API (the reference); swarm-peer proves with groth16py, with the same dev keys
PROVING_KEY = "proving.g16"  # groth16py's ProvingKey.save (arkworks CRS + the R1CS matrices)
R1CS = "circuit.r1cs"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ProofError(f"unknown proving backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def groth16py() -> Any:
    try:
        import groth16py as g  # GPL-3.0: loaded only when this backend is chosen
    except ImportError as exc:
        raise ProofError("the groth16py backend needs the groth16py package: run `./dev.sh install`") from exc
    return g


def _hex(x: int | str) -> str:
    return f"0x{int(x):064x}"


def zokrates_vk(snarkjs_vk: dict) -> dict:
    """A snarkjs `verification_key.json` (groth16, bn128; G2 as [c0, c1]) in zokrates-js's layout."""
    if snarkjs_vk.get("protocol") != "groth16" or snarkjs_vk.get("curve") not in ("bn128", "bn254"):
        raise ProofError(f"not a Groth16 bn128 verification key: {snarkjs_vk.get('protocol')}/"
                         f"{snarkjs_vk.get('curve')}")
    g1 = lambda p: [_hex(p[0]), _hex(p[1])]
    g2 = lambda p: [[_hex(p[0][0]), _hex(p[0][1])], [_hex(p[1][0]), _hex(p[1][1])]]
    return {"scheme": "g16", "curve": "bn128", "alpha": g1(snarkjs_vk["vk_alpha_1"]),
            "beta": g2(snarkjs_vk["vk_beta_2"]), "gamma": g2(snarkjs_vk["vk_gamma_2"]),
            "delta": g2(snarkjs_vk["vk_delta_2"]), "gamma_abc": [g1(p) for p in snarkjs_vk["IC"]]}


def proof_from_bytes(raw: bytes) -> Groth16Proof:
    """groth16py's 256-byte proof (the Solidity calldata words a, b as [x1, x0, y1, y0], c) as a Groth16Proof."""
    if len(raw) != 256:
        raise ProofError(f"groth16py returned a {len(raw)}-byte proof, expected 256")
    w = [int.from_bytes(raw[i : i + 32], "big") for i in range(0, 256, 32)]
    return Groth16Proof(a=(w[0], w[1]), b=((w[3], w[2]), (w[5], w[4])), c=(w[6], w[7]))


def write_keys(d: Path, pk: Any, vk: Any) -> None:
    """Store a groth16py key pair: the proving key, and the verification key as zokrates-js JSON."""
    pk.save(str(d / PROVING_KEY))
    (d / "verification.key.json").write_text(json.dumps(zokrates_vk(json.loads(vk.to_json()))))


def dev_setup(d: Path) -> None:
    """groth16py's single-party setup from `circuit.r1cs` (fresh OS randomness): for development only."""
    pk, vk = groth16py().setup(str(d / R1CS))
    write_keys(d, pk, vk)


@cache
def _load_proving_key(path: str, mtime: float) -> Any:
    return groth16py().ProvingKey.load(path)


def load_proving_key(d: Path) -> Any:
    """The proving key of a key folder, loaded once per process (shared by threads; proving releases the GIL)."""
    path = d / PROVING_KEY
    try:
        return _load_proving_key(str(path), path.stat().st_mtime)
    except (OSError, ValueError) as exc:
        raise ProofError(f"cannot load the groth16py proving key {path}: {exc}") from exc


def prove_wtns(pk: Any, wtns: Path) -> Groth16Proof:
    try:
        raw = groth16py().prove_wtns(pk, str(wtns))
    except Exception as exc:  # groth16py raises its own error types
        raise ProofError(f"groth16py could not prove: {exc}") from exc
    return proof_from_bytes(bytes(raw))
