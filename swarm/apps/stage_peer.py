"""The stage peer's life: pick the slowest stage, resync its parameters, serve it, average it every round, rebalance.

After each round's averaging the peer calls its round hooks with a `RoundReport` (the round's update Δ and the
averaging result): the place where commitments, proofs and on-chain contributions plug in.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import hivemind
import torch

from swarm.apps.config import ConfigError, PeerConfig
from swarm.apps.events import EventWriter, Ready, RoundDone, StageChanged, Synced
from swarm.models import Workload
from swarm.network.records import ExperimentRecord, fetch_stage_announcements, publish_experiment
from swarm.pipeline.memory import check_stage_fits
from swarm.pipeline.serving import StageServer
from swarm.pipeline.stage_choice import Announcements, choose_stage, rebalance_target
from swarm.rounds.averager import StageAverager
from swarm.rounds.clock import RoundClock
from swarm.rounds.verified import VerifiedAverager

logger = logging.getLogger(__name__)

SYNC_TIMEOUT = 30.0
REBALANCE_EVERY = 3  # rounds between two looks at the balance (each peer measures its throughput meanwhile)
REBALANCE_COOLDOWN = 6  # rounds a peer that moved stays put, so that the swarm does not oscillate
REPUBLISH_PERIOD_S = 60.0  # every peer keeps the experiment record alive, so the bootstrap peer may leave


@dataclass
class RoundReport:
    """What a stage peer did in one round: handed to every round hook after the round's averaging."""

    experiment: ExperimentRecord
    round: int
    stage: int
    peer_id: str
    wallet: str | None
    delta: torch.Tensor  # flattened fp32 update Δ of this round: parameters at the round's end - the anchor
    result: Any  # swarm.rounds.averager.RoundResult
    module: torch.nn.Module  # the stage's parameters after averaging (hold `params_lock` to read them)
    params_lock: Any
    commitment: Any = None  # zk.commit.Commitment of Δ that the group checked and averaged (verified rounds)
    averager: Any = None  # its anchor, anchor_round and outer optimizer (VerifiedAverager): what a checkpoint keeps
    optimizer: Any = None  # the stage's local optimizer (read its state under `params_lock`)



RoundHook = Callable[[RoundReport], None]


def load_hook(spec: str) -> RoundHook:
    """Import 'package.module:function' (validated by PeerConfig)."""
    module_name, _, func_name = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"round hook {spec!r} cannot be loaded: {exc}") from exc
    if not callable(hook):
        raise ValueError(f"round hook {spec!r} is not callable")  # noqa: TRY004 - a setting's value is wrong
    return hook


@contextmanager
def _sigint_kept() -> Iterator[None]:
    """Restore this process's SIGINT handler after the block (only the main thread can)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def flat_params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in module.parameters()]).clone()


class StagePeer:
    """Serves one stage of `experiment` at a time; `run(stop)` returns when `stop` is set or the duration is up."""

    def __init__(
        self,
        config: PeerConfig,
        dht: hivemind.DHT,
        experiment: ExperimentRecord,
        workload: Workload,
        events: EventWriter,
        *,
        wallet: str | None = None,
        hooks: list[RoundHook] | None = None,
    ) -> None:
        self.config, self.dht, self.experiment, self.workload = config, dht, experiment, workload
        self.events, self.wallet = events, wallet
        self.round_hooks: list[RoundHook] = list(hooks or [])
        self.evidence_sinks: list[Callable[[Any], None]] = []  # get each accusation this peer makes (gossip, chain)
        self.part_signer: Any = None  # a paid peer's WalletSigner: its wallet signs its parts' leaves (evidence)
        self.clock = RoundClock(experiment.start_time, experiment.round_duration)
        self.stage: int = -1
        self.server: StageServer | None = None
        self.averager: StageAverager | None = None
        self.rounds_done = 0
        self._published_at = -REPUBLISH_PERIOD_S
        self._moved_at_round = 0

    @property
    def name(self) -> str:
        return self.experiment.name

    def pick_stage(self, announcements: Announcements) -> int:
        """The configured stage, else the one that limits the pipeline most (SWARM-style, from DHT records)."""
        n = self.experiment.n_stages
        if self.config.stage is not None:
            if self.config.stage >= n:
                raise ConfigError(
                    f"--stage {self.config.stage} does not exist: this experiment has stages 0..{n - 1}"
                )
            return self.config.stage
        return choose_stage(announcements, n)

    def run(self, stop: threading.Event, deadline: float | None = None) -> None:
        with ExitStack() as cleanup:
            cleanup.callback(self._shutdown)
            announcements = fetch_stage_announcements(self.dht, self.name)
            stage = self.pick_stage(announcements)
            logger.info("picked stage %d of %d", stage, self.experiment.n_stages)
            self._join(stage, announcements)
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self._one_round(stop, deadline)

    def _join(self, stage: int, announcements: Announcements) -> None:
        """Build, resync and serve `stage` (the server is started after the resync, so it serves fresh parameters)."""
        module = self.workload.build_stage(self.experiment.n_stages, stage, seed=self.experiment.seed)
        plan = check_stage_fits(self.workload, self.experiment.n_stages, stage, seed=self.experiment.seed,
                                device=self.config.device, optimizer=self.config.optimizer, log=logger,
                                limit_gib=self.config.memory_limit)  # memory preflight: refuses what does not fit
        me = self.dht.peer_id.to_base58()
        serving_now = sum(1 for a in announcements.get(stage, ()) if a.peer_id != me)
        server = self.server or StageServer(
            self.dht, self.name, self.workload, stage, module, lr=self.config.lr, wallet=self.wallet,
            device=self.config.device,
            **({} if self.config.optimizer == "adam" else {"optimizer": self.config.optimizer}),
        )
        averager: StageAverager | VerifiedAverager
        if self.config.verify:
            averager = self._verified_averager(stage, module, server.params_lock)
        else:
            with _sigint_kept():  # hivemind's averager start sets SIGINT to SIG_IGN in *our* process too
                averager = StageAverager(
                    self.dht, self.name, stage, module, compression=self.config.compression, lock=server.params_lock,
                    **({} if self.config.matchmaking_time is None else {"matchmaking_time": self.config.matchmaking_time}),
                )
        logger.info("stage %d: averager started", stage)
        started = time.monotonic()
        seed_params = flat_params(module)
        synced = False
        if serving_now:
            synced = averager.load_state_from_peers(timeout=SYNC_TIMEOUT)
            if not synced:
                logger.warning("stage %d: no peer sent its parameters; starting from the seed's", stage)
        if not synced and self.config.resume_from is not None:  # nobody serves it: the checkpoint, not the seed
            from swarm.apps.experiment.checkpoint import restore_stage

            restore_stage(self.config.resume_from, stage, module=module, lock=server.params_lock, averager=averager,
                          optimizer=server.worker.optimizer if server.module is module else None, log=logger)
        moved = float((flat_params(module) - seed_params).norm())
        self.events.emit(
            Synced(
                stage=stage, from_peers=synced, seconds=time.monotonic() - started, distance_from_seed=moved
            )
        )
        server.worker.max_batch = plan.max_batch if plan is not None and plan.max_batch < 10**6 else None
        if plan is not None:  # what it keeps for backwards stays within the plan's room for micro-batches in flight
            server.worker.limit_kept(per_sample=plan.per_sample, per_micro_batch=plan.snapshot, limit=plan.in_flight_room)
        server.worker.cap_reason = "" if plan is None else f" samples with {plan.budget / 2**30:.2f} GiB usable on " \
            f"{plan.device}"
        if self.server is None:
            self.server = server
            server.start()
        else:
            server.switch_stage(stage, module)
        self.averager, self.stage = averager, stage
        server.params_version = max(0, self.clock.current_round())  # before the start: round 0's
        self.events.emit(Ready(role="stage", peer_id=server.peer_id, stage=stage))
        logger.info("serving stage %d of %s (%d other peer(s) serve it)", stage, self.name, serving_now)

    def on_accusation(self, accusation: Any) -> None:
        """A peer of our group sent a part that fails its commitment: hand the signed evidence to every sink."""
        for sink in self.evidence_sinks:
            try:
                sink(accusation)
            except Exception:  # publishing evidence must not stop the round
                logger.exception("round %d: evidence sink %r failed", accusation.round, sink)

    def _verified_averager(self, stage: int, module: torch.nn.Module, lock: Any) -> VerifiedAverager:
        c = self.config
        return VerifiedAverager(
            self.dht, self.name, stage, module, clock=self.clock, lock=lock, aggregation=c.aggregation,
            outer=c.outer_optimizer, norm_bound=c.norm_bound, attack=c.attack if c.byzantine else None,
            on_accusation=self.on_accusation, wallet=self.part_signer, min_alignment=c.min_alignment,
        )  # fmt: skip

    def _one_round(self, stop: threading.Event, deadline: float | None) -> None:
        assert self.server is not None and self.averager is not None
        if time.monotonic() - self._published_at >= REPUBLISH_PERIOD_S:
            self._published_at = time.monotonic()
            if not publish_experiment(self.dht, self.experiment):
                logger.warning("could not re-publish the experiment record; will retry")
        r = self.clock.current_round()
        if r < 0:  # the experiment starts later (a chain experiment may): nothing to average before round 0
            wait = self.clock.seconds_to_next_round()
            stop.wait(wait if deadline is None else min(wait, max(0.0, deadline - time.monotonic())))
            return
        wait = self.clock.seconds_to_next_round()
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        if stop.wait(wait) or (deadline is not None and time.monotonic() >= deadline):
            return
        result = self.averager.step(r, timeout=min(0.8 * self.experiment.round_duration, 30.0), stop=stop)
        delta = self.averager.last_delta  # the averager owns Δ: from the anchor to the parameters at the round's end
        self.server.params_version = r + 1
        self.rounds_done += 1
        self.events.emit(
            RoundDone(
                round=r, stage=self.stage, group_size=result.group_size, bytes_sent=result.bytes_sent,
                bytes_received=result.bytes_received, seconds=result.seconds, update_norm=float(delta.norm()),
                requests=self.server.requests, verified=result.verified, included=result.included,
                dropped=result.dropped, accusations=result.accusations, parts_checked=result.parts_checked,
                check_seconds=result.check_seconds,
            )
        )  # fmt: skip
        self._call_hooks(r, delta, result)
        quiet = self.rounds_done - self._moved_at_round
        may_move = self.config.rebalance and self.config.stage is None and quiet >= REBALANCE_COOLDOWN
        if may_move and self.rounds_done % REBALANCE_EVERY == 0:
            self._maybe_rebalance()

    def _call_hooks(self, r: int, delta: torch.Tensor, result: Any) -> None:
        assert self.server is not None and self.averager is not None
        report = RoundReport(
            experiment=self.experiment, round=r, stage=self.stage, peer_id=self.server.peer_id, wallet=self.wallet,
            delta=delta, result=result, module=self.server.module, params_lock=self.server.params_lock,
            commitment=self.averager.last_commitment, averager=self.averager, optimizer=self.server.worker.optimizer,
        )  # fmt: skip
        for hook in self.round_hooks:
            try:
                hook(report)
            except Exception:  # a failing hook (prover, chain) must not stop training
                logger.exception("round %d: round hook %r failed", r, hook)

    def _maybe_rebalance(self) -> None:
        assert self.server is not None
        announcements = fetch_stage_announcements(self.dht, self.name)
        target = rebalance_target(
            self.stage, announcements, self.experiment.n_stages, my_peer_id=self.server.peer_id,
            my_throughput=self.server.worker.throughput or None,
        )  # fmt: skip
        if target is None or target == self.stage:
            return
        self._moved_at_round = self.rounds_done
        old = self.stage
        logger.info("rebalancing: stage %d -> stage %d", old, target)
        assert self.averager is not None
        self.averager.shutdown()
        self.averager = None
        self._join(target, announcements)
        self.events.emit(StageChanged(old=old, new=target))

    def _shutdown(self) -> None:
        if self.averager is not None:
            self.averager.shutdown()
            self.averager = None
        if self.server is not None:
            self.server.shutdown()
            self.server = None
