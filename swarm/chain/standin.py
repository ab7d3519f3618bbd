"""Proofs for the stand-in chunk verifier (contracts/standin/), made by real zokrates-js in a Node subprocess.

Used by the chain tests, the benchmark and the demo until zk/ exports the real chunk circuit's verifier.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence

from protocol.contribution import Contribution, Groth16Proof
from runtime.procs import ChildProcess
from swarm.chain.errors import ChainError
from swarm.chain.paths import CONTRACTS_DIR, PROJECT_ROOT

PROVE_SCRIPT = CONTRACTS_DIR / "standin" / "prove.mjs"
STANDIN_VERIFIER = "StandInChunkVerifier"
PROVE_TIMEOUT_S = 120.0


class StandInProofError(ChainError):
    """zokrates-js could not prove a stand-in statement (e.g. norm_sq above the bound)."""


def prove_standin(contributions: Sequence[Contribution], norm_bound: int) -> list[Contribution]:
    """Return `contributions` with stand-in proofs for public inputs [context, root, norm_sq, norm_bound]."""
    if not contributions:
        return []
    node = shutil.which("node")
    if node is None:
        raise StandInProofError("node is not on PATH; install Node 20 and run `./dev.sh install`")
    request = json.dumps({"inputs": [[str(x) for x in c.public_inputs(norm_bound)] for c in contributions]})
    out: list[bytes] = []
    with tempfile.TemporaryFile() as err_file:
        child = ChildProcess([node, str(PROVE_SCRIPT)], name="standin-prover", cwd=PROJECT_ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file)  # fmt: skip
        with child:

            def talk() -> None:  # write the request, read the whole answer (stderr goes to a file: no deadlock)
                assert child.stdin is not None and child.stdout is not None
                with child.stdin:
                    child.stdin.write(request.encode())
                out.append(child.stdout.read())
                child.wait()

            talker = threading.Thread(target=talk, name="standin-prover-io", daemon=True)
            talker.start()
            talker.join(PROVE_TIMEOUT_S)
            if talker.is_alive():
                raise StandInProofError(f"zokrates-js did not finish {len(contributions)} proofs in time")
            code = child.returncode
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    if code != 0 or not out:
        raise StandInProofError(f"stand-in prover failed: {err.strip()[-2000:]}")
    proofs = json.loads(out[0])["proofs"]
    result = []
    for c, p in zip(contributions, proofs, strict=True):
        if "error" in p:
            raise StandInProofError(f"cannot prove round {c.round} stage {c.stage}: {p['error'][:300]}")
        result.append(c.model_copy(update={"proof": Groth16Proof.from_zokrates(p)}))
    return result
