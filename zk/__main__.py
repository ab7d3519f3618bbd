"""`python -m zk setup`: compile the chunk circuit, run its (development) Groth16 setup, export the verifier.

`python -m zk constants` re-reads Poseidon's constants out of ZoKrates' stdlib into zk/poseidon_constants.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rich.console import Console

from zk.circuit import DEFAULT_PARAMS, CircuitParams
from zk.fast_verifier import FAST_VERIFIER_NAME, write_fast_verifier
from zk.keys import DEV_ENTROPY, KEYS_ROOT, VERIFIER_PATH, ensure_keys, export_verifier
from zk.poseidon import CONSTANTS_PATH, FULL_ROUNDS
from zk.prover import ProofError, ZkWorker

PARTIAL_ROUNDS = {2: 56, 3: 57, 4: 56, 5: 60, 6: 60, 7: 63}  # ZoKrates' rounds_p for t = inputs + 1


def setup(args: argparse.Namespace, console: Console) -> None:
    params = CircuitParams(chunk=args.chunk, block=args.block, depth=args.depth, scale_max=args.scale_max)
    entropy = None if args.private else DEV_ENTROPY
    with ZkWorker(timeout=args.timeout) as worker:
        t0 = time.perf_counter()
        d = ensure_keys(worker, params, args.keys, force=args.force, entropy=entropy)
        console.print(f"circuit {params.circuit_id} (chunk {params.chunk}, block {params.block}, depth "
                      f"{params.depth}): keys in {d} ({time.perf_counter() - t0:.1f} s)")
        if args.verifier is not None:
            out = export_verifier(worker, params, args.keys, args.verifier, entropy=entropy)
            fast = write_fast_verifier(d / "verification.key.json", out.with_name(f"{FAST_VERIFIER_NAME}.sol"))
            console.print(f"Solidity verifiers written to {out} and {fast} (gas-lean, same keys)")
    console.print("[yellow]single-party setup: for development only (zk/README.md, 'Trusted setup')"
                  + ("" if args.private else "; its entropy is public, anyone can forge proofs") + "[/yellow]")


def constants(console: Console) -> None:
    with ZkWorker() as worker:
        raw = worker.request("constants")
    data: dict = {"source": "ZoKrates stdlib hashes/poseidon/constants (POSEIDON_C, POSEIDON_M); regenerate: "
                            "python -m zk constants", "partial_rounds": {}, "C": {}, "M": {}}
    for t, partial in PARTIAL_ROUNDS.items():
        c, m = raw["C"][t - 2], raw["M"][t - 2]
        data["partial_rounds"][str(t)] = partial
        data["C"][str(t)] = [hex(int(x)) for x in c[: t * (FULL_ROUNDS + partial)]]
        data["M"][str(t)] = [[hex(int(x)) for x in row[:t]] for row in m[:t]]
    CONSTANTS_PATH.write_text(json.dumps(data, separators=(",", ":")))
    console.print(f"Poseidon constants written to {CONSTANTS_PATH}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zk", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="compile, Groth16 setup, export the Solidity verifier")
    s.add_argument("--chunk", type=int, default=DEFAULT_PARAMS.chunk)
    s.add_argument("--block", type=int, default=DEFAULT_PARAMS.block)
    s.add_argument("--depth", type=int, default=DEFAULT_PARAMS.depth)
    s.add_argument("--scale-max", type=int, default=DEFAULT_PARAMS.scale_max)
    s.add_argument("--private", action="store_true",
                   help="draw fresh entropy (keys only you have) instead of the public development entropy")
    s.add_argument("--keys", type=Path, default=KEYS_ROOT, help="key root folder (default zk/keys)")
    s.add_argument("--verifier", type=Path, default=VERIFIER_PATH, help="where to write ChunkVerifier.sol")
    s.add_argument("--no-verifier", dest="verifier", action="store_const", const=None)
    s.add_argument("--force", action="store_true", help="set up again even if keys exist")
    s.add_argument("--timeout", type=float, default=1800.0)
    sub.add_parser("constants", help="re-read Poseidon constants from ZoKrates' stdlib")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console = Console(stderr=True)
    try:
        if args.cmd == "setup":
            setup(args, console)
        else:
            constants(console)
    except (ProofError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
