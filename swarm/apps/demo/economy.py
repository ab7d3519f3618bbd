"""The demo's economy: an embedded dev chain (anvil --network optimism), the escrow deployed and funded for the
demo's experiment, circuit keys ready, and one 0600 wallet key file per stage peer. Stopped on every path.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Self

from swarm.chain.client import ChainClient
from swarm.chain.deploy import (
    TOKEN,
    DemoConfig,
    DemoDeployment,
    Deployment,
    RemoteChain,
    deploy_demo,
    remote_demo_chain,
)
from swarm.chain.devchain import DevChain
from swarm.chain.errors import ChainError
from swarm.chain.safety import (
    REAL_PROOF_SECONDS,
    REAL_VERIFIERS,
    key_dir_code_hashes,
    known_code_hashes,
    min_audit_window,
)
from swarm.chain.wallet import Wallet, create_key_file

logger = logging.getLogger("swarm.demo")

SUBMIT_WINDOW_S = 120  # a round's proof may take this long on a busy 2-core laptop (3 provers + training)
AUDIT_WINDOW_S = min_audit_window(2, REAL_PROOF_SECONDS)  # the escrow's floor for k = 2 audits (80 s)
PEER_GAS_WEI = 10**16  # 0.01 ETH per stage peer on a --deployment chain: ~1e9 gas at an L2's 0.01 gwei


def stage_sizes(workload_name: str, n_stages: int) -> tuple[int, ...]:
    """Parameters per stage, as every peer cuts the model: the contract needs them to know each stage's chunks."""
    from swarm.models import get_workload

    stages = get_workload(workload_name).build_stages(n_stages, seed=0)
    return tuple(sum(p.numel() for p in s.parameters()) for s in stages)


def ensure_circuit_keys(backend: str = "groth16py") -> tuple[Path | None, dict | None]:
    """Compile and set up the default chunk circuit once, before any peer's prover needs it.

    groth16py (the default: ~4x fewer CPU-seconds per proof, BENCHMARKS "zk") gets this machine's development keys
    (made once, single-party) and the batch verifier (verifyTx and verifyBatch) for exactly those keys: returns
    (key folder, verifier artifact). zokrates uses the committed reproducible development keys and verifiers
    (the committed BatchChunkVerifier): returns (None, None)."""
    from swarm.chain.deploy import key_dir_batch_verifier
    from zk.circuit import DEFAULT_PARAMS
    from zk.keys import ensure_keys, fast_setup, has_keys
    from zk.prover import ZkWorker

    if backend == "groth16py":
        key_dir, _ = fast_setup(DEFAULT_PARAMS)
        return key_dir, key_dir_batch_verifier(key_dir)
    if not has_keys(DEFAULT_PARAMS):
        with ZkWorker() as worker:
            ensure_keys(worker, DEFAULT_PARAMS)
    return None, None


class DemoEconomy:
    """Owns the dev chain; `peer_args(i)` are the flags that make stage peer i a paid, proving peer."""

    def __init__(self, run_dir: Path, *, workload: str, n_stages: int, stage_peers: int, round_duration: int,
                 submit_window: int = SUBMIT_WINDOW_S, prover_backend: str = "groth16py", audits_per_peer: int = 2,
                 audit_window: int | None = None, proof_seconds: int | None = None,
                 deployment: Path | None = None, funder_key_file: Path | None = None,
                 require_certificate: bool = False) -> None:  # fmt: skip
        self.run_dir, self.stage_peers, self.prover_backend = run_dir, stage_peers, prover_backend
        # --deployment: the escrow stack of `python -m swarm.chain deploy` on its chain, the researcher's key from
        # `funder_key_file` (else SWARM_WALLET_KEY), new stage peer wallets funded by it; no embedded anvil
        self.deployment_file, self.funder_key_file = deployment, funder_key_file
        self.prover_key_dir: Path | None = None
        self.config = DemoConfig(
            stage_params=stage_sizes(workload, n_stages), round_duration=round_duration, submit_window=submit_window,
            audit_window=audit_window or min_audit_window(audits_per_peer, proof_seconds or REAL_PROOF_SECONDS),
            audits_per_peer=audits_per_peer, proof_seconds=proof_seconds, require_certificate=require_certificate,
        )  # fmt: skip
        self._stack = ExitStack()
        self.chain: DevChain | RemoteChain | None = None
        self.deployment: DemoDeployment | None = None
        self.key_files: list[Path] = []
        self.first_block = 0  # the summary reads the experiment's events from this block on

    def __enter__(self) -> Self:
        try:
            self.prover_key_dir, verifier_artifact = ensure_circuit_keys(self.prover_backend)
            if self.deployment_file is not None:
                stack = self._checked_stack()
                self.first_block = ChainClient(stack.rpc_url).block_number()  # its events: from here on
                funder = Wallet.load(self.funder_key_file)
                self.chain = remote_demo_chain(stack, funder, self.stage_peers, PEER_GAS_WEI)
                self.deployment = deploy_demo(self.chain, self.config, deployment=stack)
            else:
                # a block every second, as an L2 makes them: contracts read the time from the latest block
                self.chain = self._stack.enter_context(DevChain(accounts=self.stage_peers + 1, extra_args=["--block-time", "1"]))
                self.deployment = deploy_demo(self.chain, self.config, verifier_artifact=verifier_artifact)
            keys = self.run_dir / "keys"
            keys.mkdir(mode=0o700, parents=True, exist_ok=True)
            for i in range(self.stage_peers):
                path = keys / f"stage-peer-{i}.key"
                path.unlink(missing_ok=True)
                create_key_file(path, self.chain.accounts[i + 1].private_key)
                self.key_files.append(path)
        except BaseException:
            self._stack.close()
            raise
        return self

    def _checked_stack(self) -> Deployment:
        """The deployment file's stack, refused unless its verifier checks this machine's prover keys."""
        assert self.deployment_file is not None
        stack = Deployment.load(self.deployment_file)
        ours = {**known_code_hashes(REAL_VERIFIERS),
                **(key_dir_code_hashes(self.prover_key_dir) if self.prover_key_dir is not None else {})}  # fmt: skip
        if ChainClient(stack.rpc_url).code_hash(stack.verifier) not in ours:
            raise ChainError(f"the deployment's verifier {stack.verifier_name} ({stack.verifier}) does not check "
                             f"proofs of this machine's {self.prover_backend} keys: the stage peers could not be paid")
        return stack

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def window_s(self) -> int:
        """Seconds from a round's end until its rewards can be claimed."""
        return self.config.submit_window + self.config.audit_window

    def address_of(self, name: str) -> str:
        """The wallet address (lower case) of stage peer `name` ("stage-peer-<i>")."""
        assert self.chain is not None
        return self.chain.accounts[int(name.rsplit("-", 1)[1]) + 1].address.lower()

    def name_of(self, address: str) -> str:
        """The demo's name for a wallet address (a stage peer's, the researcher's, or the address itself)."""
        assert self.chain is not None
        names = {a.address.lower(): f"stage-peer-{i - 1}" if i else "researcher"
                 for i, a in enumerate(self.chain.accounts)}  # fmt: skip
        return names.get(address.lower(), address)

    def chain_args(self) -> list[str]:
        assert self.deployment is not None
        return ["--chain-rpc", self.deployment.rpc_url, "--escrow", self.deployment.escrow]

    def bootstrap_args(self) -> list[str]:
        assert self.deployment is not None
        return [*self.chain_args(), "--chain-experiment", str(self.deployment.experiment_id)]

    def peer_args(self, i: int) -> list[str]:
        prover = ["--prover-backend", self.prover_backend]
        if self.prover_key_dir is not None:
            prover += ["--prover-key-dir", str(self.prover_key_dir)]
        data = self.run_dir / "data" / f"stage-peer-{i}"  # its settlement journal: this run's chain, this run's folder
        return [*self.chain_args(), "--wallet-key-file", str(self.key_files[i]), "--data-dir", str(data), *prover]

    def summary_lines(self) -> list[str]:
        """On-chain outcome, read from the chain itself (not from what peers said)."""
        from swarm.settlement.costs import gas_report

        dep = self.deployment
        if dep is None:
            return []
        client = ChainClient(dep.rpc_url, escrow=dep.escrow)

        def events(name: str) -> list[dict]:  # this run's experiment only (a --deployment escrow is shared)
            return client.events(name, self.first_block, where={"experimentId": dep.experiment_id})

        contributed = events("Contributed")
        claimed = events("Claimed")
        finalized = events("RoundFinalized")
        audits = events("AuditAnswered")
        slashed = events("Slashed")
        paid = sum(e["amount"] for e in claimed)
        pool = client.experiment(dep.experiment_id).pool
        opened = events("AuditOpened")
        watchers = (f"watchers: {len(opened)} audits opened by peers on their own ("
                    f"{len({(e['round'], e['stage'], e['peer']) for e in audits})} answered, {len(slashed)} slashed)")
        return [
            (f"chain: {len(contributed)} proven contributions verified on-chain over "
            f"{len({e['round'] for e in contributed})} rounds; {len(finalized)} rounds finalized; "
            f"{len(audits)} audits answered; {len(slashed)} peers slashed"),
            (f"rewards claimed: {paid / TOKEN:.2f} SWT by {len({e['peer'] for e in claimed})} peers; "
            f"pool left {pool / TOKEN:.2f} SWT (escrow {dep.escrow}, verifier {dep.verifier_name})"),
            gas_report(client, dep.experiment_id, self.first_block).line(),  # what batching saves, per peer-round
            watchers, *[self._slash_line(client, e) for e in slashed],
            self._earned_line(contributed, claimed, events("Certified")),
            *self._certified_line(contributed, events("Certified")),
        ]

    def _certified_line(self, contributed: list[dict], certified: list[dict]) -> list[str]:
        """Per peer: its contributions that a group certificate marked as averaged, of those whose (round, stage)
        got a certificate (requireCertificate experiments)."""
        if not self.config.require_certificate:
            return []
        groups: dict[tuple[int, int], list[str]] = {}
        for e in contributed:
            groups.setdefault((e["round"], e["stage"]), []).append(e["peer"])
        marked: dict[str, list[int]] = {e["peer"]: [0, 0] for e in contributed}  # a peer in no certified group: 0/0
        for e in certified:
            members = sorted(groups.get((e["round"], e["stage"]), []), key=lambda a: int(a, 16))
            for i, peer in enumerate(members):
                marked.setdefault(peer, [0, 0])[0] += e["included"] >> i & 1
                marked[peer][1] += 1
        return ["certified contributions (averaged / in certified groups): " + ", ".join(
            f"{self.name_of(p)} {a}/{n}" for p, (a, n) in sorted(marked.items()))]

    def _earned_line(self, contributed: list[dict], claimed: list[dict], certified: list[dict]) -> str:
        """Per peer: contributions recorded, claimed, and tokens per claimed contribution (a requireCertificate
        experiment pays 0 for an uncertified one); and how many (round, stage) certificates reached the chain."""
        made: dict[str, int] = {}
        for e in contributed:
            made[e["peer"]] = made.get(e["peer"], 0) + 1
        got: dict[str, list[int]] = {}
        for e in claimed:
            got.setdefault(e["peer"], []).append(e["amount"])
        mode = (f"{len(certified)} group certificates" if self.config.require_certificate else
                "no certificates required")  # fmt: skip
        return f"earned ({mode}): " + ", ".join(
            f"{self.name_of(p)} {sum(got.get(p, [])) / TOKEN:.2f} SWT for {len(got.get(p, []))} claimed of {n} "
            f"contributed ({sum(got[p]) / len(got[p]) / TOKEN if got.get(p) else 0:.2f} per claimed round)"
            for p, n in sorted(made.items(), key=lambda x: self.name_of(x[0])))

    def _slash_line(self, client, e: dict) -> str:
        """One slash as the chain shows it: who, which round, the stake just before and after, the reporter."""
        peer = client.w3.to_checksum_address(e["peer"])
        before = client.escrow.functions.stakes(peer).call(block_identifier=e["block"] - 1)[0]
        after = client.escrow.functions.stakes(peer).call(block_identifier=e["block"])[0]
        to = client.w3.eth.get_transaction(e["tx"])["to"] or ""
        if to.lower() == str(client.read("fraudChecker")).lower():  # slashMismatch: a fraud proof, no audit
            how = (f"from its own signed part that does not match its root, sent by {self.name_of(e['reporter'])}'s "
                   f"watcher, paid {e['reporterReward'] / TOKEN:.2f} SWT")
        else:
            how = (f"its audit was opened by {self.name_of(e['reporter'])}'s watcher, paid "
                   f"{e['reporterReward'] / TOKEN:.2f} SWT and its bond back")
        return (f"slashed: {self.name_of(peer)} ({peer}) round {e['round']} stage {e['stage']}: stake "
                f"{before / TOKEN:.2f} -> {after / TOKEN:.2f} SWT ({e['amount'] / TOKEN:.2f} taken); {how}; "
                "the rest burned")
