"""A multi-party Groth16 setup for the chunk circuit: powers of tau (phase 1) and a circuit-specific phase 2.

ZoKrates compiles the circuit to circom's R1CS (zokrates-js `compile(src, {snarkjs: true})`); snarkjs (npm, run
as a child process) does the ceremony arithmetic: `powersoftau new/contribute/prepare phase2` for phase 1,
`zkey new/contribute/beacon/verify` for phase 2; groth16py imports the final `.zkey` for proving. Each phase-2
contributor gets one `.zkey` file, adds randomness (drawn here, handed to snarkjs on stdin, never on argv) and
passes the new file on; `verify` replays the whole transcript (phase 1 file, every contribution, the beacon)
against the circuit. The ceremony is sound if any one contributor destroyed their randomness. zk/README.md,
"Trusted setup", says how to run it and how a deployment imports a public perpetual powers-of-tau instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

from runtime.procs import ChildProcess, ProcessError
from zk import backends
from zk.circuit import CircuitParams
from zk.fast_verifier import FAST_VERIFIER_NAME, load_verification_key, render_fast_verifier
from zk.prover import REPO_ROOT, ProofError, ZkWorker, find_node

logger = logging.getLogger(__name__)

SNARKJS = REPO_ROOT / "node_modules" / "snarkjs" / "build" / "cli.cjs"
MANIFEST = "ceremony.json"
PHASE1 = "phase1.ptau"
INITIAL_ZKEY = "circuit_0000.zkey"
STEP_TIMEOUT = 3600.0
PUBLIC_INPUTS = 4


class CeremonyError(ProofError):
    """A ceremony step failed or a transcript does not verify."""


def snarkjs(*args: str, stdin: str | None = None, timeout: float = STEP_TIMEOUT) -> str:
    """Run the snarkjs CLI (a child process of ours); its output, or CeremonyError with its last lines."""
    if not SNARKJS.is_file():
        raise CeremonyError(f"snarkjs is not installed under {REPO_ROOT}; run `./dev.sh install`")
    child = ChildProcess([find_node(), str(SNARKJS), *args], name="snarkjs", cwd=REPO_ROOT,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        child.start()
    except ProcessError as exc:
        raise CeremonyError(str(exc)) from exc
    timer = threading.Timer(timeout, child.stop)
    timer.start()
    try:
        assert child.stdin is not None and child.stdout is not None
        if stdin is not None:
            child.stdin.write(stdin.encode())
        child.stdin.close()
        out = child.stdout.read().decode(errors="replace")
        code = child.wait()
    finally:
        timer.cancel()
        child.stop()
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # snarkjs colours its log
    if code != 0:
        tail = "\n".join(line for line in out.splitlines()[-8:] if line.strip())
        raise CeremonyError(f"snarkjs {args[0]} {args[1] if len(args) > 1 else ''} failed (exit {code}): {tail}")
    return out


def _entropy() -> str:
    return os.urandom(32).hex() + "\n"


def _hashes(out: str) -> list[str]:
    """The 64-byte hashes snarkjs prints as four lines of four 8-hex-digit groups after a label."""
    groups = re.findall(r"\b[0-9a-f]{8}\b", out)
    return ["".join(groups[i : i + 16]) for i in range(0, len(groups) - 15, 16)]


def power_for(constraints: int) -> int:
    """Smallest powers-of-tau size for the circuit: 2^power >= constraints + public inputs + 1."""
    return max(8, math.ceil(math.log2(constraints + PUBLIC_INPUTS + 1)))


def _manifest(d: Path) -> dict:
    try:
        return json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CeremonyError(f"{d} is not a ceremony folder (no readable {MANIFEST}): {exc}; run "
                            f"`python -m zk ceremony init` first") from exc


def init(d: Path, params: CircuitParams, ptau: Path | None = None, phase1_contributions: int = 1) -> Path:
    """Compile the circuit into `d`, make phase 1 (or take `ptau`), start phase 2; returns the first .zkey.

    Without `ptau` phase 1 is made here: `powersoftau new` and `phase1_contributions` contributions with fresh
    randomness, each recorded in ceremony.json, then `prepare phase2`. That is a local phase 1, only as strong
    as this machine; a deployment passes a public perpetual transcript's prepared file (zk/README.md)."""
    d.mkdir(parents=True, exist_ok=True)
    with ZkWorker(timeout=STEP_TIMEOUT) as worker:
        info = worker.request("compile", timeout=STEP_TIMEOUT, source=params.source(), dir=str(d), r1cs=True)
    (d / "source.zok").write_text(params.source())
    power = power_for(info["constraints"])
    manifest: dict = {"circuit_id": params.circuit_id, "params": params.model_dump(),
                      "constraints": info["constraints"], "power": power, "phase1": []}
    if ptau is not None:
        shutil.copyfile(ptau, d / PHASE1)
        manifest["phase1"].append({"imported": str(ptau)})
    else:
        manifest["phase1"] = local_phase1(d / PHASE1, power, phase1_contributions)
    snarkjs("zkey", "new", str(d / backends.R1CS), str(d / PHASE1), str(d / INITIAL_ZKEY))
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2))
    logger.info("ceremony for circuit %s (%d constraints, 2^%d) started in %s", params.circuit_id,
                info["constraints"], power, d)
    return d / INITIAL_ZKEY


def local_phase1(out: Path, power: int, contributions: int = 1) -> list[dict]:
    """A powers-of-tau file of 2^power prepared for phase 2, made on this machine: `powersoftau new`, then
    `contributions` contributions with fresh randomness (their names and hashes are returned for the record),
    then `prepare phase2`. Circuit-independent: one file serves every circuit up to 2^power constraints."""
    if contributions < 1:
        raise CeremonyError("a local phase 1 needs at least one contribution")
    tmp = out.with_name(f"{out.stem}_0000.ptau")
    snarkjs("powersoftau", "new", "bn128", str(power), str(tmp))
    records = []
    for i in range(1, contributions + 1):
        nxt = out.with_name(f"{out.stem}_{i:04d}.ptau")
        name = f"local phase-1 contribution {i}"
        result = snarkjs("powersoftau", "contribute", str(tmp), str(nxt), f"--name={name}", stdin=_entropy())
        records.append({"name": name, "hash": (_hashes(result) or [""])[-1]})
        tmp.unlink()
        tmp = nxt
    snarkjs("powersoftau", "prepare", "phase2", str(tmp), str(out))
    tmp.unlink()
    return records


def contribute(previous: Path, out: Path, name: str) -> str:
    """Add this machine's randomness to `previous`, writing `out`; returns the contribution hash to publish."""
    result = snarkjs("zkey", "contribute", str(previous), str(out), f"--name={name}", stdin=_entropy())
    hashes = _hashes(result)
    return hashes[-1] if hashes else ""


def beacon(previous: Path, out: Path, beacon_hash: str, iterations_exp: int = 10) -> str:
    """The last contribution: a public random beacon (e.g. a future block hash), so no one chose the end."""
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{2,}", beacon_hash) or len(beacon_hash.removeprefix("0x")) % 2:
        raise CeremonyError(f"the beacon must be a hex string of whole bytes, got {beacon_hash!r}")
    result = snarkjs("zkey", "beacon", str(previous), str(out), beacon_hash.removeprefix("0x"), str(iterations_exp),
                     "--name=final beacon")
    hashes = _hashes(result)
    return hashes[-1] if hashes else ""


def verify(d: Path, zkey: Path) -> str:
    """Replay the whole transcript of `zkey` (phase 1, each contribution, the beacon) against the circuit in `d`.

    Returns snarkjs's report (contributions with their hashes); raises CeremonyError saying what is wrong."""
    _manifest(d)
    try:
        out = snarkjs("zkey", "verify", str(d / backends.R1CS), str(d / PHASE1), str(zkey))
    except CeremonyError as exc:
        raise CeremonyError(f"the transcript {zkey} does NOT verify against the circuit and phase 1 in {d}: "
                            f"{exc}") from exc
    if "ZKey Ok!" not in out:
        bad = [line.strip() for line in out.splitlines() if "INVALID" in line or "ERROR" in line]
        raise CeremonyError(f"the transcript {zkey} does NOT verify: {'; '.join(bad) or out[-500:]}")
    return out


def finalize(d: Path, zkey: Path, out: Path) -> Path:
    """Verify the transcript, then write a key folder for the groth16py backend (`ChunkProver(...,
    backend="groth16py", key_dir=out)`) and its gas-lean verifier contract, `out/FastChunkVerifier.sol`."""
    manifest = _manifest(d)
    verify(d, zkey)
    out.mkdir(parents=True, exist_ok=True)
    pk, vk = backends.groth16py().import_zkey(str(zkey))
    snarkjs("zkey", "export", "verificationkey", str(zkey), str(out / "snarkjs_vk.json"))
    exported = json.loads((out / "snarkjs_vk.json").read_text())
    if backends.zokrates_vk(exported) != backends.zokrates_vk(json.loads(vk.to_json())):
        raise CeremonyError("groth16py's import of the final key disagrees with snarkjs's verification key")
    for f in ("program.bin", "abi.json", backends.R1CS, "source.zok"):
        shutil.copyfile(d / f, out / f)
    backends.write_keys(out, pk, vk)
    shutil.copyfile(zkey, out / "final.zkey")
    (out / MANIFEST).write_text(json.dumps({**manifest, "final": zkey.name}, indent=2))
    key = out / "verification.key.json"
    (out / f"{FAST_VERIFIER_NAME}.sol").write_text(
        render_fast_verifier(load_verification_key(key), origin=f"ceremony {manifest['circuit_id']}"))
    return out
