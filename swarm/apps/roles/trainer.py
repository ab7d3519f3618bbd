"""The trainer role: push micro-batches through the stages until stopped, enough steps, or the duration is up."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from swarm.apps.config import PeerConfig
from swarm.apps.events import EventWriter, Left, Ready, Step

logger = logging.getLogger("swarm.peer")

TRAINER_RETRY_S = 2.0
TRAINER_PATIENCE_S = 60.0
REPORT_PERIOD_S = 5.0  # how often a trainer publishes its loss on the DHT  # a trainer gives up when some stage has had no reachable peer for this long


def run_trainer(config: PeerConfig, dht, record, workload, events: EventWriter, stop, deadline) -> None:
    from swarm.pipeline.trainer import Trainer

    seed = config.seed * 1_000_003 + (int.from_bytes(os.urandom(4), "big") % 1_000_000)  # own data order
    with Trainer(
        dht, record.name, workload, n_stages=record.n_stages, batch_size=config.batch_size, seed=seed,
        concurrency=config.concurrency,
    ) as trainer:  # fmt: skip
        events.emit(Ready(role="trainer", peer_id=dht.peer_id.to_base58()))
        if config.duration is not None:  # a trainer's duration is of training, not of starting up
            deadline = time.monotonic() + config.duration
        step_stop = threading.Event()
        started, done, samples = time.monotonic(), 0, 0  # across retries (each run() counts from 0)
        count_lock = threading.Lock()  # on_step runs in the micro-batch threads
        report = LossReporter(dht, record.name)

        def on_step(s) -> None:
            nonlocal done, samples
            with count_lock:
                done, samples = done + 1, samples + (s.size or config.batch_size)  # split to the stages' memory
                report.step(s.loss, done, samples)
            rate = samples / max(time.monotonic() - started, 1e-9)
            events.emit(Step(step=done - 1, loss=s.loss, samples=samples, samples_per_second=rate))
            enough = config.steps is not None and done >= config.steps
            if enough or stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                step_stop.set()

        train_until_stopped(trainer, on_step, step_stop)
        eval_loss = trainer.evaluate() if not stop.is_set() else None
    events.emit(Left(reason="stopped" if stop.is_set() else "done", eval_loss=eval_loss))


class LossReporter:
    """Publishes this trainer's recent loss on the DHT every REPORT_PERIOD_S (`records.TrainerReport`), so the
    experiment's monitor shows the swarm's loss, not only that of the trainers it started."""

    def __init__(self, dht, experiment: str, window: int = 20) -> None:
        self.dht, self.experiment = dht, experiment
        self.recent: deque[float] = deque(maxlen=window)
        self.published_at = -REPORT_PERIOD_S

    def step(self, loss: float, steps: int, samples: int) -> None:
        import math

        from swarm.network.records import TrainerReport, publish_trainer_report

        if math.isfinite(loss):
            self.recent.append(max(loss, 0.0))
        if not self.recent or time.monotonic() - self.published_at < REPORT_PERIOD_S:
            return
        self.published_at = time.monotonic()
        report = TrainerReport(peer_id=self.dht.peer_id.to_base58(), steps=steps, samples=samples,
                               loss=sum(self.recent) / len(self.recent), time=time.time())  # fmt: skip
        try:
            publish_trainer_report(self.dht, self.experiment, report, ttl=3 * REPORT_PERIOD_S)
        except Exception as exc:  # noqa: BLE001 -- a report is informative; training goes on without it
            logger.debug("could not publish the trainer's loss: %r", exc)


def train_until_stopped(trainer, on_step, step_stop: threading.Event, patience: float = TRAINER_PATIENCE_S) -> None:
    """Train until `step_stop`; a stage with no reachable peer for a while (churn, a peer moving) is waited out.

    After `patience` seconds without a step: JoinError (exit 3) if the trainer never made one, else LostSwarmError
    (exit 4): it had joined, and the swarm went away.
    """
    from swarm.errors import JoinError, LostSwarmError
    from swarm.pipeline.routing import RoutingError

    last_progress, progressed = time.monotonic(), False

    def on_step_progress(record) -> None:
        nonlocal last_progress, progressed
        last_progress, progressed = time.monotonic(), True
        on_step(record)

    while not step_stop.is_set():
        try:
            trainer.run(steps=10**9, on_step=on_step_progress, stop=step_stop)
            return
        except RoutingError as exc:
            idle = time.monotonic() - last_progress
            if idle > patience:
                if not progressed:
                    raise JoinError(f"{exc} (no training step in {idle:.0f} s since the trainer started)") from exc
                raise LostSwarmError(f"{exc} (no training step for {idle:.0f} s after training)") from exc
            logger.warning("%s; retrying in %.0f s", exc, TRAINER_RETRY_S)
            step_stop.wait(TRAINER_RETRY_S)
