"""Proofs for the stand-in chunk verifier (contracts/standin/), made by real zokrates-js in a Node subprocess.

Used by the chain tests, the benchmark and the demo until zk/ exports the real chunk circuit's verifier.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence

from protocol.contribution import Contribution, Groth16Proof
from runtime.procs import die_with_parent
from swarm.chain.devchain import kill_process_group
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
    request = {"inputs": [[str(x) for x in c.public_inputs(norm_bound)] for c in contributions]}
    proc = subprocess.Popen(
        [node, str(PROVE_SCRIPT)], cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 (PDEATHSIG needs it)
    )  # fmt: skip
    try:
        out, err = proc.communicate(json.dumps(request), timeout=PROVE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise StandInProofError(f"zokrates-js did not finish {len(contributions)} proofs in time") from exc
    finally:
        kill_process_group(proc)
    if proc.returncode != 0:
        raise StandInProofError(f"stand-in prover failed: {err.strip()[-2000:]}")
    proofs = json.loads(out)["proofs"]
    result = []
    for c, p in zip(contributions, proofs, strict=True):
        if "error" in p:
            raise StandInProofError(f"cannot prove round {c.round} stage {c.stage}: {p['error'][:300]}")
        result.append(c.model_copy(update={"proof": Groth16Proof.from_zokrates(p)}))
    return result
