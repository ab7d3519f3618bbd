"""`python -m zk setup`: compile the chunk circuit, run its DEVELOPMENT-ONLY single-party Groth16 setup, export
the verifier. `python -m zk ceremony init|contribute|verify|beacon|finalize`: the multi-party setup (zk/ceremony.py,
zk/README.md "Trusted setup"). `python -m zk constants` re-reads Poseidon's constants out of ZoKrates' stdlib
into zk/poseidon_constants.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rich.console import Console

from zk import ceremony as cer
from zk.backends import BACKENDS, DEFAULT_BACKEND, GROTH16PY
from zk.circuit import DEFAULT_PARAMS, CircuitParams
from zk.fast_verifier import FAST_VERIFIER_NAME, write_fast_verifier
from zk.keys import DEV_ENTROPY, KEYS_ROOT, VERIFIER_PATH, ensure_keys, export_verifier
from zk.poseidon import CONSTANTS_PATH, FULL_ROUNDS
from zk.prover import ProofError, ZkWorker

PARTIAL_ROUNDS = {2: 56, 3: 57, 4: 56, 5: 60, 6: 60, 7: 63}  # ZoKrates' rounds_p for t = inputs + 1


def _params(args: argparse.Namespace) -> CircuitParams:
    return CircuitParams(chunk=args.chunk, block=args.block, depth=args.depth, scale_max=args.scale_max)


def setup(args: argparse.Namespace, console: Console) -> None:
    params = _params(args)
    entropy = None if args.private else DEV_ENTROPY
    with ZkWorker(timeout=args.timeout) as worker:
        t0 = time.perf_counter()
        d = ensure_keys(worker, params, args.keys, force=args.force, entropy=entropy, backend=args.backend)
        console.print(f"circuit {params.circuit_id} (chunk {params.chunk}, block {params.block}, depth "
                      f"{params.depth}), {args.backend} backend: keys in {d} ({time.perf_counter() - t0:.1f} s)")
        if args.backend == GROTH16PY and args.private:  # fresh randomness: never overwrite the committed verifiers
            fast = write_fast_verifier(d / "verification.key.json", d / f"{FAST_VERIFIER_NAME}.sol")
            console.print(f"gas-lean verifier for these keys: {fast}")
        elif args.verifier is not None:  # (groth16py's dev keys are zokrates-js's: the same verifiers)
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


def ceremony(args: argparse.Namespace, console: Console) -> None:
    t0 = time.perf_counter()
    if args.step == "init":
        first = cer.init(args.dir, _params(args), ptau=args.ptau, phase1_contributions=args.phase1_contributions)
        console.print(f"ceremony started in {args.dir}: pass {first} to the first contributor "
                      f"(`python -m zk ceremony contribute {first} NEXT.zkey --name ...`)")
    elif args.step == "contribute":
        digest = cer.contribute(args.previous, args.out, args.name)
        console.print(f"contribution written to {args.out}; publish its hash: {digest}")
    elif args.step == "beacon":
        digest = cer.beacon(args.previous, args.out, args.hash, args.iterations)
        console.print(f"beacon applied: {args.out} (hash {digest})")
    elif args.step == "verify":
        report = cer.verify(args.dir, args.zkey)
        console.print(report.strip())
        console.print(f"[green]{args.zkey}: every contribution verifies against {args.dir}[/green]")
    else:
        out = cer.finalize(args.dir, args.zkey, args.out)
        console.print(f"keys for the groth16py backend in {out} (ChunkProver(..., backend='groth16py', "
                      f"key_dir={str(out)!r})); verifier contract {out / (FAST_VERIFIER_NAME + '.sol')}")
    console.print(f"({time.perf_counter() - t0:.1f} s)")


def _shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunk", type=int, default=DEFAULT_PARAMS.chunk)
    p.add_argument("--block", type=int, default=DEFAULT_PARAMS.block)
    p.add_argument("--depth", type=int, default=DEFAULT_PARAMS.depth)
    p.add_argument("--scale-max", type=int, default=DEFAULT_PARAMS.scale_max)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zk", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="compile, DEVELOPMENT-ONLY single-party setup, export the Solidity verifier")
    _shape_args(s)
    s.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help="zokrates: reproducible dev keys behind contracts/generated/; groth16py: the same keys "
                        "converted for groth16py (with --private: groth16py's own fresh keys, their verifier "
                        "written beside them)")
    s.add_argument("--private", action="store_true",
                   help="draw fresh entropy (keys only you have) instead of the public development entropy")
    s.add_argument("--keys", type=Path, default=KEYS_ROOT, help="key root folder (default zk/keys)")
    s.add_argument("--verifier", type=Path, default=VERIFIER_PATH, help="where to write ChunkVerifier.sol")
    s.add_argument("--no-verifier", dest="verifier", action="store_const", const=None)
    s.add_argument("--force", action="store_true", help="set up again even if keys exist")
    s.add_argument("--timeout", type=float, default=1800.0)
    sub.add_parser("constants", help="re-read Poseidon constants from ZoKrates' stdlib")
    c = sub.add_parser("ceremony", help="multi-party Groth16 setup (phase 1 + phase 2) with snarkjs")
    steps = c.add_subparsers(dest="step", required=True)
    i = steps.add_parser("init", help="compile, phase 1 (local, or --ptau), first phase-2 key")
    i.add_argument("dir", type=Path, help="ceremony folder (circuit, phase 1, ceremony.json)")
    _shape_args(i)
    i.add_argument("--ptau", type=Path, help="a prepared public powers-of-tau file instead of a local phase 1")
    i.add_argument("--phase1-contributions", type=int, default=1, help="local phase-1 contributions (default 1)")
    k = steps.add_parser("contribute", help="add your randomness to a .zkey, write the next one")
    k.add_argument("previous", type=Path)
    k.add_argument("out", type=Path)
    k.add_argument("--name", required=True, help="who contributes (recorded in the transcript)")
    b = steps.add_parser("beacon", help="last contribution from a public random beacon")
    b.add_argument("previous", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--hash", required=True, help="the beacon, hex (e.g. a block hash fixed in advance)")
    b.add_argument("--iterations", type=int, default=10, help="2^N hash iterations (10..63)")
    v = steps.add_parser("verify", help="verify every contribution of a .zkey against the circuit and phase 1")
    v.add_argument("dir", type=Path)
    v.add_argument("zkey", type=Path)
    f = steps.add_parser("finalize", help="verify, then write groth16py keys and the verifier contract")
    f.add_argument("dir", type=Path)
    f.add_argument("zkey", type=Path)
    f.add_argument("--out", type=Path, required=True, help="key folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    console = Console(stderr=True)
    try:
        if args.cmd == "setup":
            setup(args, console)
        elif args.cmd == "ceremony":
            ceremony(args, console)
        else:
            constants(console)
    except (ProofError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
