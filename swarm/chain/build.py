"""The contract build: runs contracts/build.mjs (pinned solc-js, settings in contracts/compiler.json)
and loads the ABI/bytecode artifacts it writes to contracts/artifacts/.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from swarm.chain.errors import BuildError
from swarm.chain.paths import ARTIFACTS_DIR, CONTRACTS_DIR, PROJECT_ROOT

logger = logging.getLogger("swarm.chain.build")

BUILD_SCRIPT = CONTRACTS_DIR / "build.mjs"
BUILD_TIMEOUT_S = 180.0


class Artifact(BaseModel):
    """One compiled contract: what web3 needs to deploy it and talk to it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str
    source: str
    abi: list[dict]
    bytecode: str
    deployed_bytecode: str


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is not on PATH; install Node 20 and run `./dev.sh install`")
    return node


def _run_build(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [_node(), str(BUILD_SCRIPT), *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
            check=False, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"solc-js did not finish within {BUILD_TIMEOUT_S:.0f} s") from exc


def compile_contracts() -> dict[str, Artifact]:
    """Compile contracts/*.sol (+ generated/, standin/, test/), write contracts/artifacts/, return them."""
    proc = _run_build()
    if proc.returncode != 0:
        raise BuildError(f"contract build failed: {proc.stderr.strip()[-4000:]}")
    logger.info("contracts compiled: %s", proc.stdout.strip())
    return load_artifacts()


def artifacts_up_to_date() -> bool:
    """Whether the committed artifacts are exactly what the current sources compile to."""
    proc = _run_build("--check")
    if proc.returncode not in (0, 1):
        raise BuildError(f"contract build failed: {proc.stderr.strip()[-4000:]}")
    return proc.returncode == 0


def load_artifacts(directory: Path = ARTIFACTS_DIR) -> dict[str, Artifact]:
    """Read every artifact in `directory` (no compiler needed)."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise BuildError(f"no contract artifacts in {directory}; run `node contracts/build.mjs`")
    return {a.name: a for a in map(_read_artifact, files)}


def load_artifact(name: str, directory: Path = ARTIFACTS_DIR) -> Artifact:
    """Read one artifact by contract name."""
    path = directory / f"{name}.json"
    if not path.is_file():
        raise BuildError(f"no artifact for contract {name!r} in {directory}; run `node contracts/build.mjs`")
    return _read_artifact(path)


def _read_artifact(path: Path) -> Artifact:
    try:
        raw = json.loads(path.read_text())
        return Artifact(
            name=raw["contractName"], source=raw["sourceName"], abi=raw["abi"], bytecode=raw["bytecode"],
            deployed_bytecode=raw["deployedBytecode"],
        )  # fmt: skip
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as exc:
        raise BuildError(f"artifact {path} is unreadable ({exc}); run `node contracts/build.mjs`") from exc
