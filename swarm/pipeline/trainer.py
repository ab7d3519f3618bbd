"""A trainer peer: runs micro-batches forward through every stage and backward through every stage.

The training loop is written once against `StagePipeline`; the swarm plugs in remote stages (`RemoteStages`,
through `StageRouter`), the single-process baseline plugs in local ones (`swarm.pipeline.baseline.LocalStages`).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Protocol

import torch
from pydantic import BaseModel

from runtime.loops import StartStop
from swarm.models import Batch, Workload

if TYPE_CHECKING:  # the baseline imports this module without the network stack
    import hivemind

    from swarm.pipeline.routing import StageRouter

logger = logging.getLogger(__name__)


class StagePipeline(Protocol):
    """Forward and backward of each stage, wherever it runs; `route` ties a backward to its forward's peer, `mb`
    names the micro-batch (a stage may keep its activations between the two)."""

    n_stages: int

    def forward(
        self, stage: int, x: torch.Tensor, mb: str | None = None
    ) -> tuple[torch.Tensor, str | None]: ...

    def backward(
        self, stage: int, x: torch.Tensor, grad_output: torch.Tensor, route: str | None, mb: str | None = None
    ) -> torch.Tensor | None: ...

    # Optional: a pipeline whose `loss_at_last_stage` is True also has
    # `forward_loss(stage, x, target, workload) -> (loss, grad w.r.t. x)`, the last stage's whole step in one call.


class RemoteStages:
    """Stages served by swarm peers, reached through a `StageRouter`."""

    def __init__(self, router: StageRouter) -> None:
        self.router, self.n_stages = router, router.n_stages

    def forward(self, stage: int, x: torch.Tensor, mb: str | None = None) -> tuple[torch.Tensor, str | None]:
        return self.router.forward(stage, x, mb=mb)

    def backward(
        self, stage: int, x: torch.Tensor, grad_output: torch.Tensor, route: str | None, mb: str | None = None
    ) -> torch.Tensor | None:
        return self.router.backward(stage, x, grad_output, prefer=route, mb=mb)

    @property
    def loss_at_last_stage(self) -> bool:
        return self.router.loss_at_last_stage

    def forward_loss(self, stage: int, x: torch.Tensor, target: torch.Tensor, workload: Workload):
        return self.router.forward_loss(stage, x, target)


_MB_PREFIX = f"{os.getpid():x}-{os.urandom(4).hex()}"
_MB_COUNTER = itertools.count()


def micro_batch_key() -> str:
    """A key for one micro-batch, unique across trainers (a stage keeps activations under it)."""
    return f"{_MB_PREFIX}-{next(_MB_COUNTER)}"


class StepRecord(BaseModel):
    step: int
    loss: float
    samples: int  # samples seen by this trainer so far, this step included
    size: int = 0  # samples of this step's micro-batch
    seconds: float  # since the run started


class TrainReport(BaseModel):
    steps: list[StepRecord]
    samples: int
    seconds: float
    samples_per_second: float
    eval_loss: float | None = None

    @property
    def final_loss(self) -> float:
        """Mean loss of the last tenth of the steps (at least one), a less noisy end point than the last step."""
        tail = self.steps[-max(1, len(self.steps) // 10) :]
        return sum(s.loss for s in tail) / len(tail)


def train_step(pipeline: StagePipeline, workload: Workload, x: torch.Tensor, y: torch.Tensor) -> float:
    """One micro-batch: forward through every stage, loss, backward through every stage (each stage steps).

    If the pipeline has `loss_at_last_stage` set, the last stage computes the loss itself from the targets and
    backpropagates in the same call (`forward_loss`): one call fewer, and its output never crosses the wire."""
    inputs, routes = [], []
    mb = micro_batch_key()
    fused = getattr(pipeline, "loss_at_last_stage", False)
    last = pipeline.n_stages - 1 if fused else pipeline.n_stages
    h = x
    for stage in range(last):
        inputs.append(h)
        h, route = pipeline.forward(stage, h, mb)
        routes.append(route)
    if fused:
        loss, grad = pipeline.forward_loss(last, h, y, workload)
    else:
        output = h.detach().requires_grad_(True)
        loss_t = workload.loss(output, y)
        loss_t.backward()
        loss, grad = float(loss_t.detach()), output.grad
    for stage in reversed(range(len(inputs))):
        grad = pipeline.backward(stage, inputs[stage], grad, routes[stage], mb)
    return float(loss)


def forward_all(pipeline: StagePipeline, x: torch.Tensor) -> torch.Tensor:
    """Inference through every stage (for evaluation)."""
    for stage in range(pipeline.n_stages):
        x, _ = pipeline.forward(stage, x)
    return x


def run_training(
    pipeline: StagePipeline,
    workload: Workload,
    batches: Iterator[Batch],
    *,
    steps: int,
    concurrency: int = 1,
    on_step: Callable[[StepRecord], None] | None = None,
    stop: threading.Event | None = None,
    history: int | None = None,
) -> TrainReport:
    """Train for `steps` micro-batches (`concurrency` of them in flight at once); stops early if `stop` is set.

    The report keeps the last `history` step records (all if None), so a trainer that runs for days stays small.
    """
    records: deque[StepRecord] = deque(maxlen=history)
    lock = threading.Lock()
    samples = n_steps = 0
    start = time.perf_counter()

    def one(batch: Batch) -> None:
        nonlocal samples, n_steps
        loss = train_step(pipeline, workload, *batch)
        with lock:
            samples += len(batch[0])
            record = StepRecord(step=n_steps, loss=loss, samples=samples, seconds=time.perf_counter() - start,
                                size=len(batch[0]))
            n_steps += 1
            records.append(record)
        if on_step is not None:
            on_step(record)

    todo = itertools.islice(batches, steps)
    if concurrency <= 1:
        for batch in todo:
            if stop is not None and stop.is_set():
                break
            one(batch)
    else:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="microbatch") as pool:
            pending = set()
            for batch in todo:
                if stop is not None and stop.is_set():
                    break
                pending.add(pool.submit(one, batch))
                if len(pending) >= concurrency:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        future.result()
            for future in pending:
                future.result()
    seconds = time.perf_counter() - start
    return TrainReport(
        steps=list(records), samples=samples, seconds=seconds, samples_per_second=samples / max(seconds, 1e-9)
    )


class Trainer(StartStop):
    """A trainer peer: draws batches of `workload` and pushes them through the swarm's stages."""

    def __init__(
        self,
        dht: hivemind.DHT,
        experiment: str,
        workload: Workload,
        *,
        n_stages: int,
        batch_size: int = 32,
        seed: int = 0,
        concurrency: int = 1,
        router: StageRouter | None = None,
        **router_options: float | str | bool,
    ) -> None:
        self.workload, self.batch_size, self.concurrency = workload, batch_size, concurrency
        from swarm.pipeline.routing import StageRouter

        self.router = router or StageRouter(dht, experiment, n_stages, seed=seed, **router_options)
        self.pipeline = RemoteStages(self.router)
        self._told_cap: int | None = None
        self.batches = self._fitting(workload.batches(batch_size, seed))

    def swarm_cap(self) -> int | None:
        """The largest micro-batch every stage has a peer for (stage peers announce their memory caps), or None."""
        caps = []
        for stage in range(self.router.n_stages):
            peers = self.router.peers(stage)
            if peers and all(a.max_batch is not None for a in peers):
                caps.append(max(a.max_batch for a in peers))  # a peer that fits it takes it; the others say busy
        return min(caps) if caps else None

    def _fitting(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """The workload's batches, split into micro-batches the stage peers' memory allows (said once per cap)."""
        for x, y in batches:
            cap = self.swarm_cap()
            if cap is None or len(x) <= cap:
                yield x, y
                continue
            if cap != self._told_cap:
                self._told_cap = cap
                logger.warning("micro-batches of %d samples are split into %d-sample ones: the stage peers' memory "
                               "allows no more (their memory preflight); --batch-size %d avoids the split",
                               len(x), cap, cap)  # fmt: skip
            for i in range(0, len(x), cap):
                yield x[i : i + cap], y[i : i + cap]

    def start(self) -> None:
        self.router.start()

    def run(
        self,
        steps: int,
        *,
        on_step: Callable[[StepRecord], None] | None = None,
        stop: threading.Event | None = None,
        history: int | None = 10_000,
    ) -> TrainReport:
        """Train on `steps` micro-batches; `on_step` sees each step's record (for progress displays); the report
        keeps the last `history` records."""
        self.router.start()
        return run_training(
            self.pipeline,
            self.workload,
            self.batches,
            steps=steps,
            concurrency=self.concurrency,
            on_step=on_step,
            stop=stop,
            history=history,
        )

    def evaluate(self, batch_size: int | None = None) -> float:
        """Test loss of the model as the swarm serves it now (forward only, micro-batches of `batch_size`)."""
        self.router.start()
        cap = self.swarm_cap()
        return self.workload.evaluate(
            lambda x: forward_all(self.pipeline, x), batch_size=batch_size or min(self.batch_size, cap or self.batch_size)
        )

    def shutdown(self) -> None:
        self.router.shutdown()
