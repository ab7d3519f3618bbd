"""The compute of one pipeline stage: forward, backward with a local optimizer step, and its throughput.

Used by `StageServer` (over P2P) and by the single-process baseline alike, so both train through the same code.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
from torch import nn
from torch.func import functional_call

from swarm.models.workload import input_error

EMA = 0.9  # weight of the past in the throughput estimate
MAX_KEPT = (
    16  # micro-batches whose activations a stage keeps for their backward (the oldest is dropped first)
)


class InvalidInput(ValueError):
    """The input does not fit this stage (shape, dtype, values) or the gradient does not fit its output."""


class OverMemoryCap(InvalidInput):
    """A micro-batch larger than this peer's memory preflight allows: another peer may take it (answered busy)."""


class MissingActivations(KeyError):
    """A backward without its input, for a micro-batch whose activations this stage no longer keeps."""


class StageWorker:
    """Holds a stage module and its optimizer; `params_lock` guards the parameters (the averager takes it too).

    `forward(x, keep=key)` keeps the autograd graph of that micro-batch (at most `max_kept`, and with `limit_kept`
    at most what the memory plan leaves for them; the oldest dropped first),
    so `backward(None, grad, key=key)` needs neither the input again nor a second forward. The graph is built on a
    snapshot of the parameters as they were at that forward (shared by forwards between two updates), so the
    optimizer steps of other micro-batches in between do not invalidate it: the gradient is the one of the
    forward that was actually run (weight stashing), applied to the current parameters.
    Without a kept graph, backward recomputes the forward of `x` with the current parameters.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        lr: float,
        optimizer: str = "adam",
        device: str = "cpu",
        max_kept: int = MAX_KEPT,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.device = resolve_device(device)
        self.module = module.to(self.device)
        self.lr = lr
        self.optimizer = _make_optimizer(module, lr, optimizer)
        self.params_lock = threading.RLock()
        self.steps = 0
        self.max_kept = max_kept
        self.max_batch: int | None = None  # samples per micro-batch the memory preflight allows (None: no cap)
        self.cap_reason = ""  # what set the cap, for the refusal's message
        # micro-batch -> (input, output, parameter snapshot, estimated bytes); bounded by max_kept and kept_limit
        self._kept: OrderedDict[Hashable, tuple[torch.Tensor, torch.Tensor, dict, float]] = OrderedDict()
        self.kept_limit: float | None = None  # bytes the kept micro-batches may take (from the memory plan)
        self._kept_cost = (0.0, 0.0)  # (bytes per sample, bytes per micro-batch): the plan's estimate of one
        self._kept_bytes = 0.0
        self._snapshot: tuple[tuple[int, ...], dict[str, torch.Tensor]] | None = None
        self._seconds_per_sample: float | None = None
        self._forward_seconds = 0.0

    @property
    def throughput(self) -> float:
        """Measured samples per second through forward + backward (0.0 until the first backward)."""
        spp = self._seconds_per_sample
        return 0.0 if not spp else 1.0 / spp

    @property
    def kept(self) -> int:
        """Micro-batches whose activations are held for their backward."""
        return len(self._kept)

    @property
    def kept_bytes(self) -> float:
        """The estimated bytes of the kept micro-batches (0 unless `limit_kept` set a cost)."""
        return self._kept_bytes

    def limit_kept(self, *, per_sample: float, per_micro_batch: float, limit: float) -> None:
        """Also bound the kept micro-batches by memory: each is estimated at `per_sample` bytes per sample (the
        activations autograd saves) plus `per_micro_batch` (its parameter snapshot); the oldest are dropped while
        the sum is above `limit` (the newest is always kept: the memory cap on micro-batches covers it). A backward
        for a dropped one is answered "missing" and comes again with its input (the stage recomputes)."""
        with self.params_lock:
            self._kept_cost, self.kept_limit = (per_sample, per_micro_batch), limit
            self._evict()

    def _evict(self) -> None:
        while len(self._kept) > self.max_kept or (
            self.kept_limit is not None and len(self._kept) > 1 and self._kept_bytes > self.kept_limit
        ):
            self._kept_bytes -= self._kept.popitem(last=False)[1][3]

    def forward(self, x: torch.Tensor, *, keep: Hashable | None = None) -> torch.Tensor:
        """The stage's output for `x`; with `keep`, hold the graph for `backward(None, grad, key=keep)`."""
        self._check_input(x)
        start = time.perf_counter()
        with self.params_lock:
            x = x.to(self.device)
            if keep is None:
                with torch.no_grad():
                    return self.module(x).cpu()
            params = self._current_snapshot()
            if x.is_floating_point():
                x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                output = functional_call(self.module, params, (x,))
            per_sample, per_micro_batch = self._kept_cost
            cost = per_sample * len(x) + per_micro_batch
            old = self._kept.pop(keep, None)
            self._kept_bytes += cost - (old[3] if old else 0.0)
            self._kept[keep] = (x, output, params, cost)
            self._evict()
        self._forward_seconds = time.perf_counter() - start
        return output.detach().cpu()

    def backward(
        self, x: torch.Tensor | None, grad_output: torch.Tensor, *, key: Hashable | None = None
    ) -> torch.Tensor | None:
        """Backpropagate `grad_output`, take one optimizer step, return d loss / d input (None for token inputs).

        Uses the graph kept under `key` if there is one; otherwise recomputes the forward of `x`
        (MissingActivations if `x` is None)."""
        start = time.perf_counter()
        with self.params_lock:
            kept = self._kept.pop(key, None) if key is not None else None
            if kept is not None:
                self._kept_bytes -= kept[3]
            if kept is None:
                if x is None:
                    raise MissingActivations(f"no activations kept for micro-batch {key!r}: send the input")
                self._check_input(x)
                x = x.detach().to(self.device)
                if x.is_floating_point():
                    x.requires_grad_(True)
                with torch.enable_grad():
                    output = self.module(x)
                params = None
            else:
                x, output, params, _ = kept
            grad_output = grad_output.to(self.device)
            if output.shape != grad_output.shape or not grad_output.is_floating_point():
                raise InvalidInput(
                    f"gradient {tuple(grad_output.shape)} {grad_output.dtype} does not fit the output "
                    f"{tuple(output.shape)} {output.dtype}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            if params is None:
                output.backward(grad_output)
            else:
                named = dict(self.module.named_parameters())
                leaves = [p for p in params.values() if p.requires_grad]
                grads = torch.autograd.grad(
                    output, [*leaves, x] if x.is_floating_point() else leaves, grad_output, allow_unused=True
                )
                for name, g in zip([n for n, p in params.items() if p.requires_grad], grads, strict=False):
                    named[name].grad = g
                if x.is_floating_point():
                    x.grad = grads[-1]
            self.optimizer.step()
            self.steps += 1
        self._measure(time.perf_counter() - start, len(x), recomputed=params is None)
        return x.grad.cpu() if x.is_floating_point() else None

    def forward_loss(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last stage's whole step: forward, `loss_fn(output, target)`, backward, one optimizer step.
        Returns (the loss as a 1-element tensor, d loss / d x or None for token inputs): one call instead of a
        forward, the output sent to the trainer, its gradient sent back and a backward."""
        self._check_input(x)
        start = time.perf_counter()
        with self.params_lock:
            x = x.detach().to(self.device)
            if x.is_floating_point():
                x.requires_grad_(True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                output = self.module(x)
                try:
                    loss = loss_fn(output, target.to(self.device))
                except (RuntimeError, ValueError, IndexError) as exc:
                    raise InvalidInput(
                        f"the targets do not fit the output {tuple(output.shape)}: {exc}"
                    ) from exc
            loss.backward()
            self.optimizer.step()
            self.steps += 1
        self._forward_seconds = 0.0
        self._measure(time.perf_counter() - start, len(x), recomputed=True)
        return loss.detach().cpu().reshape(1), (x.grad.cpu() if x.is_floating_point() else None)

    def replace_module(self, module: nn.Module) -> None:
        """Serve another module (stage switch); the optimizer state and the kept activations start afresh."""
        with self.params_lock:
            self.module = module.to(self.device)
            self.optimizer = _make_optimizer(module, self.lr, type(self.optimizer).__name__.lower())
            self._kept.clear()
            self._kept_bytes = 0.0
            self._snapshot = None
            self._seconds_per_sample = None

    def _check_input(self, x: torch.Tensor) -> None:
        problem = input_error(self.module, x)
        if problem:
            raise InvalidInput(problem)
        if self.max_batch is not None and len(x) > self.max_batch:
            raise OverMemoryCap(f"a micro-batch of {len(x)} samples is more than this peer's memory allows (at most "
                                f"{self.max_batch}{self.cap_reason}); trainers: use --batch-size {self.max_batch} "
                                "or less")

    def _current_snapshot(self) -> dict[str, torch.Tensor]:
        """Detached copies of the parameters, re-taken only when something wrote to them since the last one."""
        named = dict(self.module.named_parameters())
        version = tuple(p._version for p in named.values())
        if self._snapshot is None or self._snapshot[0] != version:
            copies = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in named.items()}
            copies.update(dict(self.module.named_buffers()))
            self._snapshot = (version, copies)
        return self._snapshot[1]

    def _measure(self, seconds: float, n: int, recomputed: bool) -> None:
        # a recomputing backward includes its forward; otherwise add the forward's own time
        if not recomputed:
            seconds += self._forward_seconds
        spp = seconds / max(n, 1)
        old = self._seconds_per_sample
        self._seconds_per_sample = spp if old is None else EMA * old + (1 - EMA) * spp


def resolve_device(device: str) -> torch.device:
    """ "cpu", "cuda", "cuda:N" or "auto" (the GPU if there is one); an unusable device is a clear error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no GPU here: use 'cpu' or 'auto'")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported: use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return resolved


def _make_optimizer(module: nn.Module, lr: float, name: str) -> torch.optim.Optimizer:
    """'adam', 'sgd' (momentum 0.9) or 'adam8bit' (bitsandbytes' 8-bit state): swarm.pipeline.memory."""
    from swarm.pipeline.memory import make_optimizer

    return make_optimizer(module.parameters(), lr, name)
