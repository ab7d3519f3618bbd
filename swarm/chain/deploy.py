"""Deployments: the escrow stack on any EVM chain (deploy_escrow_stack, `python -m swarm.chain deploy`), and
deploy_demo, one call that turns a fresh dev chain into a ready local swarm economy.

deploy_escrow_stack deploys the verifier (FastChunkVerifier or zk/'s ChunkVerifier if built, else the stand-in),
a test token (or uses a given ERC-20) and the escrow; `Deployment` is what it returns and what deployment.json
holds. deploy_demo does that (or attaches to a `Deployment` read from such a file), creates and funds one demo
experiment and gives the dev accounts tokens and stakes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Self

from eth_account import Account
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from swarm.chain.build import load_artifacts
from swarm.chain.client import ChainClient
from swarm.chain.devchain import DevAccount
from swarm.chain.errors import ChainError
from swarm.chain.models import ExperimentSpec
from swarm.chain.safety import (
    BATCH_VERIFIERS,
    KEY_DIR_BATCH_VERIFIER,
    REAL_PROOF_SECONDS,
    STANDIN_PROOF_SECONDS,
    STANDIN_VERIFIERS,
)
from swarm.chain.standin import STANDIN_VERIFIER
from swarm.chain.wallet import Wallet
from zk.circuit import DEFAULT_PARAMS

logger = logging.getLogger("swarm.chain.deploy")

TOKEN = 10**18  # the test token has 18 decimals
REAL_VERIFIER = "ChunkVerifier"
FAST_VERIFIER = "FastChunkVerifier"  # zk/fast_verifier.py's verifier of the same keys: ~21k gas less per proof
BATCH_VERIFIER = "BatchChunkVerifier"  # zk/batch_verifier.py's: FastChunkVerifier's verifyTx plus verifyBatch


class DemoConfig(BaseModel):
    """The demo economy's knobs; defaults suit a laptop swarm with 30-second rounds."""

    model_config = ConfigDict(frozen=True)

    stage_params: tuple[int, ...] = (50_000, 50_000)
    chunk_size: int = 1024
    round_duration: int = 30
    submit_window: int = 30
    audit_window: int = 80  # the escrow's floor for k = 2 real proofs: 2 * (10 + 2 * 15) (safety.min_audit_window)
    audits_per_peer: int = 2
    num_rounds: int = 1000
    norm_bound: int = 1 << 100
    min_norm_log2: int = 0  # normSq >= 1: an all-zero update is refused
    # pay only records their (round, stage) group certified as averaged (SwarmCertifier; docs/protocol.md);
    # swarm-demo turns it on, direct users of deploy_demo/DemoEconomy get the old rule unless they ask
    require_certificate: bool = False
    audit_bond: int = 1 * TOKEN
    reward_per_round: int = 10 * TOKEN
    pool: int = 10_000 * TOKEN
    min_stake: int = 10 * TOKEN  # collateral locked per contribution until it is claimed or slashed
    stake: int = 100 * TOKEN  # 10 contributions in flight (a round stays liable ~4 rounds of 30 s)
    peer_tokens: int = 1_000 * TOKEN
    unbonding_delay: int = 600
    slash_grace: int = 120
    reporter_bps: int = 2_000
    verifier: str = "auto"  # "auto" | "BatchChunkVerifier" | "FastChunkVerifier" | "ChunkVerifier" | stand-ins
    # batchFee: tokens a batch's submitter earns per other peer's included entry. 0.01 SWT is 0.1% of a round's
    # reward: enough that submitting is paid (not a loss of tokens to the ranked peer), too small to matter to
    # the contributors' shares (a 10-peer batch pays its submitter 0.09 SWT of the round's 10)
    batch_fee: int = TOKEN // 100
    # the verifier's pinned proof time (sets the window floors); None: REAL_PROOF_SECONDS (or the stand-in's 1 s).
    # Tests on a machine that proves a real chunk in ~2 s may pin less, for shorter windows.
    proof_seconds: int | None = None


class Deployment(BaseModel):
    """An escrow stack on one chain: what `python -m swarm.chain deploy` writes (deployment.json) and what
    deploy_demo(..., deployment=) and peers (--chain-rpc, --escrow) read. No keys."""

    model_config = ConfigDict(frozen=True)

    rpc_url: str
    chain_id: int
    token: str
    escrow: str
    verifier: str
    verifier_name: str

    def save(self, path: str | Path) -> Path:
        """Write this deployment as JSON to `path` (its folder is created)."""
        out = Path(path).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.model_dump_json(indent=2) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a deployment file (a demo's, with its experiment, reads as its escrow stack too)."""
        try:
            return cls.model_validate(json.loads(Path(path).expanduser().read_text()))
        except (OSError, ValueError, ValidationError) as exc:
            raise ChainError(f"cannot read the deployment file {path}: {str(exc).splitlines()[0]}") from exc


class DemoDeployment(Deployment):
    """Addresses and ids the demo's peers need (no keys: peers get those from the DevChain)."""

    experiment_id: int
    start: int
    funder: str
    peers: tuple[str, ...]


def choose_verifier(preference: str = "auto") -> str:
    """The verifier to deploy: the first built of BatchChunkVerifier, FastChunkVerifier and zk's ChunkVerifier
    (all for the committed development keys), else the stand-in."""
    if preference != "auto":
        return preference
    artifacts = load_artifacts()
    return next((name for name in (BATCH_VERIFIER, FAST_VERIFIER, REAL_VERIFIER) if name in artifacts),
                STANDIN_VERIFIER)  # fmt: skip


def key_dir_batch_verifier(key_dir: Path) -> dict:
    """`{"name", "abi", "bytecode", "deployed_bytecode"}` of the BatchChunkVerifier for exactly the keys in
    `key_dir` (zk.batch_verifier's contract, compiled by the pinned solc-js), compiled once and kept next to the
    keys as KEY_DIR_BATCH_VERIFIER, where swarm.chain.safety.key_dir_code_hashes finds its runtime code."""
    from zk.batch_verifier import render_batch_verifier
    from zk.fast_verifier import load_verification_key
    from zk.prover import ZkWorker

    key = Path(key_dir) / "verification.key.json"
    out = Path(key_dir) / KEY_DIR_BATCH_VERIFIER
    source = render_batch_verifier(load_verification_key(key), BATCH_VERIFIER, Path(key_dir).name)
    digest = hashlib.sha256(source.encode()).hexdigest()
    if out.is_file():
        cached = json.loads(out.read_text())
        if cached.get("source_sha256") == digest:
            return cached
    with ZkWorker() as worker:
        artifact = worker.request("compile_solidity", source=source, name=BATCH_VERIFIER)
    artifact = {**artifact, "name": BATCH_VERIFIER, "source_sha256": digest}
    out.write_text(json.dumps(artifact))
    return artifact


class ChainTarget(Protocol):
    """What deploy_demo needs of a chain: a DevChain, or any RPC with the deployer's account first."""

    rpc_url: str
    chain_id: int
    accounts: Sequence[Any]  # .address, .private_key; account 0 deploys and funds


class RemoteChain(BaseModel):
    """A ChainTarget we did not start: the chain a deployment file names, with the researcher as account 0."""

    rpc_url: str
    chain_id: int
    accounts: list[DevAccount]


def remote_demo_chain(deployment: Deployment, funder: Wallet, peers: int, peer_wei: int) -> RemoteChain:
    """The chain `deployment` names, for the demo: its RPC must serve the file's chain id; `funder` (the
    researcher, who must own the deployment's TestToken to mint the pool and the peers' stakes) is account 0, then
    `peers` new wallets, each sent `peer_wei` of gas money by the funder (keys only in memory and in the demo's
    0600 key files)."""
    client = ChainClient(deployment.rpc_url, funder)
    actual = client.chain_id()
    if actual != deployment.chain_id:
        raise ChainError(f"{deployment.rpc_url} serves chain {actual}, but the deployment file says chain "
                         f"{deployment.chain_id}: nothing sent")  # fmt: skip
    need = peers * peer_wei
    if client.eth_balance() <= need:
        raise ChainError(f"the researcher {funder.address} has {client.eth_balance()} wei on chain {actual}; the "
                         f"demo sends {peer_wei} wei of gas money to each of {peers} peers: fund it first")  # fmt: skip
    accounts = [DevAccount(address=funder.address, private_key=SecretStr(funder.account.key.hex()))]
    for _ in range(peers):
        new = Account.create()
        client.send_eth(new.address, peer_wei)
        accounts.append(DevAccount(address=new.address, private_key=SecretStr(new.key.hex())))
    return RemoteChain(rpc_url=deployment.rpc_url, chain_id=actual, accounts=accounts)


def deploy_escrow_stack(
    client: ChainClient, config: DemoConfig | None = None, *, verifier_artifact: dict | None = None,
    token: str | None = None, batch_fee: int = 0,
) -> Deployment:  # fmt: skip
    """Deploy the verifier, the token (a TestToken unless `token`, an ERC-20 address, is given) and the escrow
    pinning that verifier, from `client`'s wallet; returns the addresses.

    `verifier_artifact` (`{"abi", "bytecode"}`, from `zk.keys.fast_setup`, or key_dir_batch_verifier's with its
    "name") deploys the verifier of a key folder other than the committed one (groth16py's keys), under its
    "name" (default FastChunkVerifier)."""
    cfg = config or DemoConfig()
    if verifier_artifact is not None:
        verifier_name = verifier_artifact.get("name", FAST_VERIFIER)
        client.add_artifact(verifier_name, verifier_artifact["abi"], verifier_artifact["bytecode"])
    else:
        verifier_name = choose_verifier(cfg.verifier)
    verifier, _ = client.deploy(verifier_name)
    if token is None:
        token, _ = client.deploy("TestToken")
    standin = verifier_name in STANDIN_VERIFIERS
    shape = client.verifier_shape(
        verifier, chunk=cfg.chunk_size if standin else DEFAULT_PARAMS.chunk, depth=DEFAULT_PARAMS.depth,
        proof_seconds=cfg.proof_seconds or (STANDIN_PROOF_SECONDS if standin else REAL_PROOF_SECONDS),
        batch=verifier_name in BATCH_VERIFIERS,
    )  # fmt: skip
    client.deploy_escrow(
        token, min_stake=cfg.min_stake, unbonding_delay=cfg.unbonding_delay, slash_grace=cfg.slash_grace,
        reporter_bps=cfg.reporter_bps, audit_bond=cfg.audit_bond, verifiers=[shape], batch_fee=batch_fee,
    )  # fmt: skip
    return Deployment(rpc_url=client.rpc_url, chain_id=client.chain_id(), token=token,
                      escrow=client.escrow_address, verifier=verifier, verifier_name=verifier_name)  # fmt: skip


def deploy_demo(chain: ChainTarget, config: DemoConfig | None = None, *, stakers: Sequence[int] | None = None,
                verifier_artifact: dict | None = None, deployment: Deployment | None = None) -> DemoDeployment:
    """Deploy and fund the demo on `chain`. Account 0 is the researcher; `stakers` (default: all others) stake.

    `deployment` (e.g. `Deployment.load("deployment.json")`, written by `python -m swarm.chain deploy`): use
    that escrow stack instead of deploying one (its chain id must be `chain`'s; minting needs account 0 to own
    its TestToken). `verifier_artifact`: see deploy_escrow_stack."""
    cfg = config or DemoConfig()
    funder = ChainClient(chain.rpc_url, Wallet(chain.accounts[0].private_key))
    if deployment is None:
        stack = deploy_escrow_stack(funder, cfg, verifier_artifact=verifier_artifact, batch_fee=cfg.batch_fee)
    else:
        if deployment.chain_id != chain.chain_id:
            raise ChainError(f"the deployment is on chain {deployment.chain_id}, this chain is {chain.chain_id}")
        funder.attach(deployment.escrow)
        stack = deployment
    verifier, verifier_name, token = stack.verifier, stack.verifier_name, stack.token
    start = funder.block_timestamp()
    spec = ExperimentSpec(
        verifier=verifier, start=start, round_duration=cfg.round_duration, submit_window=cfg.submit_window,
        audit_window=cfg.audit_window, audits_per_peer=cfg.audits_per_peer, num_rounds=cfg.num_rounds,
        chunk_size=cfg.chunk_size, reward_per_round=cfg.reward_per_round, norm_bound=cfg.norm_bound,
        min_norm_log2=cfg.min_norm_log2, stage_params=list(cfg.stage_params),
        require_certificate=cfg.require_certificate,
    )  # fmt: skip
    experiment_id = funder.create_experiment(spec)
    funder.transact("mint", funder.address, cfg.pool, contract=funder.token)
    funder.fund(experiment_id, cfg.pool)
    indices = list(stakers) if stakers is not None else list(range(1, len(chain.accounts)))
    peers = []
    for i in indices:
        wallet = Wallet(chain.accounts[i].private_key)
        funder.transact("mint", wallet.address, cfg.peer_tokens, contract=funder.token)
        funder.with_wallet(wallet).stake(cfg.stake)
        peers.append(wallet.address)
    logger.info("demo economy: escrow %s, experiment %d, %d staked peers, verifier %s", funder.escrow_address,
                experiment_id, len(peers), verifier_name)
    return DemoDeployment(
        rpc_url=chain.rpc_url, chain_id=chain.chain_id, token=token, escrow=funder.escrow_address,
        verifier=verifier, verifier_name=verifier_name, experiment_id=experiment_id, start=start,
        funder=funder.address, peers=tuple(peers),
    )  # fmt: skip
