"""The quick workload for tests: an MLP classifying scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from swarm.models import data
from swarm.models.workload import Batch, Workload


@dataclass
class DigitsConfig:
    hidden: int = 128
    n_hidden_layers: int = 3  # blocks: input layer, n_hidden_layers - 1 hidden layers, output layer


class DigitsMLP(Workload):
    """64 pixels -> hidden ReLU layers -> 10 classes; each Linear(+ReLU) is one block a stage can hold."""

    name = "digits"

    def __init__(self, config: DigitsConfig | None = None) -> None:
        self.config = config or DigitsConfig()

    def make_blocks(self) -> list[nn.Module]:
        h, n = self.config.hidden, self.config.n_hidden_layers
        blocks: list[nn.Module] = [nn.Sequential(nn.Linear(64, h), nn.ReLU())]
        blocks += [nn.Sequential(nn.Linear(h, h), nn.ReLU()) for _ in range(n - 1)]
        blocks.append(nn.Linear(h, 10))
        return blocks

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    def batches(self, batch_size: int, seed: int, *, split: str = "train") -> Iterator[Batch]:
        x, y = data.digits_arrays(split)
        return data.shuffled_batches(x, y, batch_size, seed)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        data.check_batch_size(batch_size)
        x, y = data.digits_arrays("test")
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    @torch.no_grad()
    def accuracy(self, model) -> float:
        """Test accuracy of a module or callable (for the demo's summary)."""
        x, y = data.digits_arrays("test")
        return float((model(x).argmax(-1) == y).float().mean())
