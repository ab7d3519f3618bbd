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
- finished rounds are finalized each on its own and claimed together (claimMany), one by one if that would revert;
  claims wait until CLAIM_EVERY rounds are ready (one claimMany instead of a claim per round), unless the oldest
  ready round's record slot is due again within CLAIM_ROUNDS rounds, the free stake would not cover CLAIM_COLLATERAL
  more contributions, nothing else of ours is in flight (the peer stopped contributing), or the settler is stopping
  (`shutdown` claims everything ready):
  a revert that can never succeed (slashed, unanswered audit) drops that round and says so, anything else is
  retried next pass, and neither stops the other rounds;
- with `batches` (the stage role turns it on when its gossip relay is up), the contribution goes through the
  round's batch duty instead of straight to `contribute`: allowBatches once, gossip the proof, hear the round's
  others, the peer ranked first by swarm.chain.batching sends one contributeBatch of them all, and a peer still
  missing one inclusion margin before the window closes sends its own (docs/protocol.md, "Batched
  contributions"); a RecordSlotBusy refusal claims the old round in that ring slot first;
- with a `data_dir`, everything above is also journaled (`journal.py`): the rounds with their codes and scales,
  the audits, the cursor, and every signed transaction before it is sent. A restart takes them back; each pass
  first reconciles the journaled transactions with the chain (resend the same bytes, wait, or drop: never a second
  transaction in place of one whose fate is unknown), so kill -9, a dead RPC or a reorganization loses nothing
  and sends nothing twice (docs/protocol.md, "The settler's journal").
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from eth_abi import encode
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict
from web3.logs import DISCARD

from protocol.contribution import Contribution, ContributionError
from protocol.sampling import contribute_chunk
from runtime.loops import StartStop
from swarm.chain.batching import duty_order, duty_time
from swarm.chain.client import TARGETED_BASE, ChainClient
from swarm.chain.errors import ChainError, RevertError
from swarm.chain.safety import INCLUSION_MARGIN_S
from swarm.chain.tx import PendingTx
from swarm.settlement.journal import Journal, TxReconciler, TxRow, journal_path, receipt_block
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
NOT_OPEN = {"AuditNotOpen"}  # an answer to an audit that is not open (any more): a new opening is a new event
CLAIM_BATCH = 50  # (round, stage) pairs per claimMany transaction
REORG_REWIND = 128  # blocks of audit events read again when the block before the cursor changed (a reorganization)
RECORD_RING = 64  # SwarmEscrow.RECORD_RING: round r's record of (experiment, stage, peer) lives in slot r % 64
CLAIM_ROUNDS = 8  # SwarmEscrow.CLAIM_ROUNDS: a record closes (claimed) at least this many rounds before its slot reuse
CLAIM_EVERY = 4  # ready rounds claimed together (claimMany); fewer wait (see _claim_now for the exceptions)
FINALIZE_SPREAD_S = 8  # peers of a round finalize it at audit end + a delay in [0, this) of their own, if still due
CLAIM_COLLATERAL = 2  # claim at once when the free stake covers fewer contributions than this
BATCH_BACKUPS = 1  # ranks after the first in a round's batch duty order that take over what is still missing
GOSSIP_QUEUE = 10_000  # gossiped messages waiting for the settler's thread
HEARD_PER_ROUND = 1_000  # gossiped contributions kept per round
CONTRIBUTE_KINDS = ("contribute", "batch")  # journaled transactions that may record our own contribution


class SettlementEvent(BaseModel):
    """What the settler did, for the peer's event stream (`swarm/apps/events.py`) and the demo's summary."""

    model_config = ConfigDict(frozen=True)

    kind: str  # contributed | batched | audit_answered | finalized | claimed | failed | gave_up | skipped
    round: int
    stage: int
    detail: dict[str, Any] = {}


class Prover(Protocol):
    """What the settler needs of a prover (zk.background.BackgroundProver; tests may hand a stand-in one)."""

    def start(self) -> Any: ...
    def shutdown(self) -> None: ...
    def submit(self, commitment: Any, *, experiment: int, round: int, stage: int, peer: str, chunks: list[int],
               norm_bound: int, deadline: float | None = None) -> Future[list[Contribution]]: ...  # fmt: skip


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
    announced: bool = False  # the `contributed` event went out (once per round, even if a reorg makes us re-check)
    published: bool = False  # (batches) our proven contribution went out on gossip
    rebuild: Callable[[], Any] | None = None  # a round taken back from the journal: makes its full commitment


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
        data_dir: Path | None = None,
        batches: bool = False,
        batch_backups: int = BATCH_BACKUPS,
        claim_every: int = CLAIM_EVERY,
    ) -> None:
        self.client, self.experiment_id, self.params = client, experiment_id, params
        # True: contribute through the round's batch duty (docs/protocol.md, "Batched contributions"): allow
        # batches once, gossip the proven contribution, hear the others' (`on_gossip`), batch them when our rank's
        # duty time comes, send our own `contribute` only if it is still missing one inclusion margin before the
        # submission window closes. False: `contribute` as soon as proven.
        self.batches, self.batch_backups = batches, batch_backups
        self.claim_every = max(1, claim_every)  # 1: claim each round as soon as it is ready
        self._min_stake: int | None = None  # the escrow's minStake, read once when first needed
        self._gossip: queue.Queue[Any] = queue.Queue(maxsize=GOSSIP_QUEUE)
        self.heard: dict[int, dict[tuple[int, str], Contribution]] = {}  # round -> (stage, peer) -> valid contribution
        self._batched: set[int] = set()  # rounds whose batch duty we did (sent, or found nothing to send)
        self._allowed = False  # allowBatches(experiment) is on-chain for our wallet
        self.batch_fees = 0  # batchFee paid to us for others' contributions we submitted
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
        self._finalizable_since: dict[int, float] = {}  # round -> when we first saw its audit window over (monotonic)
        self.earned = 0
        # the crash-safe journal (swarm/settlement/journal.py) under `data_dir`; None: this settler keeps it all in
        # memory and a restart forgets its open rounds
        self.data_dir = data_dir
        self.journal: Journal | None = None
        self._reconciler: TxReconciler | None = None
        self._cursor_parent: str | None = None  # hash of the block before the cursor, to notice a reorganization
        self._start_block = 0
        self._doing = threading.local()  # what the transaction being signed in this thread is for
        self._retry_report: Any = None  # a report whose round could not be opened (RPC down): tried next pass
        # requireCertificate experiments: signs and sends its groups' certificates on this thread (certificate.py)
        self.certifier: Any = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start the prover (may compile + set up the circuit on first use) and the settling thread."""
        self._prover.start()
        if self.data_dir is not None:
            self._open_journal(self.data_dir)
        if self._cursor is None:
            self._cursor = self.client.block_number()
        self._start_block = self._cursor if self._start_block == 0 else self._start_block
        self._thread = threading.Thread(target=self._run, name="round-settler", daemon=True)
        self._thread.start()
        return self

    @property
    def start_block(self) -> int:
        """The block this settler reads the experiment's events from (set by start)."""
        return self._start_block

    def shutdown(self) -> None:
        """Stop the prover first (a proof in flight fails at once), then the thread."""
        self._stop.set()
        self._reports.put(None)
        self._prover.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            if not self._thread.is_alive():  # leaving: claim every ready round now, not at the next batch of them
                self._guarded(lambda: self._settle_all(self._now(), leaving=True), round=-1, stage=-1)
            self._thread = None
        if self.journal is not None:
            self.client.on_signed(None)
            self.journal.close(remove_if_empty=True)
            self.journal = None

    def __call__(self, report: Any) -> None:
        """The round hook: hand the round over and return at once (StagePeer calls this in its main loop)."""
        if self.certifier is not None:
            self.certifier.on_round(report)
        self._reports.put(report)

    # ------------------------------------------------------------------------------------------ the journal

    def _open_journal(self, data_dir: Path) -> None:
        """Open this peer's journal for the experiment, hook it to every signed transaction, settle what it holds
        from the last run (transactions first), and take back its open rounds, audits and event cursor."""
        c = self.client
        chain_id = int(c._reader.rpc("reading the chain id", lambda: c.w3.eth.chain_id))
        identity = {"chain_id": str(chain_id), "escrow": str(c.escrow_address).lower(),
                    "experiment": str(self.experiment_id), "peer": self._me, "genesis": self._block_hash(0)}
        path = journal_path(data_dir, chain_id=chain_id, genesis=identity["genesis"], escrow=str(c.escrow_address),
                            experiment=self.experiment_id, peer=self._me)  # fmt: skip
        self.journal = Journal(path, identity)
        self._reconciler = TxReconciler(self.journal, c.w3, c.address)
        c.on_signed(self._journal_tx)
        stored = self.journal.cursor()
        if stored is not None:
            self._cursor, self._cursor_parent = stored
            self._start_block = max(0, self._cursor - REORG_REWIND)
        restored = 0
        for row in self.journal.rounds("open", "contributed"):
            o = OpenRound(round=row.round, stage=row.stage, commitment=row.summary(),
                          contributed=row.state == "contributed", tried_contribute=True,
                          announced=row.state == "contributed",
                          rebuild=row.commitment if row.update_blob is not None else None)  # fmt: skip
            for j, chunk, answered in self.journal.audits(row.round, row.stage):
                if answered:
                    o.answered.add(j)
                else:
                    o.audits[j] = chunk
            self.rounds[(row.round, row.stage)] = o
            restored += 1
        pending = len(self.journal.txs())
        if restored or pending:
            logger.info("journal %s: %d open round(s) and %d unfinished transaction(s) taken back", path, restored,
                        pending)  # fmt: skip

    def _block_hash(self, number: int) -> str:
        block = self.client._reader.rpc(f"reading block {number}", self.client.w3.eth.get_block, number)
        return block["hash"].to_0x_hex()

    def journal_also(self, client: ChainClient) -> ChainClient:
        """Journal what `client` (another client of this wallet, e.g. the watcher's) signs too: after a crash or a
        reorganization its transactions are waited for or sent again like ours, and our resends never take their
        nonces. Returns `client`."""
        if self.journal is not None:
            client.on_signed(self._journal_tx)
        return client

    def _journal_tx(self, p: PendingTx) -> None:
        """The sender's on_signed hook: journal the signed bytes before they go out (an error here stops the send)."""
        if self.journal is None:  # shut down (another client's late transaction): nothing to keep it in
            return
        kind, target = getattr(self._doing, "what", None) or (None, [])
        self.journal.record_tx(p, kind, target)

    @contextlib.contextmanager
    def _sending(self, kind: str, *targets: tuple) -> Iterator[None]:
        """Label the transactions signed in this block (journal: what they do, to re-check after a failure)."""
        self._doing.what = (kind, [list(t) for t in targets])
        try:
            yield
        finally:
            self._doing.what = None

    def _in_flight(self, kind: str, key: tuple) -> bool:
        """A journaled transaction of `kind` for `key` is signed and not seen mined: send nothing in its place."""
        return self.journal is not None and self.journal.unresolved(kind, key)

    def _mined(self, receipt: Any) -> None:
        if self.journal is not None and receipt is not None:
            self.journal.set_mined(receipt["transactionHash"].to_0x_hex(), *receipt_block(receipt))

    def _reconcile(self) -> bool:
        """Bring the journaled transactions in line with the chain; False when the RPC cannot tell (then this pass
        sends nothing new: a transaction whose fate is unknown must not get a twin)."""
        if self._reconciler is None or self.journal is None:
            return True
        try:
            changed = self._reconciler.run()
        except ChainError as exc:
            logger.warning("settlement journal: %s", exc)
            self._failed("_reconcile", -1, -1, exc)
            return False
        for row in changed:
            self._recheck(row)
        self.journal.prune()
        return True

    def _recheck(self, row: TxRow) -> None:
        """A journaled transaction moved (reorganized out, re-sent, dropped): forget what we believed it did, so the
        step re-derives it from the chain (the contract refuses a step done twice before anything is sent)."""
        assert self.journal is not None
        for target in row.target:
            key = (target[0], target[1]) if len(target) >= 2 else None
            o = self.rounds.get(key) if key else None
            if row.kind == "batch" and len(target) == 1:  # our batch of round target[0] moved: do the duty again
                self._batched.discard(target[0])
            if row.kind in CONTRIBUTE_KINDS and o is not None:
                o.contributed, o.tried_contribute = False, True
            elif row.kind == "answer" and o is not None and len(target) == 3:
                j = target[2]
                chunk = next((c for jj, c, _ in self.journal.audits(*key) if jj == j), None)
                if chunk is not None:
                    o.answered.discard(j)
                    o.audits[j] = chunk
                    self.journal.set_answered(key[0], key[1], j, False)
            elif row.kind == "claim" and key is not None and o is None and self.journal.round_state(*key) == "claimed":
                rows = [r for r in self.journal.rounds("claimed") if (r.round, r.stage) == key]
                if rows:  # claimed, then reorganized away: claim it again once the transaction is settled
                    logger.warning("round %d stage %d: its claim left the chain; claiming again", *key)
                    self.rounds[key] = OpenRound(round=key[0], stage=key[1], commitment=rows[0].summary(),
                                                 contributed=True, tried_contribute=True)  # fmt: skip
                    self.journal.set_round_state(key[0], key[1], "contributed")

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
        if report is None:
            report, self._retry_report = self._retry_report, None
        if report is not None:
            try:
                self._open_round(report)
            except ChainError as exc:  # the RPC is down: the round is tried again next pass, not forgotten
                self._retry_report = report
                self._failed("_open_round", report.round, report.stage, exc)
            except Exception as exc:  # noqa: BLE001 -- reported; a report that cannot be read is dropped
                logger.warning("round %d stage %d: cannot open the round: %s", report.round, report.stage, exc)
                self._failed("_open_round", report.round, report.stage, exc)
        if not self._reconcile():
            return
        now = self._now()
        if self.batches:
            if not self._allowed:
                self._guarded(self._allow_batches, round=-1, stage=-1)
            self._guarded(self._take_gossip, now, round=-1, stage=-1)
        for key, o in list(self.rounds.items()):
            self._guarded(self._advance, o, now, round=key[0], stage=key[1])
            self._gossip_audit_proofs(o)
        if self.answer_audits:
            self._guarded(self._read_audits, round=-1, stage=-1)
            for key, o in list(self.rounds.items()):
                self._guarded(self._answer, o, now, round=key[0], stage=key[1])
        if self.certifier is not None:
            self._guarded(self.certifier.step, now, self._state, round=-1, stage=-1)
        self._guarded(self._settle_all, self._now(), round=-1, stage=-1)

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
        if self.journal is not None:
            self.journal.set_round_state(o.round, o.stage, "done")
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
        if self.journal is not None:
            if self.journal.round_state(r, s) is not None:  # e.g. a report of a round a restart took back
                return
            self.journal.put_round(r, s, commitment)  # before anything is sent: the data audits may ask for
        o = OpenRound(round=r, stage=s, commitment=commitment)
        o.c0 = self._prove_c0(o)
        self.rounds[(r, s)] = o

    def _prove_c0(self, o: OpenRound) -> Future[list[Contribution]]:
        return self._prove(o, [contribute_chunk(o.commitment.root, self._me, o.commitment.num_chunks)],
                           self._state.submission_end(o.round))

    def _prove(self, o: OpenRound, chunks: list[int], due: int | None = None) -> Future[list[Contribution]]:
        """Queue proofs of `chunks`, due by chain time `due` (default: the round's audit window end): the prover
        takes the earliest due first, so audit answers are not kept behind later rounds' c0 proofs."""
        if o.rebuild is not None:  # taken back from the journal: the tree is rebuilt on the first proof it needs
            o.commitment, o.rebuild = o.rebuild(), None
        due = self._state.audit_end(o.round) if due is None else due
        deadline = time.time() + (due - self._now())  # chain time -> this machine's clock
        return self._prover.submit(o.commitment, experiment=self.experiment_id, round=o.round, stage=o.stage,
                                   peer=self._me, chunks=chunks, norm_bound=self._state.norm_bound,
                                   deadline=deadline)

    def _advance(self, o: OpenRound, now: int) -> None:
        """Contribute once c0 is proven; once the seed is fixed, queue proofs of all k audited chunks."""
        if not o.contributed:
            key = (o.round, o.stage)
            if any(self._in_flight(kind, key) for kind in CONTRIBUTE_KINDS):
                return  # our contribution is signed and sent (or about to be sent again): wait for it
            if o.tried_contribute and self.client.record(self.experiment_id, o.round, o.stage, self._me).exists:
                o.contributed = True  # a transaction whose receipt we missed was mined after all
                self._set_state(o, "contributed")
                self._contributed(o, None)
            elif now >= self._state.submission_end(o.round):
                self._give_up(o, "not contributed before the submission window closed")
                return
            elif o.c0 is None:  # taken back from the journal: prove c0 again
                o.c0 = self._prove_c0(o)
            elif o.c0.done():
                if o.c0.exception() is not None:  # reported; proved again next pass
                    failed, o.c0 = o.c0, self._prove_c0(o)
                    raise failed.exception()
                (contribution,) = o.c0.result()
                o.tried_contribute = True
                if not self.batches:
                    self._contribute_own(o, contribution)
                elif self._when_due(o, contribution, now) != "done":
                    return
        if self.answer_audits and o.contributed and not o.audit_proofs and now >= self._state.submission_end(o.round):
            if self.client.round_seed(self.experiment_id, o.round) is None:
                return  # not armed yet: without a seed nobody can open a sampled audit either
            k = self._state.audits_per_peer
            chunks = sorted({self.client.audit_chunk(self.experiment_id, o.round, o.stage, self._me, j)
                             for j in range(k)})  # fmt: skip
            for chunk in chunks:  # one job per chunk: each answer can go as soon as its own proof is made
                o.audit_proofs[chunk] = self._prove(o, [chunk])

    def _contribute_own(self, o: OpenRound, contribution: Contribution) -> None:
        """Send our own `contribute` for `o` (its record is not on-chain: checked by the caller)."""
        try:
            with self._sending("contribute", (o.round, o.stage)):
                receipt = self.client.contribute(contribution)
        except RevertError as exc:
            if exc.error_name in ALREADY_DONE:  # e.g. someone's batch got it in first
                o.contributed = True
                self._set_state(o, "contributed")
                self._contributed(o, None)
                return
            if exc.error_name in GIVE_UP:
                self._give_up(o, str(exc))
                return
            if exc.error_name == "RecordSlotBusy":
                self._free_slot(o, exc)
                return
            raise
        o.contributed = True
        self._mined(receipt)
        self._set_state(o, "contributed")
        if not o.published:
            o.published = True
            self.publish(contribution, False)
        self._contributed(o, receipt)

    def _free_slot(self, o: OpenRound, exc: RevertError) -> None:
        """`contribute` refused with RecordSlotBusy(old): our record of round `old` (= o.round - 64k) in the same
        ring slot is still open. Its audit window is long over (the escrow asks windows of at most 56 rounds), so
        finalize and claim it now (a round the journal forgot too); the contribution is sent again next pass. A
        round that can never be claimed (an unanswered audit: its record waits for a slash) keeps the slot busy:
        then this round is given up."""
        old = int(exc.error_args[0]) if exc.error_args else o.round - RECORD_RING
        key = (old, o.stage)
        logger.warning("round %d stage %d: record slot busy with our round %d, not claimed yet: claiming it first",
                       o.round, o.stage, old)  # fmt: skip
        if self._in_flight("claim", key) or self._in_flight("finalize", (old,)):
            return
        held = self.rounds.get(key) or OpenRound(round=old, stage=o.stage, commitment=None, contributed=True)
        try:
            with self._sending("finalize", (old,)):
                self._idempotent(self.client.finalize, self.experiment_id, old)
            with self._sending("claim", key):
                receipt = self._idempotent(self.client.claim, self.experiment_id, old, o.stage)
        except RevertError as err:
            if err.error_name in GIVE_UP:
                self._give_up(o, f"record slot busy: round {old} cannot be claimed ({err})")
                return
            raise  # e.g. NotFinalizable (the funder's grace): tried again until the submission window closes
        self._claimed([held], receipt)

    # ------------------------------------------------------------------------------------------ batches

    def on_gossip(self, msg: Any) -> None:
        """A GossipRelay listener (runs on the gossip loop: only queues; the settler's thread checks)."""
        enqueue(self._gossip, msg, "settler: gossip queue full, a message is dropped")

    def _allow_batches(self) -> None:
        """allowBatches(experiment) once, unless the chain has it already (journaled like every transaction)."""
        key = (self.experiment_id,)
        if self._in_flight("allow", key):
            return
        if self.client.stake_of(self._me).batch_experiment == self.experiment_id:
            self._allowed = True
            return
        with self._sending("allow", key):
            receipt = self.client.allow_batches(self.experiment_id)
        self._mined(receipt)
        self._allowed = True
        logger.info("batches allowed for experiment %d", self.experiment_id)

    def _take_gossip(self, now: int) -> None:
        """Keep the valid contributions heard on gossip for rounds still open to submissions; forget closed ones."""
        for r in [r for r in self.heard if now >= self._state.submission_end(r)]:
            del self.heard[r]
        self._batched = {r for r in self._batched if now < self._state.submission_end(r)}
        current = self._state.round_at(now)
        for _, c in gossiped_records(self._gossip, ("contribution",), "settler"):
            if (c.experiment != self.experiment_id or c.proof is None or c.peer == self._me
                    or not current - RECORD_RING < c.round <= current + 1
                    or now >= self._state.submission_end(c.round)):  # fmt: skip
                continue
            heard = self.heard.setdefault(c.round, {})
            if (c.stage, c.peer) in heard or len(heard) >= HEARD_PER_ROUND:
                continue
            why = self._unbatchable(c)
            if why:
                logger.info("settler: not batching %s's contribution to round %d stage %d: %s", c.peer, c.round,
                            c.stage, why)  # fmt: skip
                continue
            heard[(c.stage, c.peer)] = c

    def _unbatchable(self, c: Contribution) -> str | None:
        """Why a gossiped contribution cannot go in a batch (each of these would revert the whole batch or be
        skipped), or None; free reads and one eth_call of the verifier."""
        try:
            n = self.client.num_chunks(self.experiment_id, c.stage)
        except RevertError:
            return "unknown stage"
        if c.chunk != contribute_chunk(c.root, c.peer, n):
            return "its proof does not open c0"
        if not 1 << self._state.min_norm_log2 <= c.norm_sq <= self._state.norm_bound:
            return "norm out of bounds"
        if self.client.stake_of(c.peer).batch_experiment != self.experiment_id:
            return "its peer does not allow batches here"
        verifier = self.client.contract("IChunkVerifier", self._state.verifier)
        ok = self.client._reader.rpc("checking a gossiped proof", verifier.functions.verifyTx(
            c.proof.abi_tuple(), c.public_inputs(self._state.norm_bound)).call)  # fmt: skip
        return None if ok else "invalid proof"

    def _when_due(self, o: OpenRound, contribution: Contribution, now: int) -> str:
        """Batch mode, our proof made and our record not on-chain: gossip it, then follow the round's duty. Returns
        "done" once our contribution is sent or recorded, else "wait"."""
        r = o.round
        if not o.published:
            o.published = True
            self.publish(contribution, False)
        heard = self.heard.setdefault(r, {})
        heard[(o.stage, self._me)] = contribution
        end = self._state.submission_end(r)
        order = [p.lower() for p in duty_order(self.experiment_id, r, {p for _, p in heard})]
        rank = order.index(self._me)
        due = rank <= self.batch_backups and now >= duty_time(rank, end - self._state.submit_window, end)
        if due and len(order) == 1:  # nobody else heard: a batch of our own would only cost more
            self._contribute_own(o, contribution)
        elif due and r not in self._batched:
            if self._in_flight("batch", (r,)):
                return "wait"
            self._submit_batch(o, r, rank)
        if now >= end - INCLUSION_MARGIN_S and not o.contributed and (o.round, o.stage) in self.rounds:
            self._contribute_own(o, contribution)  # the fallback: our own is never lost
        return "done" if o.contributed else "wait"

    def _submit_batch(self, o: OpenRound, r: int, rank: int) -> None:
        """Our duty for round r: one contributeBatch of every valid contribution heard and not yet on-chain (the
        client checks each first with a free eth_call and leaves out what the escrow would refuse). With nothing
        of others heard, the caller sends our own `contribute` instead (cheaper)."""
        entries = list(self.heard.get(r, {}).values())
        own = [(c.round, c.stage) for c in entries if c.peer == self._me]
        try:
            with self._sending("batch", (r,), *own):
                result = self.client.contribute_batch(entries)
        except RevertError:
            self._batched.add(r)  # refused before sending (or reverted): not again; the fallback covers ours
            raise
        self._batched.add(r)
        if result.receipt is None:
            logger.info("round %d: nothing of the %d heard contributions left to batch", r, len(entries))
            return
        self._mined(result.receipt)
        gas = int(result.receipt["gasUsed"])
        self.batch_fees += result.fee
        self.on_event(SettlementEvent(kind="batched", round=r, stage=o.stage, detail={
            "included": len(result.included), "skipped": len(result.skipped), "left_out": len(result.left_out),
            "fee": str(result.fee), "gas": gas, "rank": rank}))  # fmt: skip
        for c in result.included:
            mine = self.rounds.get((c.round, c.stage)) if c.peer == self._me else None
            if mine is not None and not mine.contributed:
                mine.contributed = True
                self._set_state(mine, "contributed")
                self._contributed(mine, None, batch_gas=gas // len(result.included))

    def _gossip_audit_proofs(self, o: OpenRound) -> None:
        """Gossip each audited chunk's proof as soon as it is made: watchers that hear it open no audit."""
        for chunk, proof in list(o.audit_proofs.items()):
            if chunk not in o.gossiped and proof.done() and proof.exception() is None:
                o.gossiped.add(chunk)
                self.publish(proof.result()[0], True)

    def _set_state(self, o: OpenRound, state: str) -> None:
        if self.journal is not None:
            self.journal.set_round_state(o.round, o.stage, state)

    def _contributed(self, o: OpenRound, receipt: Any, *, batch_gas: int | None = None) -> None:
        """The `contributed` event; detail `gas`: of our own `contribute`, or our share of our batch (`batched`)."""
        if o.announced:
            return
        o.announced = True
        detail = {"num_chunks": o.commitment.num_chunks, "norm_sq": str(o.commitment.norm_sq)}
        if receipt is not None:
            detail["gas"] = receipt["gasUsed"]
        elif batch_gas is not None:
            detail["gas"], detail["batched"] = batch_gas, True
        self.on_event(SettlementEvent(kind="contributed", round=o.round, stage=o.stage, detail=detail))

    def _read_audits(self) -> None:
        """Add every audit opened against us in this experiment since the cursor to the to-do set."""
        assert self._cursor is not None
        head = self.client.block_number()
        rewound = False
        moved = (self._cursor_parent is not None and 0 < self._cursor <= head + 1
                 and self._block_hash(self._cursor - 1) != self._cursor_parent)  # the blocks we read were replaced
        if moved or self._cursor > head + 1:  # the chain is shorter than what we read: reorganized too
            back = max(self._start_block, min(self._cursor, head + 1) - REORG_REWIND)
            logger.warning("block %d changed (a reorganization): reading audit events again from block %d",
                           self._cursor - 1, back)  # fmt: skip
            self._cursor, rewound = back, True
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
            if j in o.answered and rewound and not self._answered_on_chain(o, j):
                o.answered.discard(j)  # our answer went with the reorganization
            if j not in o.answered:
                o.audits[j] = chunk
                if self.journal is not None:
                    self.journal.add_audit(o.round, o.stage, j, chunk)
                    self.journal.set_answered(o.round, o.stage, j, False)
                if chunk not in o.audit_proofs:  # a targeted audit (or a sampled one before our pre-proving)
                    o.audit_proofs[chunk] = self._prove(o, [chunk])
        self._cursor = head + 1  # everything up to head is in the to-do set (and the journal) now
        self._cursor_parent = self._block_hash(head)
        if self.journal is not None:
            self.journal.set_cursor(self._cursor, self._cursor_parent)

    def _answered_on_chain(self, o: OpenRound, j: int) -> bool:
        return bool(self.client.record(self.experiment_id, o.round, o.stage, self._me).audits_answered >> j & 1)

    def _answer(self, o: OpenRound, now: int) -> None:
        if o.audits and now >= self._state.audit_end(o.round):  # too late: the contract takes no answer now
            logger.warning("round %d stage %d: audits %s left unanswered", o.round, o.stage, sorted(o.audits))
            o.audits.clear()
        for j, chunk in sorted(o.audits.items()):
            if self._in_flight("answer", (o.round, o.stage, j)):
                continue  # our answer is signed and sent: wait for it
            proof = o.audit_proofs.get(chunk)
            if proof is None:  # taken back from the journal: prove the chunk again
                o.audit_proofs[chunk] = self._prove(o, [chunk])
                continue
            if not proof.done():
                continue
            if proof.exception() is not None:  # reported; proved again next pass
                o.audit_proofs[chunk] = self._prove(o, [chunk])
                raise proof.exception()
            (contribution,) = proof.result()
            try:
                with self._sending("answer", (o.round, o.stage, j)):
                    receipt = self.client.answer_audit(contribution, j)
            except RevertError as exc:
                if exc.error_name in NOT_OPEN:  # e.g. its opening went with a reorganization: a new one is new
                    del o.audits[j]
                    continue
                if exc.error_name not in ALREADY_DONE | GIVE_UP:
                    raise
                logger.warning("audit %d of round %d: %s", j, o.round, exc)
            else:
                self._mined(receipt)
                self.publish(contribution, True)
                self.on_event(SettlementEvent(kind="audit_answered", round=o.round, stage=o.stage,
                                              detail={"j": j, "chunk": chunk, "targeted": j >= TARGETED_BASE}))
            o.answered.add(j)
            del o.audits[j]
            if self.journal is not None:
                self.journal.set_answered(o.round, o.stage, j)

    def _settle_all(self, now: int, *, leaving: bool = False) -> None:
        """Finalize (idempotently) every round whose audit window is over, then claim them when _claim_now says
        so: several at once with claimMany, each on its own if that would revert (one bad round never blocks the
        others). `leaving`: claim whatever is ready."""
        ready: list[OpenRound] = []
        finalized: set[int] = set()
        for key, o in sorted(self.rounds.items()):
            if not o.contributed or now < self._state.audit_end(o.round) or self._in_flight("claim", key):
                continue
            try:
                if o.round not in finalized and not self._in_flight("finalize", (o.round,)):
                    first_seen = self._finalizable_since.setdefault(o.round, time.monotonic())
                    if not leaving and time.monotonic() - first_seen < self.finalize_delay(o.round):
                        continue  # another peer of the round may finalize it first (its turn comes earlier)
                    if not self.client.round_state(self.experiment_id, o.round).finalized:
                        with self._sending("finalize", (o.round,)):
                            self._idempotent(self.client.finalize, self.experiment_id, o.round)
                    finalized.add(o.round)
                    self._finalizable_since.pop(o.round, None)
                ready.append(o)
            except RevertError as exc:
                if exc.error_name == "NotFinalizable":  # an under-funded round waits for its funder (or the grace)
                    logger.debug("round %d: %s", o.round, exc)
                elif exc.error_name in GIVE_UP:
                    self._give_up(o, str(exc))
                else:
                    self._failed("_settle", o.round, o.stage, exc)  # retried next pass
            except ChainError as exc:
                self._failed("_settle", o.round, o.stage, exc)
        if not ready or not (leaving or self._claim_now(ready, now)):
            return
        for i in range(0, len(ready), CLAIM_BATCH):
            batch = ready[i : i + CLAIM_BATCH]
            if len(batch) > 1:
                keys = [(o.round, o.stage) for o in batch]
                try:
                    with self._sending("claim", *keys):
                        receipt = self.client.claim_many(self.experiment_id, [r for r, _ in keys], [s for _, s in keys])
                except RevertError as exc:  # refused before sending: claim one by one to find the bad one
                    logger.info("claimMany of rounds %s would revert (%s): claiming one by one", keys, exc)
                else:
                    self._claimed(batch, receipt)
                    continue
            for o in batch:
                self._guarded(self._settle_one, o, round=o.round, stage=o.stage)

    def finalize_delay(self, round: int) -> int:
        """Seconds after it first sees round's audit window over that this peer finalizes it if nobody has: every peer of the round
        may (anyone can), and all at once, several finalize transactions land in one block and all but one revert,
        gas spent for nothing (seen in the soak: 9 of them in a 2-minute run). A spread of FINALIZE_SPREAD_S by a
        hash of (experiment, peer) lets the first one's transaction be mined and seen by the others."""
        digest = keccak(encode(["uint256", "address"], [self.experiment_id, self._me]))  # per peer, not per round:
        # rounds that became final together are finalized, and so claimed, together (one claimMany)
        return int.from_bytes(digest[:8], "big") % FINALIZE_SPREAD_S

    def _claim_now(self, ready: list[OpenRound], now: int) -> bool:
        """Whether to claim the finalized `ready` rounds this pass rather than wait for more to share a claimMany:
        CLAIM_EVERY of them; the oldest one's record slot (round + RECORD_RING) due within CLAIM_ROUNDS rounds;
        nothing else of ours in flight (no round still in its windows: training stopped); or the free stake short
        of CLAIM_COLLATERAL contributions (claims unlock it)."""
        if len(ready) >= self.claim_every:
            return True
        if self._state.round_at(now) >= min(o.round for o in ready) + RECORD_RING - CLAIM_ROUNDS:
            return True
        if len(self.rounds) <= len(ready):
            return True
        if self._min_stake is None:
            self._min_stake = int(self.client.read("minStake"))
        return self.client.stake_of().free < CLAIM_COLLATERAL * self._min_stake

    def _settle_one(self, o: OpenRound) -> None:
        try:
            with self._sending("claim", (o.round, o.stage)):
                receipt = self._idempotent(self.client.claim, self.experiment_id, o.round, o.stage)
        except RevertError as exc:
            if exc.error_name in GIVE_UP:
                self._give_up(o, str(exc))
                return
            raise  # retried next pass
        self._claimed([o], receipt)

    def _claimed(self, rounds: list[OpenRound], receipt: Any) -> None:
        """Rounds claimed by `receipt` (None: someone had claimed them already): amounts from its Claimed events."""
        amounts: dict[tuple[int, int], int] = {}
        if receipt is not None:
            self._mined(receipt)
            for e in self.client._escrow().events.Claimed().process_receipt(receipt, errors=DISCARD):
                amounts[(int(e["args"]["round"]), int(e["args"]["stage"]))] = int(e["args"]["amount"])
        for o in rounds:
            key = (o.round, o.stage)
            self.rounds.pop(key, None)
            self._set_state(o, "claimed")  # deleted from the journal once the claim is final
            if key in amounts:
                self.earned += amounts[key]
                self.on_event(SettlementEvent(kind="claimed", round=o.round, stage=o.stage,
                                              detail={"amount": str(amounts[key])}))

    def _now(self) -> int:
        """The later of wall time and the chain's last block (a dev chain may have been moved forward)."""
        return max(int(time.time()), self.client.block_timestamp())

    @staticmethod
    def _idempotent(fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`'s receipt, or None when the contract says it was done already."""
        try:
            return fn(*args)
        except RevertError as exc:
            if exc.error_name in ALREADY_DONE:
                return None
            raise


def enqueue(q: queue.Queue, item: Any, dropped: str) -> None:
    """Queue `item` without blocking (a listener on another loop); a full queue drops it, logged as `dropped`."""
    try:
        q.put_nowait(item)
    except queue.Full:
        logger.info(dropped)


def gossiped_records(q: queue.Queue, kinds: tuple[str, ...], who: str) -> Iterator[tuple[str, Contribution]]:
    """(kind, contribution) of each GossipMessage of `kinds` queued in `q`, until it is empty; malformed ones are
    logged and dropped."""
    while True:
        try:
            msg = q.get_nowait()
        except queue.Empty:
            return
        kind = getattr(getattr(msg, "kind", None), "value", None)
        if kind not in kinds:
            continue
        try:
            yield kind, msg.contribution()
        except ContributionError as exc:
            logger.info("%s: dropped a malformed gossiped record: %s", who, exc)


def contribution_summary(c: Contribution) -> dict[str, Any]:
    """A log-safe view of a contribution (no proof bytes)."""
    return {"round": c.round, "stage": c.stage, "peer": c.peer, "chunk": c.chunk, "root": hex(c.root)[:18]}
