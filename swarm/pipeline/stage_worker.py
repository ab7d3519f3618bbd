"""The compute of one pipeline stage: forward, backward with a local optimizer step, and its throughput.

Used by `StageServer` (over P2P) and by the single-process baseline alike, so both train through the same code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

EMA = 0.9  # weight of the past in the throughput estimate


class StageWorker:
    """Holds a stage module and its optimizer; `params_lock` guards the parameters (the averager takes it too)."""

    def __init__(self, module: nn.Module, *, lr: float, optimizer: str = "adam", device: str = "cpu") -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.device = resolve_device(device)
        self.module = module.to(self.device)
        self.lr = lr
        self.optimizer = _make_optimizer(module, lr, optimizer)
        self.params_lock = threading.RLock()
        self.steps = 0
        self.samples = 0
        self.in_flight = 0
        self._seconds_per_sample: float | None = None
        self._count_lock = threading.Lock()

    @property
    def throughput(self) -> float:
        """Measured samples per second through forward + backward (0.0 until the first backward)."""
        spp = self._seconds_per_sample
        return 0.0 if not spp else 1.0 / spp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._busy(), self.params_lock, torch.no_grad():
            return self.module(x.to(self.device)).cpu()

    def backward(self, x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor | None:
        """Recompute the forward of `x`, backpropagate `grad_output`, take one optimizer step, return d loss/d x."""
        start = time.perf_counter()
        with self._busy(), self.params_lock:
            x, grad_output = x.detach().to(self.device), grad_output.to(self.device)
            if x.is_floating_point():
                x.requires_grad_(True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                output = self.module(x)
            if output.shape != grad_output.shape:
                raise ValueError(f"gradient shape {tuple(grad_output.shape)} != output shape {tuple(output.shape)}")
            output.backward(grad_output)
            self.optimizer.step()
            self.steps += 1
            self.samples += len(x)
        self._measure(time.perf_counter() - start, len(x))
        return x.grad.cpu() if x.is_floating_point() else None

    def replace_module(self, module: nn.Module) -> None:
        """Serve another module (stage switch); the optimizer state starts afresh."""
        with self.params_lock:
            self.module = module.to(self.device)
            self.optimizer = _make_optimizer(module, self.lr, type(self.optimizer).__name__.lower())
            self._seconds_per_sample = None

    def _measure(self, seconds: float, n: int) -> None:
        # backward recomputes forward, so its time is a fair estimate of one forward + backward
        spp = seconds / max(n, 1)
        old = self._seconds_per_sample
        self._seconds_per_sample = spp if old is None else EMA * old + (1 - EMA) * spp

    @contextmanager
    def _busy(self) -> Iterator[None]:
        with self._count_lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self._count_lock:
                self.in_flight -= 1


def resolve_device(device: str) -> torch.device:
    """"cpu", "cuda", "cuda:N" or "auto" (the GPU if there is one); an unusable device is a clear error."""
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
    if name == "adam":
        return torch.optim.Adam(module.parameters(), lr=lr)
    if name == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}: use 'adam' or 'sgd'")
