"""Verified rounds: the peers of a stage average exactly the updates they committed, and check them first.

Round r (after its training window ends at T = round_end(r)), on DHT time:
1. commit, until T + commit_s: Δ = params - anchor is quantized and committed once; the signed CommitRecord
   (root, norm, one-round part key, anchor digest) is stored on the DHT. Nobody serves data before this deadline.
2. exchange, until + exchange_s: every peer pulls every other committed peer's parts (all-gather over the DHT's
   p2pd), checks each against the sender's record before keeping it, relays parts it has verified to whoever
   asks, and publishes a signed accusation for a part that fails.
3. agree, until + agree_s: accusations are pulled from every peer and checked; parts still missing are fetched
   from any peer that verified them. Dropped by every honest peer: an accused peer, a peer whose data nobody could
   get, a peer with another anchor, a norm above the bound, a replayed root; with `min_alignment`, then, among 3 or
   more kept peers, an update aligned with fewer than half of the others (swarm/rounds/alignment.py: a free rider's
   random update of honest norm passes every other check).
4. apply: the mean (exact integer sum) or CenteredClip of the kept updates, sorted by peer id, goes through the
   outer optimizer from the shared anchor: every honest peer of the group gets the same anchor, bit for bit.
Design and trade-offs: docs/protocol.md ("Verified rounds").
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Self

import hivemind
import msgpack
import numpy as np
import torch
from hivemind.p2p import P2PContext, PeerID
from hivemind.proto import runtime_pb2
from hivemind.utils import get_dht_time

from protocol.fixed_point import SCALE_FRAC_BITS
from swarm.errors import AveragingError
from swarm.network.dht import owner_subkey, peer_id_of_owner
from swarm.network.p2p import P2PClient
from swarm.rounds.alignment import misaligned
from swarm.rounds.attacks import AVERAGING_ATTACKS as ATTACKS
from swarm.rounds.attacks import AveragingAttack as Attack
from swarm.rounds.averager import RoundResult
from swarm.rounds.clock import MAX_ROUND_SHARE, PhaseObservation, RoundClock, RoundTiming, adapt_timing
from swarm.rounds.outer import Aggregation, OuterName, OuterOptimizer, aggregate, state_digest
from swarm.rounds.parts import (
    Accusation,
    CommitRecord,
    Part,
    PartError,
    PartLayout,
    WalletSigner,
    accusation_holds,
    check_part,
    data_leaves,
    make_parts,
    new_round_key,
    part_signed_by,
)  # fmt: skip
from zk.circuit import DEFAULT_PARAMS, CircuitParams
from zk.commit import Commitment, commit_update
from zk.quantize import QuantizedUpdate, quantize_update

logger = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0
RETRY_PAUSE = 0.2
STATE_PIECE = 2 << 20  # bytes of state per download message (p2pd's unary limit is 4 MiB)
DEFAULT_PART_CHUNKS = 64
DEFAULT_NORM_FACTOR = 10.0  # an update whose norm is above this many times the group's median norm is dropped
SPLIT_DELAY = 1.0  # --attack split answers its victim this late (seconds)
DHT_TIMEOUT = 10.0  # a DHT call that takes longer is given up (a DHT process stopped by Ctrl-C never answers)


@dataclass
class _Round:
    """What this peer knows about one round; the P2P handlers read it from the loop thread (under `lock`)."""

    round: int
    deadline: float  # commit deadline: no data of this round is served before it
    record: CommitRecord | None = None
    commitment: Commitment | None = None
    parts: list[Part] = field(default_factory=list)
    records: dict[str, CommitRecord] = field(default_factory=dict)
    held: dict[tuple[str, int], Part] = field(default_factory=dict)  # verified parts of others (we relay them)
    accusations: dict[str, Accusation] = field(default_factory=dict)  # accused -> accusation we made or checked
    incoming: list[bytes] = field(default_factory=list)  # accusations sent to us, checked in the agree phase
    pulled: int = 0  # other peers whose parts we pull (phase timing reports it)
    gathered_at: float | None = None  # DHT time at which we held every part we pulled
    closed: bool = False  # past the exchange deadline: a part that fails now is evidence, no longer a drop
    bad_parts: list[Part] = field(default_factory=list)  # --attack split: what the victim is sent
    late: set[str] = field(default_factory=set)  # senders caught after the exchange deadline (evidence only)
    victim: str | None = None  # --attack split: the peer that is sent the bad parts


def flat_parameters(module: torch.nn.Module) -> torch.Tensor:
    """All parameters of `module` as one new float32 vector, in parameters() order."""
    return torch.cat([p.detach().reshape(-1).float() for p in module.parameters()]).clone()


def load_flat_parameters(module: torch.nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector (as flat_parameters makes it) into the module's parameters."""
    offset = 0
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(flat[offset : offset + p.numel()].reshape(p.shape).to(p.dtype))
            offset += p.numel()


class VerifiedAverager:
    """Averages one stage with its group each round through committed, checked updates (see the module doc)."""

    def __init__(
        self,
        dht: hivemind.DHT,
        experiment: str,
        stage: int,
        module: torch.nn.Module,
        *,
        clock: RoundClock,
        lock=None,
        params: CircuitParams = DEFAULT_PARAMS,
        part_chunks: int = DEFAULT_PART_CHUNKS,
        aggregation: Aggregation = "mean",
        outer: OuterName = "sgd",
        outer_lr: float | None = None,
        norm_bound: float | None = None,
        norm_factor: float | None = DEFAULT_NORM_FACTOR,
        timing: RoundTiming | None = None,
        adaptive: bool | None = None,
        timing_floor: RoundTiming | None = None,
        attack: Attack | None = None,
        on_accusation: Callable[[Accusation], None] | None = None,
        wallet: WalletSigner | None = None,
        min_alignment: float | None = None,
        start: bool = True,
    ) -> None:
        if attack is not None and attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}: use one of {', '.join(ATTACKS)}")
        if min_alignment is not None and not min_alignment >= 0:
            raise ValueError(f"min_alignment is in sigmas, >= 0 (0 or None: off), got {min_alignment!r}")
        self.dht, self.experiment, self.stage, self.module = dht, experiment, stage, module
        self.clock, self.params, self.part_chunks = clock, params, part_chunks
        self.lock = lock if lock is not None else threading.Lock()
        self.aggregation, self.attack = aggregation, attack
        self.outer = OuterOptimizer(outer, outer_lr)
        self.norm_bound_sq = None if norm_bound is None else int((norm_bound * (1 << SCALE_FRAC_BITS)) ** 2)
        self.norm_factor = norm_factor
        self.timing = timing or RoundTiming.for_duration(clock.round_duration)
        # adaptive (default when no timing is given): each round's phases follow the previous round's reports
        # (swarm.rounds.clock.adapt_timing), never below `timing_floor` (default: `timing`, so they only grow)
        self.adaptive = timing is None if adaptive is None else adaptive
        self.timing_floor = timing_floor or self.timing
        self.last_phases: PhaseObservation | None = None
        self._kept_records: tuple[int, list[CommitRecord]] | None = None  # the last round's agreed kept records
        self._timing_warned: int | None = None
        self.on_accusation = on_accusation or (lambda acc: None)
        self.wallet = wallet  # a paid peer's: signs its parts' leaves, so a lie in them can be slashed on-chain
        self.min_alignment = min_alignment  # sigmas; drop kept updates not aligned with the others' (alignment.py)
        if not list(module.parameters()):
            raise AveragingError(f"stage {stage}'s module has no parameters to average")
        with self.lock, torch.no_grad():
            self.anchor = flat_parameters(module)
        self.anchor_round = -1
        self.last_round: int | None = None
        self.last_delta: torch.Tensor | None = None
        self.last_commitment: Commitment | None = None
        self._rounds: dict[int, _Round] = {}
        self._state_blobs: dict[bytes, bytes] = {}  # digest -> serialized (anchor, momentum) of recent anchors
        self._past_roots: dict[str, dict[int, int]] = {}  # peer -> round -> root it committed (replay check)
        self._stale: tuple[QuantizedUpdate, Commitment] | None = None  # the "stale" attack's replayed update
        self._split_parts: list[Part] = []  # the "split" attack's parts for its victim (this round)
        self._guard = threading.Lock()
        self._wire = [0, 0]  # bytes sent, received
        self._client: P2PClient | None = None
        # zk's C Poseidon releases the GIL: parts of several senders are checked on several cores at once
        self._verify_pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix=f"verify-s{stage}")
        quantize_update(torch.zeros(4))  # import bitsandbytes now, not inside the first round's commit window
        if start:
            self.start()

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def prefix(self) -> str:
        return f"{self.experiment}.s{self.stage}.verified"

    @property
    def peer_id(self) -> str:
        return self.dht.peer_id.to_base58()

    def records_of(self, round: int) -> dict[str, CommitRecord] | None:
        """The commit records this peer read for `round` (peer id -> record), or None once the round is gone (the
        averager keeps the last two rounds)."""
        with self._guard:
            st = self._rounds.get(round)
            return None if st is None else dict(st.records)

    def start(self) -> None:
        if self._client is not None:
            return
        self._client = P2PClient(self.dht, f"verified-s{self.stage}", CALL_TIMEOUT * 6)
        try:
            self._client.run(self._register(), CALL_TIMEOUT * 6)
        except BaseException:
            self.shutdown()
            raise
        self._remember_state()
        self._announce()

    def shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close(before=self._unregister(client))
        self._verify_pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    async def _register(self) -> None:
        for kind, handler in (("part", self._serve_part), ("accuse", self._serve_accuse), ("state", self._serve_state)):
            await self._client.p2p.add_protobuf_handler(f"{self.prefix}.{kind}", handler, runtime_pb2.ExpertRequest)

    async def _unregister(self, client: P2PClient) -> None:
        for kind in ("part", "accuse", "state"):
            await client.p2p.remove_protobuf_handler(f"{self.prefix}.{kind}")

    # ------------------------------------------------------------------------------------------ DHT records

    def _commit_key(self, r: int) -> str:
        return f"{self.experiment}_s{self.stage}_vcommit_{r}"

    def _presence_key(self) -> str:
        return f"{self.experiment}_s{self.stage}_vpeers"

    def _announce(self) -> None:
        ttl = max(3 * self.clock.round_duration, 30.0)
        value = {"peer_id": self.peer_id, "anchor_round": self.anchor_round}
        self._dht_call(self.dht.store, self._presence_key(), value, get_dht_time() + ttl, subkey=owner_subkey(self.dht))

    def _dht_call(self, method, *args, wait_s: float = DHT_TIMEOUT, **kwargs):
        """A DHT get/store with a deadline; None if it does not answer in time (e.g. the DHT is shutting down)."""
        try:
            return method(*args, return_future=True, **kwargs).result(timeout=wait_s)
        except Exception as exc:  # noqa: BLE001 - a timeout or a dead DHT: this call's answer is unknown
            logger.warning("stage %d: DHT %s failed: %r", self.stage, getattr(method, "__name__", "call"), exc)
            return None

    def _present_peers(self) -> dict[str, int]:
        """peer id -> anchor round of the stage's averagers seen on the DHT (self included)."""
        found = self._dht_call(self.dht.get, self._presence_key(), latest=True)
        out = {}
        if found is not None and isinstance(found.value, dict):
            for subkey, item in found.value.items():
                v = item.value
                if isinstance(v, dict) and v.get("peer_id") == peer_id_of_owner(subkey) and \
                        isinstance(v.get("anchor_round"), int):
                    out[v["peer_id"]] = v["anchor_round"]
        return out

    def other_peers(self) -> int:
        return len(set(self._present_peers()) - {self.peer_id})

    def _read_records(self, r: int, wait_s: float = DHT_TIMEOUT) -> dict[str, CommitRecord]:
        found = self._dht_call(self.dht.get, self._commit_key(r), latest=True, wait_s=wait_s)
        out: dict[str, CommitRecord] = {}
        if found is None or not isinstance(found.value, dict):
            return out
        for subkey, item in found.value.items():
            try:
                rec = CommitRecord.from_wire(item.value)
            except PartError as exc:
                logger.info("stage %d round %d: dropping a malformed commit record: %s", self.stage, r, exc)
                continue
            if rec.peer_id != peer_id_of_owner(subkey) or (rec.round, rec.stage) != (r, self.stage):
                logger.info("stage %d round %d: dropping a commit record written by another peer", self.stage, r)
                continue
            out[rec.peer_id] = rec
        return out

    # ------------------------------------------------------------------------------------------ the round

    def step(self, round: int, timeout: float | None = None, stop: threading.Event | None = None) -> RoundResult:
        """Run round `round`'s verified exchange (call it once the round's training window has ended).

        Returns at the round's agree deadline with the anchor and parameters updated; never raises on a failed
        round (a peer alone, or one that saw nobody's data, keeps its parameters). Setting `stop` (the peer is
        leaving) ends the round at once without applying it."""
        if self._client is None:
            raise AveragingError("this VerifiedAverager is shut down (or was never started); make a new one")
        if round < 0:
            raise ValueError(f"round must be >= 0, got {round}")
        started = time.monotonic()
        wire0 = tuple(self._wire)
        end = self.clock.round_end(round)
        timing = self.round_timing(round)
        deadline = end + timing.commit_s
        exchange_end = deadline + timing.exchange_s
        agree_end = exchange_end + timing.agree_s
        st = _Round(round, deadline)
        with self._guard:
            self._rounds[round] = st
            for old in [k for k in self._rounds if k < round - 1]:
                del self._rounds[old]
        with self.lock, torch.no_grad():
            snapshot = flat_parameters(self.module)
        delta = snapshot - self.anchor
        self.last_delta, self.last_round = delta, round
        t0 = time.monotonic()
        commitment, parts, record = self._commit(round, delta)
        commit_seconds = time.monotonic() - t0
        if get_dht_time() < deadline:
            with self._guard:
                st.record, st.commitment, st.parts = record, commitment, parts
                st.bad_parts = self._split_parts
            self.last_commitment = commitment
            stored = self._dht_call(self.dht.store, self._commit_key(round), record.to_wire(),
                                    end + 3 * self.clock.round_duration, subkey=owner_subkey(self.dht))
            if not stored:
                logger.warning("stage %d round %d: commit record not stored; this round's update is lost", self.stage,
                               round)
        else:
            logger.warning("stage %d round %d: committing took %.1f s, past the commit deadline; not contributing "
                           "(raise the round duration)", self.stage, round, commit_seconds)
            self.last_commitment = None
        commit_need = get_dht_time() - end
        stop = stop or threading.Event()
        _sleep_until(deadline + 0.1, stop)
        records = self._read_records(round)
        if st.record is not None:
            records[self.peer_id] = st.record
        with self._guard:
            st.records = records
        candidates, dropped, best = self._admit(round, records)
        t1, dht_t1 = time.monotonic(), get_dht_time()
        exchange = self._client.loop.submit(self._exchange(st, candidates, dropped, exchange_end, agree_end))
        limit = time.monotonic() + max(agree_end - get_dht_time(), 0) + 4 * CALL_TIMEOUT
        while not exchange.done() and not stop.is_set() and time.monotonic() < limit:
            stop.wait(0.1)
        if not exchange.done():
            exchange.cancel()
            logger.warning("stage %d round %d: the exchange %s", self.stage, round,
                           "was stopped" if stop.is_set() else "overran its deadline")
        if stop.is_set() or not exchange.done() or exchange.cancelled():
            for p in candidates:  # nothing agreed (the peer is leaving, or the exchange hung): not applied
                dropped.setdefault(p, "the round did not finish on this peer")
        kept = [p for p in candidates if p not in dropped]
        updates = [self._update_of(st, p) for p in kept]
        if self.min_alignment:  # the same verified updates on every honest peer: the same decision
            unaligned, found = misaligned(kept, updates, self.min_alignment)
            if found:  # each judged peer: its cosines x sqrt(d) with the others, and its committed |Δ|
                logger.info("stage %d round %d: alignment with the others, in sigmas (cos x sqrt(d)), and |Δ|: %s",
                            self.stage, round, "; ".join(
                                f"{p[-6:]} {' '.join(f'{s:.1f}' for s in v)} |Δ| "
                                f"{records[p].norm_sq ** 0.5 / (1 << SCALE_FRAC_BITS):.3g}" for p, v in found.items()))
            for p, why in unaligned.items():
                dropped[p] = why
                logger.warning("stage %d round %d: dropping peer %s: %s", self.stage, round, p, why)
            updates = [u for p, u in zip(kept, updates) if p not in unaligned]
            kept = [p for p in kept if p not in unaligned]
        check_seconds = time.monotonic() - t1  # until every part was held and checked, not the deadline waits
        if st.gathered_at is not None:
            check_seconds = min(check_seconds, max(st.gathered_at - dht_t1, 0.0))
        applied = False
        if updates:
            avg = aggregate(updates, self.aggregation)
            applied = self._apply(round, snapshot, avg, best)
        for p, rec in records.items():
            self._past_roots.setdefault(p, {})[round] = rec.root
            for old in [k for k in self._past_roots[p] if k < round - 4]:
                del self._past_roots[p][old]
        self._announce()
        _sleep_until(agree_end, stop)
        self._observe(st, timing, records, kept, commit_need, check_seconds, agree_end, finished=not stop.is_set())
        sent, received = self._wire[0] - wire0[0], self._wire[1] - wire0[1]
        others = [p for p in kept if p != self.peer_id]
        return RoundResult(
            round=round, group_size=len(kept) if applied else 1, averaged=applied and bool(others),
            bytes_sent=sent, bytes_received=received, seconds=time.monotonic() - started,
            update_norm=float(delta.norm()), verified=True, included=sorted(kept), dropped=dict(sorted(dropped.items())),
            accusations=sum(1 for a in st.accusations.values() if a.accuser == self.peer_id),
            parts_checked=sum(1 for (owner, _) in st.held if owner in candidates), check_seconds=check_seconds,
            commit_seconds=commit_seconds,
        )  # fmt: skip

    def _commit(self, r: int, delta: torch.Tensor) -> tuple[Commitment, list[Part], CommitRecord]:
        """Quantize and commit this round's update once (a cheater's version, with --attack), and sign its parts."""
        committed = attacked_update(delta, self.attack, self.norm_factor)
        q = quantize_update(committed, block_size=self.params.block)
        if self.attack == "stale" and self._stale is not None:
            q, commitment = self._stale
        else:
            commitment = commit_update(q, self.params)
        if self.attack == "stale":
            self._stale = (q, commitment)
        key, public = new_round_key()
        record = CommitRecord(
            peer_id=self.peer_id, round=r, stage=self.stage, root=commitment.root, norm_sq=commitment.norm_sq,
            numel=q.numel, num_chunks=commitment.num_chunks, part_key=public, anchor_round=self.anchor_round,
            anchor_digest=state_digest(self.anchor, self.anchor_round, self.outer), **self._domain(),
            **self._timing_report(),
        )  # fmt: skip
        parts = make_parts(commitment, self.peer_id, r, self.stage, key, self.part_chunks, self.wallet)
        if self.attack in ("poison", "random"):
            layout = PartLayout(self.params, q.numel, self.part_chunks)
            parts = [corrupt_part(p, key, self.attack, self.wallet, layout) for p in parts]
        self._split_parts = []
        if self.attack == "split":  # honest parts for all but one peer, random codes for that one
            layout = PartLayout(self.params, q.numel, self.part_chunks)
            self._split_parts = [corrupt_part(p, key, "random", self.wallet, layout) for p in parts]
        return commitment, parts, record

    # ------------------------------------------------------------------------------------------ phase timing

    def round_timing(self, round: int) -> RoundTiming:
        """Round `round`'s phases: the configured ones, or (adaptive) what the kept peers of round - 1 reported they
        need (the same on every peer of the group that finished round - 1; the configured ones on any other)."""
        if not self.adaptive:
            return self.timing
        kept = self._kept_records
        reports = kept[1] if kept is not None and kept[0] == round - 1 else self._records_in_camp(round - 1)
        adapted = adapt_timing(reports, fallback=self.timing, floor=self.timing_floor,
                               round_duration=self.clock.round_duration)  # fmt: skip
        if not adapted.fits and (self._timing_warned is None or round - self._timing_warned >= 10):
            self._timing_warned = round
            need = adapted.need or adapted.timing
            logger.warning("stage %d round %d: the group needs %.1f s of averaging phases (commit %.1f, exchange "
                           "%.1f, agree %.1f) but rounds of %.0f s allow %.1f; phases cut to fit, so peers may be "
                           "dropped: lengthen the round duration (--round-duration) to at least %.0f s", self.stage,
                           round, need.total, need.commit_s, need.exchange_s, need.agree_s, self.clock.round_duration,
                           adapted.timing.total, need.total / MAX_ROUND_SHARE + 1)  # fmt: skip
        return adapted.timing

    def _records_in_camp(self, r: int) -> list[CommitRecord]:
        """For a peer that did not finish round `r` (it joined, or missed it): the records of `r` still on the DHT
        that name the anchor most of them name. Those are the group's kept records whenever no peer of the camp was
        dropped for its data, so it usually gets the group's deadlines; if not, it differs for one round. The read
        waits at most a quarter of the commit phase; nothing read: the configured timing."""
        if r < 0:
            return []
        records = self._read_records(r, wait_s=min(DHT_TIMEOUT, self.timing.commit_s / 4))
        camps: dict[tuple[int, bytes], list[CommitRecord]] = {}
        for rec in records.values():
            camps.setdefault((rec.anchor_round, rec.anchor_digest), []).append(rec)
        return max(camps.values(), key=lambda c: (len(c), c[0].anchor_round, c[0].anchor_digest)) if camps else []

    def _timing_report(self) -> dict:
        """The commit record's report of our last round's phases, from which the group sets the next round's."""
        seen = self.last_phases
        if seen is None or seen.pulled == 0:
            return {}
        ms = lambda s: min(max(int(s * 1000), 1), (1 << 32) - 1)  # at least 1: 0 means "no report"
        return {"last_commit_ms": ms(seen.commit_s), "last_exchange_ms": ms(seen.exchange_s),
                "last_pulled": min(seen.pulled, (1 << 16) - 1)}

    def _observe(self, st: _Round, timing: RoundTiming, records: dict[str, CommitRecord], kept: list[str],
                 commit_need: float, check_seconds: float, agree_end: float, finished: bool) -> None:
        """Remember this round's phases (reported in our next record) and its agreed kept records (next timing)."""
        exchange = st.gathered_at - st.deadline if st.gathered_at is not None else check_seconds + 0.1
        self.last_phases = PhaseObservation(round=st.round, timing=timing, commit_s=commit_need, exchange_s=exchange,
                                            pulled=st.pulled, late_s=max(get_dht_time() - agree_end, 0.0))
        self._kept_records = (st.round, [records[p] for p in kept]) if finished else None

    def _domain(self) -> dict:
        """The record's evidence fields: the wallet that signs our parts' leaves and where that counts."""
        if self.wallet is None:
            return {}
        d = self.wallet.domain
        return {"wallet": self.wallet.address, "chain_id": d.chain_id, "escrow": d.escrow,
                "chain_experiment": d.experiment_id}

    def _admit(self, r: int, records: dict[str, CommitRecord]) -> tuple[list[str], dict[str, str], tuple]:
        """The peers whose records can enter this round (sorted), those refused at once and why, the anchor used."""
        dropped: dict[str, str] = {}
        camps: dict[tuple[int, bytes], int] = {}
        for rec in records.values():
            camps[(rec.anchor_round, rec.anchor_digest)] = camps.get((rec.anchor_round, rec.anchor_digest), 0) + 1
        mine = (self.anchor_round, state_digest(self.anchor, self.anchor_round, self.outer))
        # the anchor most peers hold; ties go to the later anchor round (a fresh joiner yields to a veteran)
        best = max(camps, key=lambda c: (camps[c], c[0], c[1])) if camps else mine
        for p, rec in records.items():
            if (rec.anchor_round, rec.anchor_digest) != best:
                dropped[p] = f"stale anchor (round {rec.anchor_round}; the group's is round {best[0]})"
            elif self.norm_bound_sq is not None and rec.norm_sq > self.norm_bound_sq:
                dropped[p] = "norm above the experiment's bound"
            elif rec.norm_sq > 0 and rec.root in self._past_roots.get(p, {}).values():  # Δ = 0 repeats honestly
                dropped[p] = "replayed an earlier round's commitment"
        in_camp = [rec.norm_sq for p, rec in records.items() if p not in dropped]
        if self.norm_factor is not None and len(in_camp) >= 3:
            limit = statistics.median(in_camp) * self.norm_factor**2
            for p, rec in records.items():
                if p not in dropped and rec.norm_sq > limit:
                    dropped[p] = f"norm above {self.norm_factor:g}x the group's median"
        return sorted(records), dropped, best

    def _update_of(self, st: _Round, peer: str) -> QuantizedUpdate:
        if peer == self.peer_id:
            assert st.commitment is not None
            return st.commitment.update
        rec = st.records[peer]
        layout = PartLayout(self.params, rec.numel, self.part_chunks)
        parts = [st.held[(peer, i)] for i in range(layout.num_parts)]
        values = np.frombuffer(b"".join(p.values for p in parts), dtype=np.int8).copy()
        scales = np.frombuffer(b"".join(p.scales for p in parts), dtype="<u4").astype(np.int64)
        return QuantizedUpdate(torch.from_numpy(values), torch.from_numpy(scales), rec.numel, (rec.numel,),
                               self.params.block)

    def _apply(self, r: int, snapshot: torch.Tensor, avg: torch.Tensor, best: tuple[int, bytes]) -> bool:
        """Move the anchor by the outer step and the live parameters with it (local steps since the snapshot kept)."""
        mine = (self.anchor_round, state_digest(self.anchor, self.anchor_round, self.outer))
        holders = [p for p, rec in self._rounds[r].records.items() if (rec.anchor_round, rec.anchor_digest) == best]
        if mine != best and not self._download_state(best[1], sources=holders, set_params=False):
            logger.warning("stage %d round %d: my anchor is not the group's and no peer sent it; resync later",
                           self.stage, r)
            return False
        new_anchor = self.outer.step(self.anchor, avg)
        with self.lock, torch.no_grad():
            live = flat_parameters(self.module)
            load_flat_parameters(self.module, new_anchor + (live - snapshot))
        self.anchor, self.anchor_round = new_anchor, r
        self._remember_state()
        return True

    # ------------------------------------------------------------------------------------------ exchange (loop)

    async def _exchange(self, st: _Round, candidates: list[str], dropped: dict[str, str], exchange_end: float,
                        agree_end: float) -> None:
        me = self.peer_id
        missing = {(p, i) for p in candidates if p != me and p not in dropped
                   for i in range(PartLayout(self.params, st.records[p].numel, self.part_chunks).num_parts)}
        st.pulled = len({p for p, _ in missing})
        await self._gather(st, candidates, dropped, missing, exchange_end)
        if not missing:
            st.gathered_at = get_dht_time()
        # Every honest peer's exchange-phase accusations are made by the exchange deadline, so list them only
        # then (plus a grace for skew and in-flight checks): a peer that held everything early and listed at
        # once would miss an accusation of a sender that lied to another peer only, and keep what they drop.
        # A part that fails after the deadline no longer drops its sender (not every peer could hear of it in
        # time): it is still evidence for the chain (_hand_on).
        await asyncio.sleep(max(0.0, exchange_end + min(1.0, 0.25 * (agree_end - exchange_end)) - get_dht_time()))
        st.closed = True
        others = [p for p in candidates if p != me]
        pulled = await asyncio.gather(*(self._call(p, "accuse", {"round": st.round, "list": True})
                                        for p in others), return_exceptions=True)
        for reply in pulled:
            if isinstance(reply, dict):
                with self._guard:
                    st.incoming.extend(b for b in reply.get("accusations", []) if isinstance(b, bytes))
        await self._gather(st, candidates, dropped, missing, agree_end - 0.3)
        if not missing and st.gathered_at is None:
            st.gathered_at = get_dht_time()
        with self._guard:
            incoming, st.incoming = list(st.incoming), []
        for data in incoming:
            try:
                acc = Accusation.from_bytes(data)
            except PartError:
                continue
            known = st.records.get(acc.accused)
            if acc.accused in dropped or known is None or acc.round != st.round:
                continue
            if accusation_holds(acc, known, self.params, self.part_chunks):
                dropped[acc.accused] = f"accused by {acc.accuser[-6:]}: {acc.reason}"
                st.accusations.setdefault(acc.accused, acc)
                self._hand_on(acc)  # our watcher can slash from it too (if its accuser cannot: crashed, unpaid)
        for p, i in sorted(missing):
            dropped.setdefault(p, f"withheld: no peer could send its part {i}")

    async def _gather(self, st: _Round, candidates: list[str], dropped: dict[str, str],
                      missing: set[tuple[str, int]], until: float) -> None:
        """Fetch and check missing parts (owner first, then any peer that verified them) until `until`."""
        attempt = 0
        while get_dht_time() < until:
            for key in [k for k in missing if k[0] in dropped]:
                missing.discard(key)
            if not missing:
                return
            sem = asyncio.Semaphore(8)

            async def one(owner: str, index: int, source: str, sem: asyncio.Semaphore = sem) -> None:
                async with sem:
                    await self._fetch_one(st, owner, index, source, candidates, dropped, missing)

            tasks = []
            for owner, index in sorted(missing):
                relays = [p for p in candidates if p not in (owner, self.peer_id)]
                sources = [owner, *relays]
                tasks.append(one(owner, index, sources[attempt % len(sources)]))
            await asyncio.gather(*tasks, return_exceptions=True)
            attempt += 1
            if missing:
                await asyncio.sleep(min(RETRY_PAUSE, max(until - get_dht_time(), 0)))

    async def _fetch_one(self, st: _Round, owner: str, index: int, source: str, candidates: list[str],
                         dropped: dict[str, str], missing: set[tuple[str, int]]) -> None:
        reply = await self._call(source, "part", {"round": st.round, "owner": owner, "index": index})
        if not isinstance(reply, dict) or not isinstance(reply.get("part"), bytes):
            return
        try:
            part = Part.from_bytes(reply["part"])
        except PartError:
            return
        record = st.records[owner]
        if (part.owner, part.index) != (owner, index) or not part_signed_by(record, part):
            return  # not the owner's signed part: noise, not evidence; try another source
        loop = asyncio.get_running_loop()
        reason = await loop.run_in_executor(self._verify_pool, check_part, record, part, self.params,
                                            self.part_chunks)
        self._wire[1] += len(reply["part"])
        if reason is None:
            with self._guard:
                st.held[(owner, index)] = part
            missing.discard((owner, index))
            return
        if owner in dropped:
            return
        layout = PartLayout(self.params, record.numel, self.part_chunks)
        acc = Accusation(accuser=self.peer_id, accused=owner, round=st.round, stage=self.stage,
                         chunk=layout.chunks(index).start, reason=reason, record=record.to_wire(), part=reply["part"])
        if st.closed:  # too late to drop it on every peer: evidence only (try another source for the data)
            if owner in st.late:
                return
            st.late.add(owner)
            logger.warning("stage %d round %d: peer %s sent a part that fails its commitment after the exchange "
                           "deadline: %s (evidence kept; not dropped this round)", self.stage, st.round, owner, reason)
            self._hand_on(acc)
            return
        dropped[owner] = f"caught: {reason} (part {index})"
        with self._guard:
            st.accusations[owner] = acc
        logger.warning("stage %d round %d: peer %s sent a part that fails its commitment: %s", self.stage,
                       st.round, owner, reason)
        self._hand_on(acc)
        body = {"round": st.round, "accusation": acc.to_bytes()}
        await asyncio.gather(*(self._call(p, "accuse", body) for p in candidates if p not in (self.peer_id, owner)),
                             return_exceptions=True)

    def _hand_on(self, acc: Accusation) -> None:
        """Give an accusation that holds (ours, or another peer's we checked) to the evidence sinks."""
        try:
            self.on_accusation(acc)
        except Exception:
            logger.exception("publishing an accusation failed")

    async def _call(self, peer: str, kind: str, body: dict, timeout: float = CALL_TIMEOUT) -> dict | None:
        assert self._client is not None
        request = runtime_pb2.ExpertRequest(uid=kind, metadata=msgpack.packb(body, use_bin_type=True))
        try:
            response = await asyncio.wait_for(self._client.p2p.call_protobuf_handler(
                PeerID.from_base58(peer), f"{self.prefix}.{kind}", request, runtime_pb2.ExpertResponse), timeout)
            reply = msgpack.unpackb(response.metadata, raw=False)
        except Exception as exc:  # noqa: BLE001 - a dead, slow or lying peer: the caller tries elsewhere
            logger.debug("%s call to %s failed: %r", kind, peer, exc)
            return None
        return reply if isinstance(reply, dict) else None

    # ------------------------------------------------------------------------------------------ handlers

    def _reply(self, body: dict) -> runtime_pb2.ExpertResponse:
        data = msgpack.packb(body, use_bin_type=True)
        self._wire[0] += len(data)
        return runtime_pb2.ExpertResponse(metadata=data)

    @staticmethod
    def _request(request: runtime_pb2.ExpertRequest) -> dict:
        try:
            body = msgpack.unpackb(request.metadata, raw=False)
        except Exception:  # noqa: BLE001 - garbage from a peer
            return {}
        return body if isinstance(body, dict) else {}

    async def _serve_part(self, request: runtime_pb2.ExpertRequest, context: P2PContext) -> runtime_pb2.ExpertResponse:
        body = self._request(request)
        r, owner, index = body.get("round"), body.get("owner"), body.get("index")
        with self._guard:
            st = self._rounds.get(r) if isinstance(r, int) else None
            if st is None:
                return self._reply({"error": "unknown round"})
            if get_dht_time() < st.deadline:
                return self._reply({"error": "before the commit deadline"})
            if owner == self.peer_id:  # "withhold" (a free rider): commits and proves, never sends its parts
                ok = isinstance(index, int) and 0 <= index < len(st.parts) and self.attack != "withhold"
                part = st.parts[index] if ok else None
                if ok and st.bad_parts:  # "split": the first peer that asks gets data off the root, the rest not
                    st.victim = st.victim or context.remote_id.to_base58()
                    if context.remote_id.to_base58() == st.victim:
                        part = st.bad_parts[index]
            else:
                part = st.held.get((owner, index)) if isinstance(owner, str) and isinstance(index, int) else None
        if part is None:
            return self._reply({"error": "not held"})
        if st.bad_parts and part is st.bad_parts[index]:
            await asyncio.sleep(SPLIT_DELAY)  # late, so the others may hold everything before the victim objects
        return self._reply({"part": part.to_bytes()})

    async def _serve_accuse(self, request: runtime_pb2.ExpertRequest, context: P2PContext) -> runtime_pb2.ExpertResponse:
        body = self._request(request)
        r = body.get("round")
        with self._guard:
            st = self._rounds.get(r) if isinstance(r, int) else None
            if st is None:
                return self._reply({"error": "unknown round"})
            if body.get("list"):
                return self._reply({"accusations": [a.to_bytes() for a in st.accusations.values()]})
            if isinstance(body.get("accusation"), bytes) and len(st.incoming) < 1024:
                st.incoming.append(body["accusation"])
        return self._reply({"ok": True})

    async def _serve_state(self, request: runtime_pb2.ExpertRequest, context: P2PContext) -> runtime_pb2.ExpertResponse:
        body = self._request(request)
        digest, piece = body.get("digest"), body.get("piece", 0)
        with self._guard:
            if digest is None and self._state_blobs:
                digest = next(reversed(self._state_blobs))
            blob = self._state_blobs.get(digest)
        if blob is None or not isinstance(piece, int) or piece < 0:
            return self._reply({"error": "no such state"})
        pieces = max(1, -(-len(blob) // STATE_PIECE))
        return self._reply({"digest": digest, "pieces": pieces, "data": blob[piece * STATE_PIECE:(piece + 1) * STATE_PIECE]})

    # ------------------------------------------------------------------------------------------ state sync

    def _remember_state(self) -> None:
        digest = state_digest(self.anchor, self.anchor_round, self.outer)
        header = msgpack.packb({"anchor_round": self.anchor_round, "numel": self.anchor.numel(),
                                "momentum": self.outer.state().numel()}, use_bin_type=True)
        blob = len(header).to_bytes(4, "big") + header + self.anchor.numpy().tobytes() + \
            self.outer.state().contiguous().numpy().tobytes()
        with self._guard:
            self._state_blobs[digest] = blob
            while len(self._state_blobs) > 2:
                del self._state_blobs[next(iter(self._state_blobs))]

    def _download_state(self, digest: bytes | None, sources, timeout: float = 30.0, set_params: bool = True) -> bool:
        """Load the anchor (and momentum) from a peer: the one with `digest` (checked), or its newest if None;
        `set_params`: the parameters become that anchor too (joining; a round's resync moves them itself)."""
        assert self._client is not None
        for peer in [p for p in sources if p != self.peer_id]:
            try:
                blob, got = self._client.run(self._fetch_state(peer, digest), timeout)
            except Exception as exc:  # noqa: BLE001 - try the next peer
                logger.info("state download from %s failed: %r", peer, exc)
                continue
            if blob is not None and got is not None and self._load_state(blob, digest or got, set_params):
                return True
        return False

    async def _fetch_state(self, peer: str, digest: bytes | None) -> tuple[bytes | None, bytes | None]:
        chunks, pieces, piece = [], 1, 0
        while piece < pieces:
            reply = await self._call(peer, "state", {"digest": digest, "piece": piece}, timeout=CALL_TIMEOUT * 4)
            if not reply or not isinstance(reply.get("data"), bytes):
                return None, None
            digest, pieces = reply["digest"], int(reply["pieces"])
            chunks.append(reply["data"])
            piece += 1
        return b"".join(chunks), digest

    def _load_state(self, blob: bytes, digest: bytes, set_params: bool = True) -> bool:
        try:
            n = int.from_bytes(blob[:4], "big")
            header = msgpack.unpackb(blob[4 : 4 + n], raw=False)
            numel, mom = int(header["numel"]), int(header["momentum"])
            anchor_round = int(header["anchor_round"])
            body = np.frombuffer(blob[4 + n :], dtype=np.float32)
        except Exception:  # noqa: BLE001 - a peer's garbage
            return False
        if numel != self.anchor.numel() or body.size != numel + mom or mom not in (0, numel):
            return False
        anchor = torch.from_numpy(body[:numel].copy())
        outer = OuterOptimizer(self.outer.name, self.outer.lr, self.outer.momentum_factor)
        outer.load_state(torch.from_numpy(body[numel:].copy()))
        if state_digest(anchor, anchor_round, outer) != digest:
            logger.warning("stage %d: a peer sent a state that does not match its digest; ignoring it", self.stage)
            return False
        if set_params:
            with self.lock, torch.no_grad():
                load_flat_parameters(self.module, anchor)
        self.anchor, self.anchor_round, self.outer = anchor, anchor_round, outer
        self._remember_state()
        return True

    def restore(self, anchor: torch.Tensor, momentum: torch.Tensor | None = None, anchor_round: int = -1) -> None:
        """Start from a saved anchor and outer momentum (a checkpoint) instead of the parameters we were built with;
        served to joining peers and compared with the group's like a downloaded one. The parameters are not set."""
        if anchor.numel() != self.anchor.numel():
            raise ValueError(f"the saved anchor has {anchor.numel()} values, this stage {self.anchor.numel()}")
        if momentum is not None and momentum.numel() not in (0, anchor.numel()):
            raise ValueError(f"the saved outer momentum has {momentum.numel()} values, the anchor {anchor.numel()}")
        outer = OuterOptimizer(self.outer.name, self.outer.lr, self.outer.momentum_factor)
        if momentum is not None and self.outer.name == "nesterov":
            outer.load_state(momentum.reshape(-1).float())
        self.anchor, self.anchor_round, self.outer = anchor.reshape(-1).float().clone(), anchor_round, outer
        self._remember_state()
        self._announce()

    def load_state_from_peers(self, timeout: float = 30.0) -> bool:
        """Download the stage's newest anchor from a peer (joining); checked against the group in the next round."""
        present = self._present_peers()
        sources = sorted((p for p in present if p != self.peer_id), key=lambda p: -present[p])
        if not sources or not self._download_state(None, sources, timeout):
            return False
        self.last_round = self.anchor_round if self.anchor_round >= 0 else None
        self._announce()
        logger.info("stage %d: downloaded the anchor of round %d from a peer", self.stage, self.anchor_round)
        return True


def attacked_update(delta: torch.Tensor, attack: Attack | None, norm_factor: float | None) -> torch.Tensor:
    """The update a cheater commits: "norm" far above any bound, "scale" against the honest direction within it,
    "noise" a fresh random direction with the honest update's norm (a free rider that does no useful work)."""
    factor = norm_factor or DEFAULT_NORM_FACTOR
    if attack == "noise":
        noise = torch.randn(delta.shape, generator=torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "big")))
        return noise * (delta.norm() / noise.norm()) if bool(delta.any()) else delta
    if attack == "norm":
        return delta * 100.0 * factor  # caught by the norm check, from the record alone
    if attack == "scale":
        return -0.9 * factor * delta  # well-formed and within the bound: only robust aggregation limits it
    return delta


def corrupt_part(part: Part, key, attack: Attack | None, wallet: WalletSigner | None = None,
                 layout: PartLayout | None = None) -> Part:
    """The part a cheater sends instead of the committed one ("poison": scales x1000; "random": random codes).
    A paid cheater's wallet signs the leaves of the data it sends (with the committed path): that signed part is
    the on-chain evidence that gets it slashed (SwarmEscrow.slashMismatch)."""
    if attack == "poison":  # the same codes, scales x1000: a x1000 update under an honest root
        scales = np.frombuffer(part.scales, dtype="<u4").astype(np.uint64) * 1000
        part = part.model_copy(update={"scales": np.minimum(scales, 2**32 - 1).astype("<u4").tobytes()})
    elif attack == "random":
        noise = np.random.default_rng(part.index).integers(-127, 128, size=len(part.values)).astype(np.int8)
        part = part.model_copy(update={"values": noise.tobytes()})
    else:
        return part
    if wallet is not None and layout is not None:
        values = np.frombuffer(part.values, dtype=np.int8)
        scales = np.frombuffer(part.scales, dtype="<u4").astype(np.int64).tolist()
        part = part.wallet_signed(wallet, data_leaves(values, scales, layout, part.index), layout.part_chunks)
    return part.signed(key)


def _sleep_until(t: float, stop: threading.Event) -> None:
    delay = t - get_dht_time()
    if delay > 0:
        stop.wait(delay)


def commitment_of(report: object, params: CircuitParams) -> Commitment:
    """The commitment a round's settlement proves: the one the group checked and averaged (`report.commitment`).

    Only a round that committed nothing (checks off, `--no-verify`) has its Δ quantized and committed here. A
    verified round that committed nothing in time raises ValueError: there is nothing honest to prove."""
    commitment = getattr(report, "commitment", None)
    if commitment is not None:
        if commitment.params != params:
            raise ValueError(f"round {getattr(report, 'round', '?')} was committed for circuit {commitment.params} "
                             f"but the settler proves {params}: give both the same CircuitParams")
        if commitment.norm_sq == 0:  # the escrow refuses it (NormBelowMinimum): do not spend a proof on it
            raise ValueError(f"round {getattr(report, 'round', '?')}: the update is zero (the stage did not train "
                             "in this round), nothing to prove")
        return commitment
    if getattr(getattr(report, "result", None), "verified", False):
        raise ValueError(f"round {getattr(report, 'round', '?')}: this peer committed nothing in time, so there is "
                         "nothing to prove")
    return commit_update(quantize_update(report.delta, block_size=params.block), params)
