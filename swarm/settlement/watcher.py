"""Watcher: the duty of every paid stage peer to enforce its experiment's audits (issue 9; docs/protocol.md,
"Watchers").

A watcher runs next to the peer's settler (swarm/apps/roles/stage.py), on its own thread and chain client. For
every round of its experiment it:
- follows the round's contributions on-chain (`Contributed`, `AuditOpened`, `AuditAnswered` and `Slashed` events
  filtered by experiment, read in bounded block ranges from a cursor that only moves past what was read) and on
  gossip (`GossipRelay.listeners`: contributions and audit proofs);
- once the round's submissions are over, arms its audit seed if nobody has (`armSeed`, duty order below): without
  it nobody, honest settlers included, can know which chunks are audited;
- checks every audit proof gossiped for the round: its chunk is one of the k the seed picks for that peer, its
  root and norm are the ones the peer contributed, and the experiment's pinned verifier accepts it (an
  `eth_call`, free);
- when a contribution's duty time comes and a valid proof of one of its k audited chunks was never heard, opens
  that sampled audit (`openAudit`, with the escrow's bond), unless an audit of that contribution is already open;
- after the audit window, slashes each unanswered audit (the ones it opened at once, the others' later, as a
  backup): the opener gets the reporter's share of the collateral and its bond back, whoever sends it;
- for each accusation its peer made in a verified round whose signed part is on-chain evidence (the accused's
  wallet signed leaves and a path that do not hash to the root it contributed: `parts.part_evidence`), sends
  `slashMismatch` with that part once the accused's contribution is on-chain: the collateral is taken at once and
  the reporter's share paid to us. No bond: a false accusation only reverts (its gas estimate fails first).

Duty order, so that not every peer opens the same audit: the watchers of a round are its contributors (and this
peer); for the contribution of peer p, watcher w ranks by keccak256(seed, p, w), seed being the round's
unsteerable audit seed. Rank 0 decides four fifths into the audit-opening phase (the first half of the audit
window: by then an honest peer has had time to prove and gossip), rank i `step` seconds later, up to
`backups`; a revert because the audit is already open, answered or slashed is the normal outcome of that race,
not an error. Arming the seed follows keccak256(experiment, round, w), every ARM_STEP_S seconds from the end of
the submission window.

What it may spend: one audit per contribution, only when no valid proof was heard, only while the reporter's
share is positive (so a slash returns the bond and more), and at most `max_bonds` of its own bonds outstanding
at once. An audit the accused answers costs the watcher its bond (paid to the accused for its proof): that is
the price of a proof lost on the way, bounded by `max_bonds` per audit window.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from eth_abi import encode
from eth_utils import keccak
from web3 import Web3
from web3.logs import DISCARD

from protocol.contribution import Contribution
from protocol.sampling import challenged_chunks
from runtime.loops import StartStop
from swarm.chain.client import LOG_RANGE, ChainClient
from swarm.chain.errors import ChainError, RevertError
from swarm.rounds.parts import CommitRecord, Part, PartError, part_evidence
from swarm.settlement.settler import SettlementEvent, enqueue, gossiped_records

logger = logging.getLogger(__name__)

POLL_S = 2.0  # duties fall on windows of 10 s and more; each pass is 3 RPC calls and one eth_call per new proof
FOLLOWED = ("Contributed", "AuditOpened", "AuditAnswered", "Slashed")
JOIN_TIMEOUT_S = 30.0
ARM_STEP_S = 2.0  # seconds between the arming duties of consecutive ranks
BACKUPS = 3  # ranks after the first that open an audit the ones before them did not
MAX_BONDS = 4  # own audit bonds outstanding at once
GOSSIP_QUEUE = 10_000
PENDING_PER_ROUND = 1_000  # gossiped proofs kept unchecked per round (record or seed not known yet)
# Reverts that mean someone else did it first, or it can no longer be done: normal, never retried.
RACE_LOST = {"AuditAlreadyOpen", "AuditAlreadyAnswered", "AlreadySlashed", "SeedAlreadyFixed", "NoContribution",
             "AuditNotOpen"}  # fmt: skip
TOO_EARLY = {"NotInAuditOpening", "AuditWindowNotOver", "SeedNotReady"}  # the chain's clock is behind ours: retried
# A transaction that passed its gas estimate and then reverted in its block has no reason left to read (replayed on
# the block before, it succeeds): another watcher's transaction got there first in that block. Looked at again
# next pass, from the chain.
RACED_IN_BLOCK = None


def commitment_of(root: int, norm_sq: int) -> int:
    """The escrow's record commitment: uint192(keccak256(abi.encode(root, normSq))), 0 mapped to 1."""
    c = int.from_bytes(keccak(encode(["uint256", "uint256"], [root, norm_sq])), "big") & ((1 << 192) - 1)
    return c or 1


def duty_rank(key: bytes, me: str, watchers: set[str]) -> int:
    """This watcher's place among `watchers` (addresses, lower case) ordered by keccak256(key, watcher)."""
    order = sorted(watchers | {me}, key=lambda w: keccak(key + bytes.fromhex(w[2:])))
    return order.index(me)


@dataclass
class Evidence:
    """An accusation this peer made in a verified round (swarm.rounds.parts.Accusation, checked against the
    accused's DHT record), waiting for the accused's on-chain contribution (found by its committed root)."""

    accused: str  # the accused's DHT peer id
    stage: int
    chunk: int  # the first chunk of the part that failed
    root: int  # the root the accused committed on the DHT: its on-chain contribution has the same one
    reason: str
    wallet: str | None = None  # the accused's address, once its contribution is read
    done: bool = False
    proof: tuple | None = None  # PartEvidence for slashMismatch: the part's wallet-signed leaves lie
    norm_sq: int = 0
    signer: str = ""  # the wallet that signed the proof (the record's)
    seen_at: float = 0.0  # when we first read the accused's contribution


@dataclass
class WatchedRound:
    """What the watcher knows of one round of its experiment."""

    round: int
    records: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)  # (stage, peer) -> (root, norm)
    seed: bytes | None = None
    chunks: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (stage, peer) -> c_j for j < k
    proven: set[tuple[int, str, int]] = field(default_factory=set)  # (stage, peer, chunk): valid proof heard
    pending: list[Contribution] = field(default_factory=list)  # gossiped audit proofs not checked yet
    gossiped: set[tuple[int, str]] = field(default_factory=set)  # contributions heard on gossip
    audits: dict[tuple[int, str, int], str] = field(default_factory=dict)  # (stage, peer, j) -> opener
    answered: set[tuple[int, str, int]] = field(default_factory=set)
    slashed: set[tuple[int, str]] = field(default_factory=set)
    arm_sent: bool = False
    given_up: set[tuple[int, str]] = field(default_factory=set)  # contributions we will not audit (too late)
    evidence: list[Evidence] = field(default_factory=list)
    short_of_bonds: bool = False  # said once per round: no more bonds to put up for it


class Watcher(StartStop):
    """`with Watcher(client, experiment_id) as w: relay.listeners.append(w.on_gossip)`; stopped on every path."""

    def __init__(
        self,
        client: ChainClient,
        experiment_id: int,
        *,
        on_event: Callable[[SettlementEvent], None] | None = None,
        from_block: int | None = None,
        poll_s: float = POLL_S,
        backups: int = BACKUPS,
        max_bonds: int = MAX_BONDS,
        targeted: bool = False,
    ) -> None:
        self.client, self.experiment_id = client, experiment_id
        # open a targeted audit of the chunk our own accusations name (off by default: docs/protocol.md,
        # "Evidence on-chain", says why a true accusation can still be answered today)
        self.targeted = targeted
        self._accusations: queue.Queue[Any] = queue.Queue(maxsize=GOSSIP_QUEUE)
        self.on_event = on_event or (lambda e: None)
        self.poll_s, self.backups, self.max_bonds = poll_s, backups, max_bonds
        self.me = client.address.lower()
        self.state = client.experiment(experiment_id)
        self.bond = int(client.read("auditBond"))
        self.reporter_share = int(client.read("minStake")) * int(client.read("reporterBps")) // 10_000
        self._verifier = client.contract("IChunkVerifier", self.state.verifier)
        self._num_chunks: dict[int, int] = {}
        self._domain_key: tuple[int, str, int] | None = None
        self._fraud_checker: Any = None
        self.mismatch_slashes: list[tuple[int, int, str]] = []  # (round, stage, peer) slashed from our evidence
        self._cursor = from_block  # None: look back over the rounds that can still be slashed (start())
        self.started_at = 0  # chain time at start(): sampled audits only of rounds whose proofs we could hear
        self._gossip: queue.Queue[Any] = queue.Queue(maxsize=GOSSIP_QUEUE)
        self.rounds: dict[int, WatchedRound] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.opened: list[tuple[int, int, str, int]] = []  # (round, stage, peer, j) opened by us
        self.slashes: list[tuple[int, int, str]] = []  # (round, stage, peer) slashed by our transaction
        self.earned = 0  # reporter shares paid to us (bonds returned not counted)
        self.bonds_lost = 0  # bonds of our audits that were answered

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self.started_at = self.client.block_timestamp()
        if self._cursor is None:
            self._cursor = self._lookback()
        self._thread = threading.Thread(target=self._run, name="round-watcher", daemon=True)
        self._thread.start()
        return self

    def _lookback(self) -> int:
        """The block to read events from at start: far enough back to hold every round that can still be
        slashed (a restarted peer slashes the audits it opened before), from the chain's mean block time."""
        head = self.client.block_number()
        span = self.state.round_duration + self.state.submit_window + 2 * self.state.audit_window
        sample = min(head, 1_000)
        if sample == 0:
            return 0
        newer, older = (self.client.w3.eth.get_block(n)["timestamp"] for n in (head, head - sample))
        seconds_per_block = max((newer - older) / sample, 0.01)
        return max(0, head - int(span / seconds_per_block) - 1)

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            self._thread = None

    def on_gossip(self, msg: Any) -> None:
        """A GossipRelay listener (runs on the gossip loop: only queues; the watcher's thread checks)."""
        enqueue(self._gossip, msg, "watcher: gossip queue full, a message is dropped")

    def on_accusation(self, accusation: Any) -> None:
        """A StagePeer evidence sink: an accusation this peer made (only queued; the watcher's thread acts)."""
        enqueue(self._accusations, accusation, "watcher: accusation queue full, one is dropped")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # the thread must outlive any bug: logged and reported as an event
                logger.exception("watcher pass failed")
                self._failed("pass", -1, exc)
            self._stop.wait(self.poll_s)

    def step(self) -> None:
        """One pass: new chain events and gossip, then each round's duties; a failing one does not stop the rest."""
        self._guarded(self._read_chain, -1)
        self._take_gossip()
        self._take_accusations()
        now = self._now()
        for r, w in sorted(self.rounds.items()):
            self._guarded(self._watch, r, w, now)

    def _guarded(self, fn: Callable[..., None], round: int, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 -- reported; the duty is retried next pass
            logger.warning("watcher step %s (round %d) failed: %s", fn.__name__, round, exc)
            self._failed(fn.__name__, round, exc)

    def _failed(self, step: str, round: int, exc: BaseException) -> None:
        self.on_event(SettlementEvent(kind="watch_failed", round=round, stage=-1,
                                      detail={"step": step, "error": f"{type(exc).__name__}: {exc}"}))

    def _now(self) -> int:
        return max(int(time.time()), self.client.block_timestamp())

    # ------------------------------------------------------------------------------------- what it hears

    def _round(self, r: int) -> WatchedRound:
        w = self.rounds.get(r)
        if w is None:
            w = self.rounds[r] = WatchedRound(round=r)
        return w

    def _read_chain(self) -> None:
        """Contributions, audits, answers and slashes of our experiment since the cursor (bounded ranges)."""
        assert self._cursor is not None
        head = self.client.block_number()
        if head < self._cursor:
            return
        batch: dict[str, list[dict]] = {name: [] for name in FOLLOWED}
        for e in self._logs(self._cursor, head):
            batch[e["event"]].append(e)
        for e in batch["Contributed"]:
            self._round(int(e["round"])).records[(int(e["stage"]), e["peer"].lower())] = (int(e["root"]),
                                                                                          int(e["normSq"]))
        for e in batch["AuditOpened"]:
            key = (int(e["stage"]), e["peer"].lower(), int(e["j"]))
            self._round(int(e["round"])).audits[key] = e["opener"].lower()
        for e in batch["AuditAnswered"]:
            w = self._round(int(e["round"]))
            key = (int(e["stage"]), e["peer"].lower(), int(e["j"]))
            w.answered.add(key)
            if w.audits.get(key) == self.me:
                self.bonds_lost += self.bond
        for e in batch["Slashed"]:
            self._round(int(e["round"])).slashed.add((int(e["stage"]), e["peer"].lower()))
        self._cursor = head + 1

    def _logs(self, lo: int, hi: int) -> list[dict]:
        """The FOLLOWED events of our experiment in blocks [lo, hi], oldest first: one eth_getLogs per LOG_RANGE
        blocks (topic 0: any of the four events, topic 1: the experiment id, their first indexed argument)."""
        escrow = self.client.escrow
        assert escrow is not None
        events = {ev.topic: ev for ev in (getattr(escrow.events, name)() for name in FOLLOWED)}
        topics = [list(events), "0x" + self.experiment_id.to_bytes(32, "big").hex()]
        out = []
        for a in range(lo, hi + 1, LOG_RANGE):
            query = {"address": escrow.address, "fromBlock": a, "toBlock": min(a + LOG_RANGE - 1, hi), "topics": topics}
            for log in self.client.w3.eth.get_logs(query):
                decoded = events[log["topics"][0].to_0x_hex()].process_log(log)
                out.append({"event": decoded["event"], **dict(decoded["args"])})
        return out

    def _take_gossip(self) -> None:
        """Queue the gossiped audit proofs of our experiment in their rounds, to be checked when they can be."""
        oldest = newest = None
        for kind, c in gossiped_records(self._gossip, ("contribution", "audit_proof"), "watcher"):
            if c.experiment != self.experiment_id or c.proof is None and kind == "audit_proof":
                continue
            if oldest is None:
                current = self.state.round_at(self._now())
                oldest, newest = current - 64, current + 2
            if not oldest <= c.round <= newest:  # long over, or a round that cannot have contributions yet
                continue
            w = self._round(c.round)
            if kind == "contribution":
                if len(w.gossiped) < PENDING_PER_ROUND:
                    w.gossiped.add((c.stage, c.peer))
            elif len(w.pending) < PENDING_PER_ROUND:
                w.pending.append(c)

    def _take_accusations(self) -> None:
        while True:
            try:
                acc = self._accusations.get_nowait()
            except queue.Empty:
                return
            try:
                record = CommitRecord.from_wire(acc.record)
            except (PartError, AttributeError) as exc:
                logger.info("watcher: an accusation without a readable record: %s", exc)
                continue
            ev = Evidence(accused=acc.accused, stage=acc.stage, chunk=acc.chunk, root=record.root, reason=acc.reason,
                          norm_sq=record.norm_sq, signer=record.wallet.lower())  # fmt: skip
            d = record.domain
            if d is not None and (d.chain_id, d.escrow.lower(), d.experiment_id) == self._domain():
                try:
                    part = Part.from_bytes(acc.part)
                except PartError:
                    part = None
                ev.proof = part_evidence(record, part, len(part.leaves)) if part is not None else None
            self._round(acc.round).evidence.append(ev)

    def _checker(self) -> Any:
        """The escrow's PartFraudChecker (slashMismatch is sent there: it checks the part, the escrow slashes)."""
        if self._fraud_checker is None:
            self._fraud_checker = self.client.contract("PartFraudChecker", self.client.read("fraudChecker"))
        return self._fraud_checker

    def _domain(self) -> tuple[int, str, int]:
        """(chain id, escrow, experiment) that a part's wallet signature must name to be evidence here."""
        if self._domain_key is None:
            assert self.client.escrow is not None
            self._domain_key = (self.client.chain_id(), self.client.escrow.address.lower(), self.experiment_id)
        return self._domain_key

    def _evidence(self, w: WatchedRound, now: int, closes: int) -> None:
        """Tie each of our accusations to the accused's on-chain contribution (the same root); slash it from a
        signed part that lies (`slashMismatch`), or, with `targeted` (unsound, off), open a targeted audit of the
        chunk it names."""
        for ev in w.evidence:
            if ev.done:
                continue
            if ev.wallet is None:
                found = [peer for (stage, peer), (root, _) in w.records.items() if stage == ev.stage and root == ev.root]
                if ev.signer and ev.signer in found:
                    found = [ev.signer]
                if not found:
                    continue  # not contributed (yet): nothing to slash, it will not be paid either
                ev.wallet, ev.seen_at = found[0], now
                self.on_event(SettlementEvent(kind="evidence", round=w.round, stage=ev.stage, detail={
                    "peer": ev.wallet, "peer_id": ev.accused, "chunk": ev.chunk, "reason": ev.reason,
                    "on_chain": ev.proof is not None and ev.wallet == ev.signer}))  # fmt: skip
            if ev.proof is not None and ev.wallet == ev.signer:
                self._slash_mismatch(w, ev, now)
                continue
            ev.done = True
            if not self.targeted or now >= closes - 1 or ev.wallet == self.me or (ev.stage, ev.wallet) in w.slashed:
                continue
            if ev.chunk >= self._chunks_of(ev.stage):
                logger.warning("watcher: round %d: accusation names chunk %d, stage %d has %d on-chain", w.round,
                               ev.chunk, ev.stage, self._chunks_of(ev.stage))
                continue
            try:
                j = self.client.open_targeted_audit(self.experiment_id, w.round, ev.stage, ev.wallet, ev.chunk)
            except RevertError as exc:
                if exc.error_name in RACE_LOST | TOO_EARLY | {"NoTargetedAuditSlot", "ChunkOutOfRange"}:
                    logger.info("watcher: round %d: no targeted audit of %s chunk %d: %s", w.round, ev.wallet,
                                ev.chunk, exc)
                    continue
                ev.done = False  # retried next pass
                raise
            w.audits[(ev.stage, ev.wallet, j)] = self.me
            self.opened.append((w.round, ev.stage, ev.wallet, j))
            logger.info("watcher: round %d: targeted audit %d of %s, chunk %d (our accusation: %s)", w.round, j,
                        ev.wallet, ev.chunk, ev.reason)
            self.on_event(SettlementEvent(kind="audit_opened", round=w.round, stage=ev.stage, detail={
                "peer": ev.wallet, "j": j, "chunk": ev.chunk, "targeted": True}))  # fmt: skip

    def mismatch_time(self, w: WatchedRound, ev: Evidence) -> float:
        """When we send slashMismatch for `ev` if nobody has: ARM_STEP_S per rank (keccak256 of the record and
        the watcher, among the round's contributors) after we first read the accused's contribution."""
        key = encode(["uint256", "uint256", "uint256", "address"], [self.experiment_id, w.round, ev.stage, ev.wallet])
        rank = duty_rank(key, self.me, self._watchers(w) - {ev.wallet or ""})
        return ev.seen_at + rank * ARM_STEP_S

    def _slash_mismatch(self, w: WatchedRound, ev: Evidence, now: int) -> None:
        assert ev.wallet is not None and ev.proof is not None
        if ev.wallet == self.me or (ev.stage, ev.wallet) in w.slashed:
            ev.done = True
            return
        if now < self.mismatch_time(w, ev):
            return
        record = self.client.record(self.experiment_id, w.round, ev.stage, ev.wallet)
        if record.slashed or record.claimed:
            ev.done = True
            w.slashed.add((ev.stage, ev.wallet))
            return
        try:
            receipt = self.client.transact("slashMismatch", self.experiment_id, w.round, ev.stage,
                                           Web3.to_checksum_address(ev.wallet), ev.root, ev.norm_sq, ev.proof,
                                           contract=self._checker())  # fmt: skip
        except RevertError as exc:
            if exc.error_name is RACED_IN_BLOCK:
                return  # looked at again next pass
            ev.done = True
            if exc.error_name in RACE_LOST | {"AlreadyClaimed"}:
                w.slashed.add((ev.stage, ev.wallet))
            logger.info("watcher: round %d: no slashMismatch of %s: %s", w.round, ev.wallet, exc)
            return
        ev.done = True
        w.slashed.add((ev.stage, ev.wallet))
        assert self.client.escrow is not None
        (event,) = self.client.escrow.events.Slashed().process_receipt(receipt, errors=DISCARD)
        reward = int(event["args"]["reporterReward"])
        self.earned += reward
        self.slashes.append((w.round, ev.stage, ev.wallet))
        self.mismatch_slashes.append((w.round, ev.stage, ev.wallet))
        logger.info("watcher: round %d: slashed %s (stage %d) from its signed part (%s): %d gas, paid %d", w.round,
                    ev.wallet, ev.stage, ev.reason, receipt["gasUsed"], reward)
        self.on_event(SettlementEvent(kind="slashed", round=w.round, stage=ev.stage, detail={
            "peer": ev.wallet, "j": -1, "amount": str(int(event["args"]["amount"])), "reporter": self.me,
            "reward": str(reward), "mine": True, "gas": receipt["gasUsed"], "evidence": ev.reason}))  # fmt: skip

    def _check_pending(self, w: WatchedRound) -> None:
        """Check the round's gossiped audit proofs whose record and audited chunks are known now."""
        keep = []
        for c in w.pending:
            key = (c.stage, c.peer)
            if key not in w.records or w.seed is None:
                keep.append(c)
                continue
            self._audited(w, key)
            if (c.stage, c.peer, c.chunk) in w.proven:
                continue
            if self._proof_ok(c, w):
                w.proven.add((c.stage, c.peer, c.chunk))
            else:
                logger.info("watcher: round %d: a gossiped audit proof of %s (stage %d, chunk %d) does not hold",
                            c.round, c.peer, c.stage, c.chunk)
        w.pending = keep

    def _proof_ok(self, c: Contribution, w: WatchedRound) -> bool:
        """The proof opens one of the peer's audited chunks under the root and norm it contributed, and the
        experiment's verifier accepts it (the same check answerAudit makes)."""
        root, norm_sq = w.records[(c.stage, c.peer)]
        if (c.root, c.norm_sq) != (root, norm_sq) or c.chunk not in w.chunks[(c.stage, c.peer)] or c.proof is None:
            return False
        try:
            return bool(self.client.read("verifyTx", c.proof.abi_tuple(), c.public_inputs(self.state.norm_bound),
                                         contract=self._verifier))  # fmt: skip
        except ChainError as exc:  # a malformed proof (e.g. a point off the curve) reverts
            logger.info("watcher: verifier refused a gossiped proof: %s", exc)
            return False

    # ------------------------------------------------------------------------------------------ the duties

    def _watch(self, w: WatchedRound, now: int) -> None:
        r = w.round
        opens = self.state.submission_end(r)
        closes = opens + self.state.audit_window // 2
        ends = self.state.audit_end(r)
        others = [key for key in w.records if key[1] != self.me]
        if now >= ends + self.state.audit_window or (not others and now >= ends):
            self.rounds.pop(r, None)  # nothing left to enforce (or nobody to watch)
            if others:
                mine = sum(1 for opener in w.audits.values() if opener == self.me)
                logger.info("watcher: round %d done: %d other contributions on-chain, %d heard on gossip, %d valid "
                            "audit proofs heard, %d audits opened (%d by us), %d slashed", r, len(others),
                            len(w.gossiped), len(w.proven), len(w.audits), mine, len(w.slashed))
            return
        if now >= ends:
            self._slash(w, now, ends)
        if w.evidence:
            self._evidence(w, now, closes)
        if not others or now < opens or now >= closes:
            return
        if w.seed is None and not self._seed(w, now, opens, closes):
            return
        self._check_pending(w)
        for key in others:
            self._maybe_open(w, key, now, opens, closes)

    def _watchers(self, w: WatchedRound) -> set[str]:
        return {peer for _, peer in w.records}

    def _seed(self, w: WatchedRound, now: int, opens: int, closes: int) -> bool:
        """Read the round's seed; arm it when it is our turn and nobody has. True once the seed is known."""
        seed = self.client.round_seed(self.experiment_id, w.round)
        if seed is not None:
            w.seed = seed
            return True
        if w.arm_sent or now >= closes:
            return False  # armed (readable from the next block) or too late to open audits anyway
        if now < self.arm_time(w) or self.client.block_timestamp() < opens:
            return False
        try:
            receipt = self.client.arm_seed(self.experiment_id, w.round)
        except RevertError as exc:
            if exc.error_name in TOO_EARLY or exc.error_name is RACED_IN_BLOCK:
                return False
            if exc.error_name not in RACE_LOST:
                raise
        else:
            self.on_event(SettlementEvent(kind="seed_armed", round=w.round, stage=-1,
                                          detail={"gas": receipt["gasUsed"]}))
        w.arm_sent = True
        return False

    def arm_time(self, w: WatchedRound) -> float:
        """When this watcher arms the round's seed if nobody has: ARM_STEP_S per rank after submissions close."""
        key = encode(["uint256", "uint256"], [self.experiment_id, w.round])
        return self.state.submission_end(w.round) + duty_rank(key, self.me, self._watchers(w)) * ARM_STEP_S

    def open_time(self, w: WatchedRound, peer: str) -> float | None:
        """When this watcher opens an audit of `peer`'s contribution whose proofs it did not hear (None: never,
        it is past the last backup). Needs the round's seed."""
        assert w.seed is not None
        opens = self.state.submission_end(w.round)
        phase = self.state.audit_window // 2
        first = opens + phase * 4 // 5
        step = max(1.0, (opens + phase - self._margin() - first) / max(1, self.backups))
        rank = duty_rank(w.seed + bytes.fromhex(peer[2:]), self.me, self._watchers(w) - {peer})
        return None if rank > self.backups else first + rank * step

    def _margin(self) -> int:
        """Seconds before the opening phase ends that no audit is tried any more (inclusion time)."""
        return max(2, self.state.audit_window // 20)

    def _chunks_of(self, stage: int) -> int:
        if stage not in self._num_chunks:
            self._num_chunks[stage] = self.client.num_chunks(self.experiment_id, stage)
        return self._num_chunks[stage]

    def _audited(self, w: WatchedRound, key: tuple[int, str]) -> list[int]:
        """The chunks c_j (j < k) the round's seed picks for the contribution `key` = (stage, peer)."""
        if key not in w.chunks:
            assert w.seed is not None
            w.chunks[key] = challenged_chunks(w.seed, key[1], key[0], self.state.audits_per_peer,
                                              self._chunks_of(key[0]))
        return w.chunks[key]

    def _missing(self, w: WatchedRound, key: tuple[int, str]) -> int | None:
        """The first audit index j whose chunk has no valid proof heard, or None."""
        stage, peer = key
        for j, chunk in enumerate(self._audited(w, key)):
            if (stage, peer, chunk) not in w.proven:
                return j
        return None

    def _maybe_open(self, w: WatchedRound, key: tuple[int, str], now: int, opens: int, closes: int) -> None:
        stage, peer = key
        if opens < self.started_at:  # its proofs may have been gossiped before we listened: we only slash
            return
        if key in w.given_up or key in w.slashed or any(a[:2] == key for a in w.audits):
            return
        j = self._missing(w, key)
        if j is None:
            return
        due = self.open_time(w, peer)
        if due is None or now < due:
            return
        if now >= closes - 1:  # the transaction would land after the opening phase
            w.given_up.add(key)
            return
        if self.reporter_share <= 0:
            w.given_up.add(key)
            logger.warning("watcher: the escrow pays no reporter share: opening audits would only cost us")
            return
        outstanding = sum(1 for x in self.rounds.values() for a, opener in x.audits.items()
                          if opener == self.me and a not in x.answered and a[:2] not in x.slashed)  # fmt: skip
        if outstanding >= self.max_bonds or self.client.token_balance() < self.bond:
            if not w.short_of_bonds:
                w.short_of_bonds = True
                logger.warning("watcher: round %d: no proof of %s's chunk %d heard, but %d of our bonds are out "
                               "already (at most %d) or the balance is below the bond: not opening for now", w.round,
                               peer, w.chunks[key][j], outstanding, self.max_bonds)
            return
        record = self.client.record(self.experiment_id, w.round, stage, peer)
        if record.slashed or record.audits_opened:  # someone was faster (its event is not read yet)
            w.given_up.add(key)
            return
        try:
            receipt = self.client.open_audit(self.experiment_id, w.round, stage, peer, j)
        except RevertError as exc:
            if exc.error_name in RACE_LOST:
                w.given_up.add(key)
                return
            if exc.error_name in TOO_EARLY or exc.error_name is RACED_IN_BLOCK:
                if now >= closes - 1:
                    w.given_up.add(key)
                return  # the chain's clock is behind ours, or another opened it in the same block: next pass
            raise
        w.audits[(stage, peer, j)] = self.me
        self.opened.append((w.round, stage, peer, j))
        logger.info("watcher: round %d: opened audit %d of %s (stage %d, chunk %d): its proof never came",
                    w.round, j, peer, stage, w.chunks[key][j])
        self.on_event(SettlementEvent(kind="audit_opened", round=w.round, stage=stage,
                                      detail={"peer": peer, "j": j, "chunk": w.chunks[key][j],
                                              "gas": receipt["gasUsed"]}))

    def _slash(self, w: WatchedRound, now: int, ends: int) -> None:
        """Slash each unanswered audit: ours at once, others' (the reward still goes to their opener) later."""
        if self.client.block_timestamp() < ends:
            return
        for (stage, peer, j), opener in sorted(w.audits.items()):
            if (stage, peer) in w.slashed or (stage, peer, j) in w.answered:
                continue
            if opener != self.me and now < ends + self.state.audit_window // 4:
                continue
            try:
                receipt = self.client.slash(self.experiment_id, w.round, stage, peer, j)
            except RevertError as exc:
                if exc.error_name == "AlreadySlashed":
                    w.slashed.add((stage, peer))
                elif exc.error_name in RACE_LOST:  # answered after all, or not ours to slash: leave it
                    w.answered.add((stage, peer, j))
                elif exc.error_name not in TOO_EARLY and exc.error_name is not RACED_IN_BLOCK:
                    raise
                continue
            w.slashed.add((stage, peer))
            (event,) = self.client.escrow.events.Slashed().process_receipt(receipt, errors=DISCARD)
            reward = int(event["args"]["reporterReward"])
            mine = event["args"]["reporter"].lower() == self.me
            if mine:
                self.earned += reward
            self.slashes.append((w.round, stage, peer))
            logger.info("watcher: round %d: slashed %s (stage %d) for unanswered audit %d; reporter %s paid %d",
                        w.round, peer, stage, j, event["args"]["reporter"], reward)
            self.on_event(SettlementEvent(kind="slashed", round=w.round, stage=stage, detail={
                "peer": peer, "j": j, "amount": str(int(event["args"]["amount"])), "reporter": opener,
                "reward": str(reward), "mine": mine, "gas": receipt["gasUsed"]}))  # fmt: skip
