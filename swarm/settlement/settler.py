"""Round settlement: the round hook that turns a stage peer's update into a proven on-chain contribution.

Per round: quantize Δ (the averaging's int8 quantizer) → Poseidon-Merkle commitment → Groth16 proof of the chunk
the contract picks (c0) → `contribute`; answers audits opened against it; once a round's audit window is over,
finalizes it (anyone may) and claims its share. All of it runs in one background thread, so training never waits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from protocol.contribution import Contribution
from protocol.sampling import contribute_chunk
from runtime.loops import StartStop
from swarm.chain.client import ChainClient
from swarm.chain.errors import ChainError, RevertError
from swarm.rounds.verified import commitment_of
from zk.background import BackgroundProver
from zk.circuit import DEFAULT_PARAMS, CircuitParams
from zk.commit import Commitment
from zk.prover import ProofError
from zk.quantize import QuantizationError

logger = logging.getLogger(__name__)

PROOF_TIMEOUT_S = 600.0
POLL_S = 1.0
# Custom errors that mean "someone already did it": finalize and claim are idempotent from our side.
ALREADY_DONE = {"AlreadyFinalized", "AlreadyClaimed"}


class SettlementEvent(BaseModel):
    """What the settler did, for the peer's event stream (`swarm/apps/events.py`) and the demo's summary."""

    model_config = ConfigDict(frozen=True)

    kind: str  # contributed | audit_answered | finalized | claimed | failed
    round: int
    stage: int
    detail: dict[str, Any] = {}


class RoundSettler(StartStop):
    """A round hook (`settler(report)`) backed by a thread that proves, contributes, finalizes and claims."""

    def __init__(
        self,
        client: ChainClient,
        experiment_id: int,
        *,
        params: CircuitParams = DEFAULT_PARAMS,
        on_event: Callable[[SettlementEvent], None] | None = None,
        publish: Callable[[Contribution, bool], None] | None = None,
        prover_workers: int = 1,
    ) -> None:
        self.client, self.experiment_id, self.params = client, experiment_id, params
        self.on_event = on_event or (lambda e: None)
        self.publish = publish or (lambda c, audit: None)  # e.g. GossipRelay.publish_contribution
        self._reports: queue.Queue[Any] = queue.Queue()
        self._open: dict[tuple[int, int], Commitment] = {}  # (round, stage) we contributed to, not yet claimed
        self._answered: set[tuple[int, int, int]] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._prover = BackgroundProver(params, workers=prover_workers)
        self._audit_block = 0
        self.earned = 0

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the prover (may compile + set up the circuit on first use) and the settling thread."""
        self._prover.start()
        self._state = self.client.experiment(self.experiment_id)
        self._thread = threading.Thread(target=self._run, name="round-settler", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stop.set()
        self._reports.put(None)
        if self._thread is not None:
            self._thread.join(timeout=PROOF_TIMEOUT_S)
            self._thread = None
        self._prover.shutdown()

    def __call__(self, report: Any) -> None:
        """The round hook: hand the round over and return at once (StagePeer calls this in its main loop)."""
        self._reports.put(report)

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self._reports.get(timeout=POLL_S)
            except queue.Empty:
                report = None
            while report is not None and not self._reports.empty():  # behind: prove only the newest round
                newer = self._reports.get_nowait()
                if newer is None:
                    break
                logger.info("round %d: skipped, the prover is behind (round %d is waiting)", report.round, newer.round)
                report = newer
            if report is not None:
                self._guarded(self._contribute, report)
            self._guarded(self._answer_audits)
            self._guarded(self._settle_due)

    def _guarded(self, step: Callable[..., None], report: Any = None) -> None:
        """Run one step; a failure is logged and reported, and the thread goes on with the next round."""
        try:
            step(report) if report is not None else step()
        except (ChainError, ProofError, QuantizationError, ValueError, TimeoutError) as exc:
            logger.warning("settlement step %s failed: %s", step.__name__, exc)
            self.on_event(SettlementEvent(kind="failed", round=getattr(report, "round", -1),
                                          stage=getattr(report, "stage", -1),
                                          detail={"step": step.__name__, "error": str(exc)}))

    def _contribute(self, report: Any) -> None:
        r, s, peer = report.round, report.stage, self.client.address
        if self._now() >= self._state.submission_end(r):
            logger.info("round %d: submission window already closed, not contributing", r)
            return
        commitment = commitment_of(report, self.params)  # the root the group averaged: not quantized again
        n = self.client.num_chunks(self.experiment_id, s)
        if n != commitment.num_chunks:
            raise ValueError(f"stage {s} has {commitment.num_chunks} chunks here but {n} on-chain: the experiment "
                             "was declared with other stage sizes or another chunk size")
        c0 = contribute_chunk(commitment.root, peer, n)
        future = self._prover.submit(commitment, experiment=self.experiment_id, round=r, stage=s,
                                     peer=peer.lower(), chunks=[c0], norm_bound=self._state.norm_bound)
        (contribution,) = future.result(timeout=PROOF_TIMEOUT_S)
        receipt = self.client.contribute(contribution)
        self.publish(contribution, False)
        self._open[(r, s)] = commitment
        self.on_event(SettlementEvent(kind="contributed", round=r, stage=s, detail={
            "chunk": c0, "num_chunks": n, "gas": receipt["gasUsed"], "norm_sq": str(commitment.norm_sq)}))

    def _answer_audits(self) -> None:
        """Answer every audit opened against one of our open contributions, with a proof of that chunk."""
        if not self._open:
            return
        opened = self.client.events("AuditOpened", from_block=self._audit_block)
        if opened:
            self._audit_block = max(e["block"] for e in opened)
        me = self.client.address.lower()
        for e in opened:
            key = (e["round"], e["stage"], e["j"])
            commitment = self._open.get((e["round"], e["stage"]))
            if e["peer"].lower() != me or commitment is None or key in self._answered:
                continue
            (proof,) = self._prover.submit(
                commitment, experiment=self.experiment_id, round=e["round"], stage=e["stage"], peer=me,
                chunks=[e["chunk"]], norm_bound=self._state.norm_bound).result(timeout=PROOF_TIMEOUT_S)
            self.client.answer_audit(proof, e["j"])
            self.publish(proof, True)
            self._answered.add(key)
            self.on_event(SettlementEvent(kind="audit_answered", round=e["round"], stage=e["stage"],
                                          detail={"j": e["j"], "chunk": e["chunk"]}))

    def _settle_due(self) -> None:
        """Finalize (idempotently) and claim every round of ours whose audit window is over."""
        now = self._now()
        for r, s in sorted(self._open):
            if now < self._state.audit_end(r) + 1:
                continue
            self._idempotent(self.client.finalize, self.experiment_id, r)
            before = self.client.token_balance()
            if self._idempotent(self.client.claim, self.experiment_id, r, s):
                gained = self.client.token_balance() - before
                self.earned += gained
                self.on_event(SettlementEvent(kind="claimed", round=r, stage=s, detail={"amount": str(gained)}))
            del self._open[(r, s)]

    def _now(self) -> int:
        """The later of wall time and the chain's last block (a dev chain may have been moved forward)."""
        return max(int(time.time()), self.client.block_timestamp())

    @staticmethod
    def _idempotent(fn: Callable[..., Any], *args: Any) -> bool:
        try:
            fn(*args)
            return True
        except RevertError as exc:
            if exc.error_name in ALREADY_DONE:
                return False
            raise


def contribution_summary(c: Contribution) -> dict[str, Any]:
    """A log-safe view of a contribution (no proof bytes)."""
    return {"round": c.round, "stage": c.stage, "peer": c.peer, "chunk": c.chunk, "root": hex(c.root)[:18]}
