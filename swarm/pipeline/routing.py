"""Route a trainer's micro-batches: per stage, pick a peer from the DHT's stage records and call it over P2P.

Peers are drawn at random, weighted by announced throughput / (1 + load). Every outcome of a call, the status a
peer answered or the exception the call raised, goes through one `classify`: a bad input is the caller's error
(`RequestRejected`, no retry), a busy peer is skipped, a failing or vanished peer is banned for a while, and both
are retried on another peer of the same stage.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import hivemind
import torch
from hivemind.p2p import PeerID
from hivemind.proto import runtime_pb2

from runtime.loops import StartStop
from swarm.errors import SwarmError
from swarm.network.p2p import P2PClient
from swarm.network.records import StageAnnouncement, fetch_stage_announcements
from swarm.pipeline import wire
from swarm.pipeline.serving import CALL_TIMEOUT, handler_name
from swarm.pipeline.wire import Status

logger = logging.getLogger(__name__)

UNMEASURED_THROUGHPUT = (
    1.0  # weight of a peer that has not measured its throughput yet (relative to its stage)
)
LATENCY_EMA = 0.8  # weight of the past in the per-(stage, kind) latency estimate
TIMEOUT_FACTOR = 10.0  # a call may take this many times the usual latency before the peer counts as gone


class RoutingError(SwarmError):
    """No peer of a stage could serve a call (none announced, or all that were tried failed)."""


class RequestRejected(RoutingError):
    """The input is invalid (cannot be sent, or a peer found it does not fit the stage): retrying won't help."""


class Verdict(Enum):
    ACCEPT = "accept"
    REJECT = "reject"  # the input is invalid: raise RequestRejected, no ban, no retry
    RETRY = "retry"  # try another peer, no ban (busy)
    RESEND = "resend"  # ask the same peer again with the full input (it no longer keeps the activations)
    BAN = "ban"  # the peer failed: ban it and try another


_VERDICTS = {
    Status.OK: Verdict.ACCEPT,
    Status.REJECTED: Verdict.REJECT,
    Status.BUSY: Verdict.RETRY,
    Status.MISSING: Verdict.RESEND,
    Status.WRONG_STAGE: Verdict.BAN,  # it serves another stage now; its new record will replace the old one
    Status.ERROR: Verdict.BAN,
}


@dataclass
class CallStats:
    """Where the time of one kind of call (stage, forward|backward) went, summed over its successful calls."""

    calls: int = 0
    seconds: float = 0.0  # from sending the request to having the response (trainer side)
    queue: float = 0.0  # waiting for the peer's compute thread
    compute: float = 0.0  # the peer's forward/backward (wall time)
    compute_cpu: float = 0.0  # CPU time of that compute (less than `compute` when the peer waited for a core)
    peer_codec: float = 0.0  # the peer decoding the request and encoding the response
    local_codec: float = 0.0  # this trainer encoding the request and decoding the response
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def transport(self) -> float:
        """What is left of the round trip: p2pd, loopback/network, protobuf framing, event loops."""
        return self.seconds - self.queue - self.compute - self.peer_codec


def classify(outcome: Status | BaseException) -> Verdict:
    """What the router does after a call: by the status the peer answered, or by the exception the call raised
    (timeout, connection lost, handler missing, an unreadable response: all the peer's fault)."""
    if isinstance(outcome, BaseException):
        return Verdict.BAN
    return _VERDICTS[outcome]


def peer_weight(ann: StageAnnouncement, fallback_throughput: float, extra_load: int = 0) -> float:
    """Throughput / (1 + load): announced load plus the calls this router has in flight to that peer."""
    throughput = ann.throughput if ann.throughput > 0 else fallback_throughput
    return throughput / (1.0 + max(ann.load, 0) + extra_load)


def choose_peer(
    candidates: Sequence[StageAnnouncement],
    rng: random.Random,
    *,
    exclude: set[str] | frozenset[str] = frozenset(),
    in_flight: Mapping[str, int] | None = None,
) -> StageAnnouncement | None:
    """Draw one peer with probability proportional to `peer_weight`; None when every candidate is excluded."""
    pool = [a for a in candidates if a.peer_id not in exclude]
    if not pool:
        return None
    measured = [a.throughput for a in pool if a.throughput > 0]
    fallback = sum(measured) / len(measured) if measured else UNMEASURED_THROUGHPUT
    in_flight = in_flight or {}
    weights = [peer_weight(a, fallback, in_flight.get(a.peer_id, 0)) for a in pool]
    return rng.choices(pool, weights=weights, k=1)[0]


class StageRouter(StartStop):
    """Calls forward/backward of stage `s` on some peer serving it; thread-safe, one p2pd client of its own."""

    def __init__(
        self,
        dht: hivemind.DHT,
        experiment: str,
        n_stages: int,
        *,
        timeout: float = CALL_TIMEOUT,
        min_timeout: float = 5.0,
        max_attempts: int = 4,
        refresh_period: float = 3.0,
        ban_seconds: float = 20.0,
        wait_for_peers: float = 15.0,
        seed: int | None = None,
        codec: str = "int8",
        keep_activations: bool = True,
        loss_at_last_stage: bool = True,
    ) -> None:
        if codec not in wire.CODECS:
            raise ValueError(f"unknown codec {codec!r}: use one of {wire.CODECS}")
        self.dht, self.experiment, self.n_stages = dht, experiment, n_stages
        self.codec, self.keep_activations, self.loss_at_last_stage = (
            codec,
            keep_activations,
            loss_at_last_stage,
        )
        self.timeout, self.min_timeout, self.max_attempts = timeout, min_timeout, max_attempts
        self._latency: dict[tuple[int, str], float] = {}
        self.stats: dict[tuple[int, str], CallStats] = {}
        self.refresh_period, self.ban_seconds, self.wait_for_peers = (
            refresh_period,
            ban_seconds,
            wait_for_peers,
        )
        self.rng = random.Random(seed)
        self.retries = self.calls = self.bytes_sent = self.bytes_received = 0
        self._announcements: dict[int, list[StageAnnouncement]] = {}
        self._fetched_at = -float("inf")
        self._banned: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._client: P2PClient | None = None

    def start(self) -> None:
        if self._client is None:
            self._client = P2PClient(self.dht, "stage-router", self.timeout)

    def shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- choosing peers ---------------------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> dict[int, list[StageAnnouncement]]:
        """Re-read the stage records from the DHT if the cached ones are older than `refresh_period`."""
        with self._refresh_lock:
            if force or time.monotonic() - self._fetched_at > self.refresh_period:
                fetched = self._fetch()
                with self._lock:
                    self._announcements, self._fetched_at = fetched, time.monotonic()
            return self._announcements

    def peers(self, stage: int) -> list[StageAnnouncement]:
        """The peers currently announced for `stage` (not counting banned ones)."""
        self._check_stage(stage)
        announcements = self.refresh().get(stage, [])
        now = time.monotonic()
        return [a for a in announcements if self._banned.get(a.peer_id, 0.0) <= now]

    def ban(self, peer_id: str) -> None:
        """Avoid `peer_id` for `ban_seconds` (it failed a call)."""
        with self._lock:
            self._banned[peer_id] = time.monotonic() + self.ban_seconds

    # --- calls ------------------------------------------------------------------------------------------------

    def forward(self, stage: int, x: torch.Tensor, *, mb: str | None = None) -> tuple[torch.Tensor, str]:
        """Output of stage `stage` for input `x`, and the peer that computed it. With `mb` (a micro-batch key) and
        `keep_activations`, the peer keeps the activations so that `backward(..., mb=mb)` need not resend `x`."""
        keep = mb is not None and self.keep_activations
        (y,), peer = self._call(stage, "forward", [x], n_out=1, meta={"mb": mb, "keep": True} if keep else {})
        return y, peer

    def forward_loss(
        self, stage: int, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[float, torch.Tensor | None]:
        """The last stage's whole step in one call: it computes the loss against `target`, backpropagates and
        steps; returns (loss, gradient w.r.t. `x` or None for token inputs)."""
        out, _ = self._call(stage, "forward", [x, target], n_out=None, meta={"loss": True})
        if not out or out[0].numel() != 1:
            raise RoutingError(f"stage {stage} answered a forward-with-loss without a loss")
        return float(out[0]), (out[1] if len(out) > 1 else None)

    def backward(
        self, stage: int, x: torch.Tensor, grad_output: torch.Tensor, *, prefer: str | None = None,
        mb: str | None = None,
    ) -> torch.Tensor | None:  # fmt: skip
        """Gradient w.r.t. the stage's input (None for integer inputs); the serving peer takes an optimizer step.

        `prefer` (the peer that ran the forward) is tried first, with the gradient only if it kept micro-batch
        `mb`'s activations (and with `x` again if it answers that it no longer has them); if it fails, another
        peer of the stage answers from `x`."""
        slim = [grad_output] if mb is not None and prefer is not None and self.keep_activations else None
        out, _ = self._call(
            stage,
            "backward",
            [x, grad_output],
            n_out=None,
            prefer=prefer,
            slim=slim,
            meta={"mb": mb} if slim else {},
        )
        return out[0] if out else None

    def _call(
        self,
        stage: int,
        kind: str,
        tensors: list[torch.Tensor],
        *,
        n_out: int | None,
        prefer: str | None = None,
        slim: list[torch.Tensor] | None = None,
        meta: dict | None = None,
    ) -> tuple[list[torch.Tensor], str]:
        """Call `kind` of `stage` on some peer; `slim` is the shorter request the `prefer`red peer may take."""
        self._check_stage(stage)
        name = handler_name(self.experiment, stage, kind)
        meta = {"codec": self.codec, **(meta or {})}
        encode_started = time.perf_counter()
        try:
            full = wire.pack(runtime_pb2.ExpertRequest, tensors, uid=name, codec=self.codec, meta=meta)
            short = (
                None
                if slim is None
                else wire.pack(runtime_pb2.ExpertRequest, slim, uid=name, codec=self.codec, meta=meta)
            )
        except wire.WireError as exc:
            raise RequestRejected(f"stage {stage} {kind}: {exc}") from exc
        encoding = time.perf_counter() - encode_started
        tried: set[str] = set()
        errors: list[str] = []
        deadline = time.monotonic() + self.wait_for_peers
        while len(tried) < self.max_attempts:
            peer = self._pick(stage, tried, prefer)
            if peer is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
                self.refresh(force=True)
                continue
            tried.add(peer)
            request = short if short is not None and peer == prefer else full
            outcome, outputs, detail = self._attempt(peer, name, request, stage, kind, n_out)
            verdict = classify(outcome)
            if verdict is Verdict.ACCEPT:
                with self._lock:
                    self.stats[(stage, kind)].local_codec += encoding
                return outputs, peer
            if verdict is Verdict.REJECT:
                raise RequestRejected(f"stage {stage} {kind} rejected the input: {detail}")
            if verdict is Verdict.RESEND and request is short:
                short = None
                tried.discard(peer)
                continue
            if verdict is not Verdict.RETRY:
                self.ban(peer)
            with self._lock:
                self.retries += 1
            errors.append(f"{peer[:12]}…: {detail}")
            logger.info("stage %d %s failed on %s (%s); retrying elsewhere", stage, kind, peer, detail)
        detail = "; ".join(errors) if errors else "no peer announced it"
        raise RoutingError(
            f"no peer could serve stage {stage} {kind} of experiment {self.experiment!r} ({detail}). "
            "Check that stage peers are running and reachable."
        )

    def _attempt(
        self,
        peer: str,
        name: str,
        request: runtime_pb2.ExpertRequest,
        stage: int,
        kind: str,
        n_out: int | None,
    ) -> tuple[Status | BaseException, list[torch.Tensor], str]:
        """One call to one peer: (the status or the exception, the outputs if OK, a description)."""
        try:
            response, seconds = self._send_counted(
                peer, name, request, self.call_timeout(stage, kind), (stage, kind)
            )
        except Exception as exc:  # noqa: BLE001 - every transport failure is classified, none is fatal here
            return exc, [], _describe(exc)
        status, detail = wire.response_status(response)
        if status is not Status.OK:
            return status, [], f"{status}: {detail}"
        decode_started = time.perf_counter()
        try:
            outputs = wire.unpack(response, n_out, f"the response of {name}")
        except wire.WireError as exc:
            return exc, [], str(exc)
        self._count(stage, kind, request, response, seconds, time.perf_counter() - decode_started)
        return status, outputs, ""

    def _count(self, stage: int, kind: str, request, response, seconds: float, decoding: float) -> None:
        meta = wire.metadata(response)
        with self._lock:
            st = self.stats.setdefault((stage, kind), CallStats())
            st.calls += 1
            st.seconds += seconds
            st.queue += float(meta.get("queue_s", 0.0))
            st.compute += float(meta.get("compute_s", 0.0))
            st.compute_cpu += float(meta.get("cpu_s", meta.get("compute_s", 0.0)))
            st.peer_codec += float(meta.get("codec_s", 0.0))
            st.local_codec += decoding
            st.bytes_sent += request.ByteSize()
            st.bytes_received += response.ByteSize()

    def _pick(self, stage: int, tried: set[str], prefer: str | None) -> str | None:
        candidates = self.peers(stage)
        if prefer is not None and prefer not in tried and any(a.peer_id == prefer for a in candidates):
            return prefer
        with self._lock:
            chosen = choose_peer(candidates, self.rng, exclude=tried, in_flight=dict(self._in_flight))
            if chosen is None:  # only banned peers left: a ban is a preference, give them another chance
                chosen = choose_peer(self._announcements.get(stage, []), self.rng, exclude=tried)
        return None if chosen is None else chosen.peer_id

    def call_timeout(self, stage: int, kind: str) -> float:
        """`TIMEOUT_FACTOR` x the usual latency of such calls, within [min_timeout, timeout]; `timeout` until
        measured. So a peer that stops answering (frozen, partitioned) costs seconds, not the full timeout."""
        usual = self._latency.get((stage, kind))
        if usual is None:
            return self.timeout
        return min(self.timeout, max(self.min_timeout, TIMEOUT_FACTOR * usual))

    def _send_counted(
        self, peer: str, name: str, request: runtime_pb2.ExpertRequest, timeout: float, key: tuple[int, str]
    ) -> tuple[runtime_pb2.ExpertResponse, float]:
        with self._lock:
            self._in_flight[peer] = self._in_flight.get(peer, 0) + 1
        started = time.monotonic()
        try:
            response = self._send(peer, name, request, timeout)
        finally:
            with self._lock:
                self._in_flight[peer] -= 1
        seconds = time.monotonic() - started
        with self._lock:  # counters are shared by the trainer's micro-batch threads
            old = self._latency.get(key)
            self._latency[key] = seconds if old is None else LATENCY_EMA * old + (1 - LATENCY_EMA) * seconds
            self.calls += 1
            self.bytes_sent += request.ByteSize()
            self.bytes_received += response.ByteSize()
        return response, seconds

    # --- the two points that touch the network (tests may override them) -------------------------------------

    def _fetch(self) -> dict[int, list[StageAnnouncement]]:
        return fetch_stage_announcements(self.dht, self.experiment)

    def _send(
        self, peer: str, name: str, request: runtime_pb2.ExpertRequest, timeout: float
    ) -> runtime_pb2.ExpertResponse:
        client = self._client
        if client is None:
            raise RoutingError("the router is not started: call start() or use it as a context manager")
        coro = client.p2p.call_protobuf_handler(
            PeerID.from_base58(peer), name, request, runtime_pb2.ExpertResponse
        )
        return client.run(coro, timeout)

    def _check_stage(self, stage: int) -> None:
        if not 0 <= stage < self.n_stages:
            raise RoutingError(f"stage {stage} does not exist: experiment has stages 0..{self.n_stages - 1}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:300]
