"""groth16py proving with zokrates-js's keys: the reproducible development keys behind the committed verifiers.

zokrates-js's `proving.key` is an arkworks Groth16 `ProvingKey` (uncompressed) with the same QAP reduction as
groth16py's, but its variables are numbered as zokrates-js's own constraint system allocates them (`one`, the
public arguments, the private arguments in order, then every other variable at its first use, constraint by
constraint, in A, B, C order), where the exported R1CS (`circuit.r1cs`, and the `.wtns` witnesses) numbers them
by zokrates' variable id. `convert` finds the private arguments' wires (from witnesses of random statements),
derives that permutation, reorders the key's per-variable queries to the R1CS numbering and wraps them in
groth16py's file (`g16pk1` + key + groth16py's constraint matrices, taken from a throw-away groth16py setup of
the same R1CS). The verification key is zokrates-js's, unchanged, so the proofs verify with the committed
`contracts/generated/*.sol` and zokrates-js's verifier; `convert` proves one statement and checks that before
it writes anything.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from zk import backends
from zk.circuit import NORM_BITS, CircuitParams
from zk.commit import ChunkOpening, leaf_of, node, root_of
from zk.prover import ProofError, ZkWorker

G1, G2 = 64, 128  # uncompressed affine points, bytes
MAGIC = b"g16pk1"  # groth16py's ProvingKey.save header
PROBES = 3  # witnesses of random statements used to find the private arguments' wires


def _sections(data: bytes, magic: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    if data[:4] != magic:
        raise ProofError(f"not a {magic.decode()} file")
    count = struct.unpack_from("<I", data, 8)[0]
    offset, sections = 12, {}
    for _ in range(count):
        kind, size = struct.unpack_from("<IQ", data, offset)
        sections[kind] = (offset + 12, size)
        offset += 12 + size
    return count, sections


def read_r1cs(path: Path) -> tuple[int, int, list[list[list[int]]]]:
    """(wires, public inputs, constraints as [A wires, B wires, C wires]) of a circom-format R1CS file."""
    data = path.read_bytes()
    _, sections = _sections(data, b"r1cs")
    head = sections[1][0]
    n8 = struct.unpack_from("<I", data, head)[0]
    wires, pub_out, pub_in, _, _, n_constraints = struct.unpack_from("<IIIIQI", data, head + 4 + n8)
    offset, constraints = sections[2][0], []
    for _ in range(n_constraints):
        row = []
        for _ in range(3):
            terms = struct.unpack_from("<I", data, offset)[0]
            row.append([struct.unpack_from("<I", data, offset + 4 + i * (4 + n8))[0] for i in range(terms)])
            offset += 4 + terms * (4 + n8)
        constraints.append(row)
    return wires, pub_out + pub_in, constraints


def read_wtns(path: Path) -> list[int]:
    data = path.read_bytes()
    _, sections = _sections(data, b"wtns")
    head = sections[1][0]
    n8 = struct.unpack_from("<I", data, head)[0]
    start = sections[2][0]
    return [int.from_bytes(data[start + i * n8 : start + (i + 1) * n8], "little") for i in range(sections[2][1] // n8)]


def ark_order(wires: int, public: int, argument_wires: list[int], constraints: list[list[list[int]]]) -> list[int]:
    """For each R1CS wire, its index in zokrates-js's arkworks constraint system."""
    index = {w: w for w in range(1 + public)}
    for w in argument_wires:
        index[w] = len(index)
    for row in constraints:
        for terms in row:
            for w in terms:
                if w not in index:
                    index[w] = len(index)
    if len(index) != wires:
        raise ProofError(f"{wires - len(index)} wires of the R1CS appear in no constraint: cannot order them")
    return [index[w] for w in range(wires)]


def _queries(key: bytes, offset: int) -> tuple[int, list[tuple[str, int, int, int]]]:
    """Where the vk-and-points head ends and where each query vector (name, size, count, start) lies."""
    o = offset + G1 + 3 * G2  # alpha_g1, beta_g2, gamma_g2, delta_g2
    n = struct.unpack_from("<Q", key, o)[0]
    o += 8 + n * G1 + 2 * G1  # gamma_abc_g1, then beta_g1, delta_g1
    head, out = o, []
    for name, size in (("a", G1), ("b_g1", G1), ("b_g2", G2), ("h", G1), ("l", G1)):
        n = struct.unpack_from("<Q", key, o)[0]
        out.append((name, size, n, o + 8))
        o += 8 + n * size
    if o > len(key):
        raise ProofError("the proving key is shorter than its own lengths say")
    return head, out + [("end", 0, 0, o)]


def permuted_key(zokrates_key: bytes, order: list[int], public: int) -> bytes:
    """zokrates-js's proving key with its per-variable queries put in R1CS wire order."""
    head, queries = _queries(zokrates_key, 0)
    if queries[-1][3] != len(zokrates_key):
        raise ProofError("zokrates-js's proving key has trailing bytes: not the layout this module reads")
    out = bytearray(zokrates_key[:head])
    instance = 1 + public
    for name, size, n, start in queries[:-1]:
        items = [zokrates_key[start + i * size : start + (i + 1) * size] for i in range(n)]
        if name in ("a", "b_g1", "b_g2"):
            if n != len(order):
                raise ProofError(f"the key has {n} variables, the R1CS {len(order)}")
            items = [items[order[w]] for w in range(n)]
        elif name == "l":
            items = [items[order[w + instance] - instance] for w in range(n)]
        out += struct.pack("<Q", n) + b"".join(items)
    return bytes(out)


def random_opening(params: CircuitParams, rng: random.Random) -> tuple[list, int]:
    """The zokrates-js arguments of a true statement with random private inputs, and its public `norm_bound`."""
    values = [rng.randint(-127, 127) for _ in range(params.chunk)]
    scales = [rng.randint(1, params.scale_max) for _ in range(params.scales_per_chunk)]
    chunk = rng.randrange(params.max_chunks)
    siblings = [(rng.randrange(1, 1 << 250), rng.randrange(1, 1 << 100)) for _ in range(params.depth)]
    cur = leaf_of(np.asarray(values, dtype=np.int8), scales, params)
    index = chunk
    for sib in siblings:
        cur = node(sib, cur) if index & 1 else node(cur, sib)
        index >>= 1
    norm_sq, root = cur[1], root_of(cur)
    bound = norm_sq + rng.randrange(1 << 64)
    if bound >= 1 << NORM_BITS:
        raise ProofError("random statement out of the circuit's norm range")
    opening = ChunkOpening(chunk=chunk, values=values, scales=scales, sibling_hashes=[h for h, _ in siblings],
                           sibling_norms=[n for _, n in siblings])
    context = rng.randrange(1 << 160) << 88 | rng.randrange(1 << 48) << 40 | rng.randrange(1 << 16) << 24 | chunk
    from zk.chunk_prover import witness_args  # chunk_prover imports keys, which imports this module

    return witness_args(context, root, norm_sq, bound, opening), bound


def _flat(args: list) -> list[int]:
    out: list[int] = []
    for a in args:
        out += _flat(a) if isinstance(a, list) else [int(a, 0)]
    return out


def argument_wires(worker: ZkWorker, d: Path, params: CircuitParams, public: int, seed: int = 0) -> list[int]:
    """The R1CS wires of the private arguments, in argument order: the one wire per argument whose value equals
    that argument in the witnesses of PROBES random statements (the first such wire after the previous one's)."""
    rng = random.Random(seed)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(PROBES):
            args, _ = random_opening(params, rng)
            out = Path(tmp) / f"{i}.wtns"
            worker.request("witness", dir=str(d), args=args, out=str(out))
            runs.append((_flat(args)[public:], read_wtns(out)))
    n_args = len(runs[0][0])
    columns = list(zip(*(w for _, w in runs)))
    by_value: dict[tuple[int, ...], list[int]] = {}
    for wire, column in enumerate(columns):
        by_value.setdefault(column, []).append(wire)
    wires, last = [], public
    for k in range(n_args):
        candidates = [w for w in by_value.get(tuple(a[k] for a, _ in runs), []) if w > last]
        if not candidates:
            raise ProofError(f"private argument {k} has no wire of its value in the witness")
        last = candidates[0]
        wires.append(last)
    return wires


def convert(zokrates_dir: Path, out_dir: Path, params: CircuitParams, worker: ZkWorker) -> Path:
    """Write into `out_dir` groth16py keys that ARE zokrates-js's keys in `zokrates_dir` (same verification key,
    so the same verifier contract), after proving and verifying one random statement with them."""
    zokrates_dir, out_dir = Path(zokrates_dir), Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        work = Path(tmp)
        if (zokrates_dir / backends.R1CS).is_file():  # compiled with the R1CS already
            for f in ("program.bin", "abi.json", backends.R1CS):
                shutil.copy(zokrates_dir / f, work / f)
        else:
            worker.request("compile", timeout=1800, source=params.source(), dir=str(work), r1cs=True)
            if (work / "program.bin").read_bytes() != (zokrates_dir / "program.bin").read_bytes():
                raise ProofError("compiling the circuit again gave another program than the one the keys were "
                                 "made for: is this the same zokrates-js?")
        wires, public, constraints = read_r1cs(work / backends.R1CS)
        order = ark_order(wires, public, argument_wires(worker, work, params, public), constraints)
        pk, _ = backends.groth16py().setup(str(work / backends.R1CS))  # only for its constraint matrices
        pk.save(str(work / "throwaway.g16"))
        throwaway = (work / "throwaway.g16").read_bytes()
        if throwaway[: len(MAGIC)] != MAGIC:
            raise ProofError("groth16py's key file has another header: not the layout this module reads")
        matrices = throwaway[_queries(throwaway, len(MAGIC))[1][-1][3] :]
        key = MAGIC + permuted_key((zokrates_dir / "proving.key").read_bytes(), order, public) + matrices
        (work / backends.PROVING_KEY).write_bytes(key)
        vk = json.loads((zokrates_dir / "verification.key.json").read_text())
        (work / "verification.key.json").write_text(json.dumps(vk))
        _check(worker, work, params, vk)
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in ("program.bin", "abi.json", backends.R1CS, backends.PROVING_KEY, "verification.key.json"):
            shutil.copy(work / f, out_dir / f)
    (out_dir / "params.json").write_text(params.model_dump_json(indent=2))
    (out_dir / "source.zok").write_text(params.source())  # last: marks a complete key folder
    return out_dir


def _check(worker: ZkWorker, d: Path, params: CircuitParams, vk: dict) -> None:
    args, _ = random_opening(params, random.Random(1))
    wtns = d / "check.wtns"
    worker.request("witness", dir=str(d), args=args, out=str(wtns))
    proof = backends.prove_wtns(backends.groth16py().ProvingKey.load(str(d / backends.PROVING_KEY)), wtns)
    inputs = [f"0x{int(x):064x}" for x in args[:4]]
    ok = worker.request("verify", vk=vk, proof=proof.to_zokrates(), inputs=inputs)["valid"]
    changed = [inputs[0], inputs[1], inputs[2], f"0x{int(args[3]) + 1:064x}"]
    if not ok or worker.request("verify", vk=vk, proof=proof.to_zokrates(), inputs=changed)["valid"]:
        raise ProofError("groth16py's proof with the converted zokrates-js key does not verify: the variable "
                         "order of this zokrates-js is not the one zk/zokrates_keys.py assumes")
