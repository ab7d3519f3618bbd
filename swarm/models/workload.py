"""A workload: a model declared once as a sequence of blocks, its data and its loss; cut into pipeline stages.

`build_stages(n, seed)` and `build_full(seed)` give the same parameters for the same seed on every peer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


class WorkloadError(ValueError):
    """A workload was asked for something it cannot do (unknown name, too many stages, bad option)."""


class Workload(ABC):
    """The model (as blocks), the data and the loss of one experiment."""

    name: str = ""

    @abstractmethod
    def make_blocks(self) -> list[nn.Module]:
        """Fresh blocks of the model, in pipeline order, initialised from torch's current RNG."""

    @abstractmethod
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch, from the last stage's output."""

    @abstractmethod
    def batches(self, batch_size: int, seed: int, *, split: str = "train") -> Iterator[Batch]:
        """Endless (x, y) batches of `split`, in an order fixed by `seed`."""

    @abstractmethod
    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """A fixed, finite set of test batches (the same on every call)."""

    def build_full(self, seed: int = 0) -> nn.Sequential:
        """The whole model in one module (blocks in order), initialised from `seed` without touching global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(*self.make_blocks())

    def build_stages(self, n_stages: int, seed: int = 0) -> list[nn.Sequential]:
        """The model of `build_full(seed)` cut into `n_stages` contiguous stages of balanced parameter count."""
        blocks = list(self.build_full(seed))
        bounds = balanced_cut([_n_params(b) for b in blocks], n_stages, what=f"workload {self.name!r}")
        return [nn.Sequential(*blocks[lo:hi]) for lo, hi in bounds]

    def build_stage(self, n_stages: int, stage: int, seed: int = 0) -> nn.Sequential:
        """Only stage `stage` of `build_stages(n_stages, seed)` (what a stage peer serves)."""
        if not 0 <= stage < n_stages:
            raise WorkloadError(f"stage {stage} does not exist: the model has stages 0..{n_stages - 1}")
        return self.build_stages(n_stages, seed)[stage]

    @torch.no_grad()
    def evaluate(
        self, model: Callable[[torch.Tensor], torch.Tensor] | Sequence[nn.Module], *, batch_size: int = 128
    ) -> float:
        """Mean test loss of `model` (a module, a callable, or a list of stage modules run in order)."""
        forward = _as_forward(model)
        total, count = 0.0, 0
        for x, y in self.eval_batches(batch_size):
            total += float(self.loss(forward(x), y)) * len(x)
            count += len(x)
        return total / count


def balanced_cut(costs: Sequence[int], n_parts: int, *, what: str = "model") -> list[tuple[int, int]]:
    """Cut `costs` into `n_parts` contiguous non-empty ranges [lo, hi) minimising the largest part's sum."""
    n = len(costs)
    if not isinstance(n_parts, int) or not 1 <= n_parts <= n:
        raise WorkloadError(f"{what} has {n} blocks, so it can be cut into 1..{n} stages, not {n_parts!r}")
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: smallest possible max part-sum when the first i blocks form k parts; cut[k][i]: where part k starts
    best = [[inf] * (n + 1) for _ in range(n_parts + 1)]
    cut = [[0] * (n + 1) for _ in range(n_parts + 1)]
    best[0][0] = 0
    for k in range(1, n_parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                worst = max(best[k - 1][j], prefix[i] - prefix[j])
                if worst < best[k][i]:
                    best[k][i], cut[k][i] = worst, j
    bounds, i = [], n
    for k in range(n_parts, 0, -1):
        bounds.append((cut[k][i], i))
        i = cut[k][i]
    return bounds[::-1]


def run_stages(stages: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Forward through stage modules in order (the single-process pipeline)."""
    for stage in stages:
        x = stage(x)
    return x


def input_error(stage: nn.Module, x: torch.Tensor) -> str | None:
    """Why `x` cannot be the input of `stage` (None if it fits): checked before any compute, so that a bad input is
    told apart from a failing stage. The first block decides: its own `input_error(x)` if it has one, otherwise
    its first Linear / LayerNorm / Embedding layer (feature size, dtype, token range)."""
    if x.dim() < 1 or len(x) == 0:
        return f"an input needs a non-empty batch dimension, got shape {tuple(x.shape)}"
    first = stage[0] if isinstance(stage, nn.Sequential) and len(stage) else stage
    if hasattr(first, "input_error"):
        return first.input_error(x)
    for layer in first.modules():
        if isinstance(layer, nn.Linear):
            return _float_features(x, layer.in_features)
        if isinstance(layer, nn.LayerNorm):
            return _float_features(x, layer.normalized_shape[-1])
        if isinstance(layer, nn.Embedding):
            return token_error(x, layer.num_embeddings)
    return None


def _float_features(x: torch.Tensor, features: int) -> str | None:
    if not x.is_floating_point():
        return f"this stage takes floating-point activations, got {x.dtype}"
    if x.shape[-1] != features:
        return f"this stage takes {features} features, got shape {tuple(x.shape)}"
    return None


def token_error(x: torch.Tensor, vocabulary: int, max_length: int | None = None) -> str | None:
    """Why `x` is not a batch of token ids below `vocabulary` (of at most `max_length` per row), or None."""
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        return f"this stage takes integer token ids, got {x.dtype}"
    if max_length is not None and (x.dim() != 2 or not 1 <= x.shape[1] <= max_length):
        return f"this stage takes (batch, length <= {max_length}) token ids, got shape {tuple(x.shape)}"
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocabulary):
        return f"token ids must lie in [0, {vocabulary}), got [{int(x.min())}, {int(x.max())}]"
    return None


def _as_forward(model: Callable[[torch.Tensor], torch.Tensor] | Sequence[nn.Module]):
    if isinstance(model, nn.Module) or callable(model):
        return model
    stages = list(model)
    return lambda x: run_stages(stages, x)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
