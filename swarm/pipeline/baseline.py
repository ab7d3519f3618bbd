"""The single-process baseline: the same stage modules and the same training loop as the swarm, no network."""

from __future__ import annotations

import torch

from swarm.models import Workload
from swarm.pipeline.stage_worker import StageWorker
from swarm.pipeline.trainer import TrainReport, run_training


class LocalStages:
    """Every stage in this process, each with its own optimizer (as each stage peer has)."""

    def __init__(
        self, workload: Workload, n_stages: int, *, lr: float, seed: int = 0, optimizer: str = "adam",
        device: str = "cpu", keep_activations: bool = True, loss_at_last_stage: bool = True,
    ) -> None:  # fmt: skip
        self.n_stages, self.keep_activations = n_stages, keep_activations
        self.loss_at_last_stage = loss_at_last_stage
        self.workers = [
            StageWorker(m, lr=lr, optimizer=optimizer, device=device)
            for m in workload.build_stages(n_stages, seed)
        ]

    def forward(self, stage: int, x: torch.Tensor, mb: str | None = None) -> tuple[torch.Tensor, str | None]:
        return self.workers[stage].forward(x, keep=mb if self.keep_activations else None), None

    def backward(
        self, stage: int, x: torch.Tensor, grad_output: torch.Tensor, route: str | None, mb: str | None = None
    ) -> torch.Tensor | None:
        return self.workers[stage].backward(x, grad_output, key=mb if self.keep_activations else None)

    def forward_loss(self, stage: int, x: torch.Tensor, target: torch.Tensor, workload: Workload):
        loss, grad = self.workers[stage].forward_loss(x, target, workload.loss)
        return float(loss), grad

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [w.module for w in self.workers]


def train_baseline(
    workload: Workload,
    *,
    n_stages: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    data_seed: int | None = None,
    optimizer: str = "adam",
) -> tuple[TrainReport, LocalStages]:
    """Train `workload` cut into `n_stages` in this process for `steps` micro-batches; also reports test loss."""
    stages = LocalStages(workload, n_stages, lr=lr, seed=seed, optimizer=optimizer)
    batches = workload.batches(batch_size, seed if data_seed is None else data_seed)
    report = run_training(stages, workload, batches, steps=steps)
    report.eval_loss = workload.evaluate(stages.modules)
    return report, stages
