"""Round settlement: the round hook that turns a stage peer's update into a proven on-chain contribution.

Per round: the update's commitment (`round_commitment`: the verified round's own, or quantize Δ → Poseidon-Merkle
commitment) → Groth16 proof of the chunk the contract picks (c0) → `contribute`; as soon as the round's audit
seed is fixed (its submission window closed), proofs of all k audited chunks; answers to every audit opened
against it (sampled or targeted); once the round's audit window is over, finalize (anyone may) and claim.

One background thread runs a loop that never blocks on a proof: proofs are futures of a `BackgroundProver`
(several workers), and each pass does what is ready. Every step is idempotent and re-derived from the chain:
- audit events are read filtered by experiment and peer, in bounded block ranges, from the block the settler
  started at; an event is kept in a to-do set before the cursor moves past it, and leaves it only when answered
  (or when answering can no longer succeed), so nothing is skipped after a failure;
- the k audited chunks are proved as soon as the round's seed is armed (an auditor's `armSeed`, a block after
  the submission window: see contracts/README.md), before any audit is opened;
- a contribution whose transaction failed or timed out is looked up on-chain (`getRecord`) before it is given up,
  so one that was mined is still defended;
- each round is finalized and claimed on its own: a revert that can never succeed (slashed, unanswered audit)
  drops that round and says so, anything else is retried next pass, and neither stops the other rounds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from pydantic import BaseModel, ConfigDict

from protocol.contribution import Contribution
from protocol.sampling import contribute_chunk
from runtime.loops import StartStop
from swarm.chain.client import TARGETED_BASE, ChainClient
from swarm.chain.errors import RevertError
from zk.background import BackgroundProver
from zk.circuit import DEFAULT_PARAMS, CircuitParams
from zk.commit import Commitment, commit_update
from zk.quantize import quantize_update

logger = logging.getLogger(__name__)

POLL_S = 1.0
JOIN_TIMEOUT_S = 30.0
# What a revert means for the step that got it.
ALREADY_DONE = {"AlreadyFinalized", "AlreadyClaimed", "AlreadyContributed", "AuditAlreadyAnswered"}
GIVE_UP = {"UnansweredAudit", "PeerSlashed", "NoContribution", "NotInAuditWindow", "SubmissionClosed",
           "CollateralUnavailable", "NormBelowMinimum", "NormAboveBound", "InvalidProof"}  # fmt: skip


class SettlementEvent(BaseModel):
    """What the settler did, for the peer's event stream (`swarm/apps/events.py`) and the demo's summary."""

    model_config = ConfigDict(frozen=True)

    kind: str  # contributed | audit_answered | finalized | claimed | failed | gave_up | skipped
    round: int
    stage: int
    detail: dict[str, Any] = {}


class Prover(Protocol):
    """What the settler needs of a prover (zk.background.BackgroundProver; tests may hand a stand-in one)."""

    def start(self) -> Any: ...
    def shutdown(self) -> None: ...
    def submit(self, commitment: Any, *, experiment: int, round: int, stage: int, peer: str, chunks: list[int],
               norm_bound: int) -> Future[list[Contribution]]: ...  # fmt: skip


def round_commitment(report: Any, params: CircuitParams = DEFAULT_PARAMS) -> Commitment:
    """The commitment a round's contribution proves: the one the verified round averaged (`report.commitment`),
    else quantize + commit `report.delta` here."""
    if getattr(report, "commitment", None) is not None:
        return report.commitment
    return commit_update(quantize_update(report.delta), params)


@dataclass
class OpenRound:
    """One (round, stage) this peer contributes to, from its commitment until it is claimed or given up."""

    round: int
    stage: int
    commitment: Any
    c0: Future | None = None
    contributed: bool = False
    tried_contribute: bool = False
    audit_proofs: dict[int, Future] = field(default_factory=dict)  # chunk -> proof of that chunk
    audits: dict[int, int] = field(default_factory=dict)  # open audit j -> chunk, to answer
    answered: set[int] = field(default_factory=set)
    gossiped: set[int] = field(default_factory=set)  # audited chunks whose proofs went out on gossip


class RoundSettler(StartStop):
    """A round hook (`settler(report)`) backed by a thread that proves, contributes, answers, finalizes, claims."""

    def __init__(
        self,
        client: ChainClient,
        experiment_id: int,
        *,
        params: CircuitParams = DEFAULT_PARAMS,
        on_event: Callable[[SettlementEvent], None] | None = None,
        publish: Callable[[Contribution, bool], None] | None = None,
        prover_workers: int = 2,
        prover: Prover | None = None,
        from_block: int | None = None,
        poll_s: float = POLL_S,
        answer_audits: bool = True,
    ) -> None:
        self.client, self.experiment_id, self.params = client, experiment_id, params
        self.on_event = on_event or (lambda e: None)
        self.publish = publish or (lambda c, audit: None)  # e.g. GossipRelay.publish_contribution
        self.poll_s = poll_s
        # False (tests and demos only, `--attack silent`): never prove, gossip nor answer audits, so watchers
        # (swarm/settlement/watcher.py) open them and get this peer slashed
        self.answer_audits = answer_audits
        self._reports: queue.Queue[Any] = queue.Queue()
        self.rounds: dict[tuple[int, int], OpenRound] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._prover: Prover = prover or BackgroundProver(params, workers=prover_workers)
        self._cursor = from_block  # next block to read audit events from; None: the block at start()
        self._state = client.experiment(experiment_id)
        self._me = client.address.lower()
        self.earned = 0

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the prover (may compile + set up the circuit on first use) and the settling thread."""
        self._prover.start()
        if self._cursor is None:
            self._cursor = self.client.block_number()
        self._thread = threading.Thread(target=self._run, name="round-settler", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop the prover first (a proof in flight fails at once), then the thread."""
        self._stop.set()
        self._reports.put(None)
        self._prover.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            self._thread = None

    def __call__(self, report: Any) -> None:
        """The round hook: hand the round over and return at once (StagePeer calls this in its main loop)."""
        self._reports.put(report)

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # the thread must outlive any bug: logged and reported as an event
                logger.exception("settlement pass failed")
                self._failed("pass", -1, -1, exc)
            self._stop.wait(self.poll_s)

    def step(self) -> None:
        """One pass: take the newest report, then every step that is ready; a failing step does not stop the
        others (each is retried next pass)."""
        report = None
        while True:
            try:
                item = self._reports.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                if report is not None:
                    logger.info("round %d: skipped, round %d is waiting", report.round, item.round)
                report = item
        if report is not None:
            self._guarded(self._open_round, report, round=report.round, stage=report.stage)
        now = self._now()
        for key, o in list(self.rounds.items()):
            self._guarded(self._advance, o, now, round=key[0], stage=key[1])
            self._gossip_audit_proofs(o)
        if self.answer_audits:
            self._guarded(self._read_audits, round=-1, stage=-1)
            for key, o in list(self.rounds.items()):
                self._guarded(self._answer, o, now, round=key[0], stage=key[1])
        now = self._now()
        for key, o in sorted(self.rounds.items()):
            self._guarded(self._settle, o, now, round=key[0], stage=key[1])

    def _guarded(self, fn: Callable[..., None], *args: Any, round: int, stage: int) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 -- reported; the step is retried next pass
            logger.warning("settlement step %s (round %d, stage %d) failed: %s", fn.__name__, round, stage, exc)
            self._failed(fn.__name__, round, stage, exc)

    def _failed(self, step: str, round: int, stage: int, exc: BaseException) -> None:
        self.on_event(SettlementEvent(kind="failed", round=round, stage=stage,
                                      detail={"step": step, "error": f"{type(exc).__name__}: {exc}"}))

    def _give_up(self, o: OpenRound, why: str) -> None:
        logger.warning("round %d stage %d: given up: %s", o.round, o.stage, why)
        self.rounds.pop((o.round, o.stage), None)
        self.on_event(SettlementEvent(kind="gave_up", round=o.round, stage=o.stage, detail={"why": why}))

    # ------------------------------------------------------------------------------------------ the steps

    def _open_round(self, report: Any) -> None:
        r, s = report.round, report.stage
        if (r, s) in self.rounds:
            return
        if self._now() >= self._state.submission_end(r):
            logger.info("round %d: submission window already closed, not contributing", r)
            return
        commitment = round_commitment(report, self.params)
        if commitment.norm_sq < 1 << self._state.min_norm_log2:  # e.g. no micro-batch reached this stage this round
            logger.info("round %d stage %d: the update is below the experiment's norm floor (no training this "
                        "round?): nothing to contribute", r, s)
            self.on_event(SettlementEvent(kind="skipped", round=r, stage=s, detail={"why": "update below norm floor"}))
            return
        n = self.client.num_chunks(self.experiment_id, s)
        if n != commitment.num_chunks:
            raise ValueError(f"stage {s} has {commitment.num_chunks} chunks here but {n} on-chain: the experiment "
                             "was declared with other stage sizes or another chunk size")
        o = OpenRound(round=r, stage=s, commitment=commitment)
        o.c0 = self._prove(o, [contribute_chunk(commitment.root, self._me, n)])
        self.rounds[(r, s)] = o

    def _prove(self, o: OpenRound, chunks: list[int]) -> Future[list[Contribution]]:
        return self._prover.submit(o.commitment, experiment=self.experiment_id, round=o.round, stage=o.stage,
                                   peer=self._me, chunks=chunks, norm_bound=self._state.norm_bound)

    def _advance(self, o: OpenRound, now: int) -> None:
        """Contribute once c0 is proven; once the seed is fixed, queue proofs of all k audited chunks."""
        if not o.contributed:
            if o.tried_contribute and self.client.record(self.experiment_id, o.round, o.stage, self._me).exists:
                o.contributed = True  # a transaction whose receipt we missed was mined after all
                self._contributed(o, None)
            elif now >= self._state.submission_end(o.round):
                self._give_up(o, "not contributed before the submission window closed")
                return
            elif o.c0 is not None and o.c0.done():
                if o.c0.exception() is not None:  # reported; proved again next pass
                    failed, o.c0 = o.c0, self._prove(o, [contribute_chunk(o.commitment.root, self._me,
                                                                          o.commitment.num_chunks)])
                    raise failed.exception()
                (contribution,) = o.c0.result()
                o.tried_contribute = True
                try:
                    receipt = self.client.contribute(contribution)
                except RevertError as exc:
                    if exc.error_name in ALREADY_DONE:
                        o.contributed = True
                    elif exc.error_name in GIVE_UP:
                        self._give_up(o, str(exc))
                        return
                    raise
                else:
                    o.contributed = True
                    self.publish(contribution, False)
                    self._contributed(o, receipt)
        if self.answer_audits and o.contributed and not o.audit_proofs and now >= self._state.submission_end(o.round):
            if self.client.round_seed(self.experiment_id, o.round) is None:
                return  # not armed yet: without a seed nobody can open a sampled audit either
            k = self._state.audits_per_peer
            chunks = sorted({self.client.audit_chunk(self.experiment_id, o.round, o.stage, self._me, j)
                             for j in range(k)})  # fmt: skip
            for chunk in chunks:  # one job per chunk: each answer can go as soon as its own proof is made
                o.audit_proofs[chunk] = self._prove(o, [chunk])

    def _gossip_audit_proofs(self, o: OpenRound) -> None:
        """Gossip each audited chunk's proof as soon as it is made: watchers that hear it open no audit."""
        for chunk, proof in list(o.audit_proofs.items()):
            if chunk not in o.gossiped and proof.done() and proof.exception() is None:
                o.gossiped.add(chunk)
                self.publish(proof.result()[0], True)

    def _contributed(self, o: OpenRound, receipt: Any) -> None:
        detail = {"num_chunks": o.commitment.num_chunks, "norm_sq": str(o.commitment.norm_sq)}
        if receipt is not None:
            detail["gas"] = receipt["gasUsed"]
        self.on_event(SettlementEvent(kind="contributed", round=o.round, stage=o.stage, detail=detail))

    def _read_audits(self) -> None:
        """Add every audit opened against us in this experiment since the cursor to the to-do set."""
        assert self._cursor is not None
        head = self.client.block_number()
        if head < self._cursor:
            return
        opened = self.client.events("AuditOpened", self._cursor, head,
                                    where={"experimentId": self.experiment_id, "peer": self.client.address})
        for e in opened:
            o = self.rounds.get((int(e["round"]), int(e["stage"])))
            if o is None:
                logger.warning("audit %d of round %d stage %d: not a contribution this settler holds", e["j"],
                               e["round"], e["stage"])
                continue
            j, chunk = int(e["j"]), int(e["chunk"])
            if j not in o.answered:
                o.audits[j] = chunk
                if chunk not in o.audit_proofs:  # a targeted audit (or a sampled one before our pre-proving)
                    o.audit_proofs[chunk] = self._prove(o, [chunk])
        self._cursor = head + 1  # everything up to head is in the to-do set now

    def _answer(self, o: OpenRound, now: int) -> None:
        if o.audits and now >= self._state.audit_end(o.round):  # too late: the contract takes no answer now
            logger.warning("round %d stage %d: audits %s left unanswered", o.round, o.stage, sorted(o.audits))
            o.audits.clear()
        for j, chunk in sorted(o.audits.items()):
            proof = o.audit_proofs.get(chunk)
            if proof is None or not proof.done():
                continue
            if proof.exception() is not None:  # reported; proved again next pass
                o.audit_proofs[chunk] = self._prove(o, [chunk])
                raise proof.exception()
            (contribution,) = proof.result()
            try:
                self.client.answer_audit(contribution, j)
            except RevertError as exc:
                if exc.error_name not in ALREADY_DONE | GIVE_UP:
                    raise
                logger.warning("audit %d of round %d: %s", j, o.round, exc)
            else:
                self.publish(contribution, True)
                self.on_event(SettlementEvent(kind="audit_answered", round=o.round, stage=o.stage,
                                              detail={"j": j, "chunk": chunk, "targeted": j >= TARGETED_BASE}))
            o.answered.add(j)
            del o.audits[j]

    def _settle(self, o: OpenRound, now: int) -> None:
        """Finalize (idempotently) and claim a round whose audit window is over."""
        if not o.contributed or now < self._state.audit_end(o.round):
            return
        try:
            self._idempotent(self.client.finalize, self.experiment_id, o.round)
            before = self.client.token_balance()
            claimed = self._idempotent(self.client.claim, self.experiment_id, o.round, o.stage)
        except RevertError as exc:
            if exc.error_name == "NotFinalizable":  # an under-funded round waits for its funder (or the grace)
                logger.debug("round %d: %s", o.round, exc)
                return
            if exc.error_name in GIVE_UP:
                self._give_up(o, str(exc))
                return
            raise  # retried next pass
        if claimed:
            gained = self.client.token_balance() - before
            self.earned += gained
            self.on_event(SettlementEvent(kind="claimed", round=o.round, stage=o.stage,
                                          detail={"amount": str(gained)}))
        self.rounds.pop((o.round, o.stage), None)

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
