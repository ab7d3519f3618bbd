"""A small deployed escrow world for tests and benchmarks: stand-in verifier, token, escrow, funded accounts.

Everything goes through the real parts (anvil, solc-js artifacts, zokrates-js proofs); nothing is mocked.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict

from protocol.contribution import Contribution
from protocol.sampling import contribute_chunk
from swarm.chain.client import ChainClient
from swarm.chain.devchain import DevChain
from swarm.chain.models import ExperimentSpec
from swarm.chain.safety import BATCH_VERIFIERS, STANDIN_PROOF_SECONDS, STANDIN_VERIFIERS
from swarm.chain.standin import STANDIN_VERIFIER, StandInProofError, prove_standin
from swarm.chain.wallet import Wallet

STANDIN_CHUNK, STANDIN_DEPTH = 1_000, 8  # the shape the tests declare for the stand-in verifiers


class Timing(BaseModel):
    """Round windows used by the tests (seconds)."""

    model_config = ConfigDict(frozen=True)

    round_duration: int = 100
    submit_window: int = 50
    audit_window: int = 100
    slash_grace: int = 100
    unbonding_delay: int = 1_000


class EscrowWorld:
    """Account 0 deploys and funds; accounts 1.. are peers. Clients are fresh per world (nonces start clean)."""

    def __init__(
        self,
        chain: DevChain,
        *,
        token_contract: str = "TestToken",
        min_stake: int = 100,
        reporter_bps: int = 2_000,
        timing: Timing | None = None,
        peer_tokens: int = 10_000,
        verifier_contract: str = STANDIN_VERIFIER,
        audit_bond: int = 10,
        batch_fee: int = 0,
    ) -> None:
        self.chain = chain
        self.timing = timing or Timing()
        self.clients = [ChainClient(chain.rpc_url, Wallet(a.private_key)) for a in chain.accounts]
        self.funder = self.clients[0]
        # every stand-in verifier is deployed and pinned (the batch one with batch=True); experiments use
        # `verifier_contract` by default
        self.verifiers = {name: self.funder.deploy(name)[0] for name in STANDIN_VERIFIERS}
        self.verifier = self.verifiers[verifier_contract]  # must verify stand-in proofs
        self.token, _ = self.funder.deploy(token_contract)
        shapes = [self.funder.verifier_shape(a, chunk=STANDIN_CHUNK, depth=STANDIN_DEPTH,
                                             proof_seconds=STANDIN_PROOF_SECONDS, batch=name in BATCH_VERIFIERS)
                  for name, a in self.verifiers.items()]  # fmt: skip
        self.audit_bond = audit_bond
        self.escrow = self.funder.deploy_escrow(
            self.token, min_stake=min_stake, unbonding_delay=self.timing.unbonding_delay,
            slash_grace=self.timing.slash_grace, reporter_bps=reporter_bps, audit_bond=audit_bond,
            verifiers=shapes, batch_fee=batch_fee,
        )  # fmt: skip
        for c in self.clients[1:]:
            c.attach(self.escrow)
        for c in self.clients:
            self.mint(c.address, peer_tokens)

    def revert_to(self, snapshot: str) -> None:
        """Roll the dev chain back to `snapshot` and make every client re-read its nonce."""
        self.chain.rpc("evm_revert", [snapshot])
        for c in self.clients:
            c.forget_nonce()

    @property
    def peers(self) -> list[ChainClient]:
        return self.clients[1:]

    def mint(self, to: str, amount: int) -> None:
        self.funder.transact("mint", to, amount, contract=self.funder.token)

    def create_experiment(
        self, *, stage_params: Sequence[int] = (5_000, 3_000), chunk_size: int = STANDIN_CHUNK, audits: int = 2,
        num_rounds: int = 10, reward_per_round: int = 1_000, norm_bound: int = 10**6, pool: int = 0,
        start: int | None = None, verifier: str | None = None, min_norm_log2: int = 0,
        client: ChainClient | None = None, timing: Timing | None = None, require_certificate: bool = False,
    ) -> int:  # fmt: skip
        """Create (as `client`, default the funder) and fund an experiment; returns its id."""
        t = timing or self.timing
        spec = ExperimentSpec(
            verifier=verifier or self.verifier, start=self.funder.block_timestamp() if start is None else start,
            round_duration=t.round_duration, submit_window=t.submit_window, audit_window=t.audit_window,
            audits_per_peer=audits, num_rounds=num_rounds, chunk_size=chunk_size, reward_per_round=reward_per_round,
            norm_bound=norm_bound, min_norm_log2=min_norm_log2, stage_params=list(stage_params),
            require_certificate=require_certificate,
        )  # fmt: skip
        creator = client or self.funder
        exp = creator.create_experiment(spec)
        if pool:
            creator.fund(exp, pool)
        return exp

    def goto(self, experiment: int, round: int, phase: str = "train", offset: int = 0) -> None:
        """Set the chain's clock to a phase of a round: train | audit (submission over) | after (audit over)."""
        e = self.funder.experiment(experiment)
        at = {
            "train": e.start + round * e.round_duration,
            "audit": e.submission_end(round),
            "after": e.audit_end(round),
        }[phase] + offset
        if at > self.chain.latest_timestamp():
            self.chain.set_next_timestamp(at)

    def contribution(
        self, peer: ChainClient, experiment: int, round: int, stage: int, root: int, norm_sq: int = 100,
        *, chunk: int | None = None, as_peer: str | None = None,
    ) -> Contribution:  # fmt: skip
        """An unproven contribution of `peer` that opens c0 (or `chunk`); `as_peer` proves for another address."""
        address = as_peer or peer.address
        if chunk is None:
            chunk = contribute_chunk(root, address, peer.num_chunks(experiment, stage))
        return Contribution(experiment=experiment, round=round, stage=stage, peer=address, root=root,
                            norm_sq=norm_sq, chunk=chunk)

    def prove(self, contributions: Sequence[Contribution], experiment: int) -> list[Contribution]:
        return prove_standin(contributions, self.funder.experiment(experiment).norm_bound)


class StandInProver:
    """A settler's prover (zk.background.BackgroundProver's interface) that makes stand-in proofs with real
    zokrates-js: the commitment needs only `root`, `norm_sq` and `num_chunks`. `fail(round)` makes every proof of
    that round fail (a peer that cannot answer its audits)."""

    def __init__(self, workers: int = 2) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self.workers = workers
        self.failing: set[int] = set()
        self.jobs: list[tuple[int, int, int, list[int]]] = []  # (experiment, round, stage, chunks) in order
        self._lock = threading.Lock()

    def start(self) -> StandInProver:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="standin-prover")
        return self

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, commitment: Any, *, experiment: int, round: int, stage: int, peer: str, chunks: list[int],
               norm_bound: int, deadline: float | None = None) -> Future[list[Contribution]]:  # fmt: skip
        assert self._pool is not None, "start() the prover first"
        with self._lock:
            self.jobs.append((experiment, round, stage, list(chunks)))
        wanted = [Contribution(experiment=experiment, round=round, stage=stage, peer=peer, root=commitment.root,
                               norm_sq=commitment.norm_sq, chunk=c) for c in chunks]  # fmt: skip

        def prove() -> list[Contribution]:
            if round in self.failing:
                raise StandInProofError(f"round {round}: this prover was told to fail")
            return prove_standin(wanted, norm_bound)

        return self._pool.submit(prove)
