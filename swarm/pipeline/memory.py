"""Memory preflight of a stage: before a peer serves a stage, what it needs, what fits, and a clear refusal if not.

A consumer GPU has 6-24 GB; a stage that does not fit must be refused at start with what to change, not fail with
an out-of-memory error hours later (Petals #308, RL Swarm's 12-24 GB reports). The estimate, per stage:

- fixed: the parameters, their gradients, the optimizer's state (Adam: 2 fp32 values per parameter; bitsandbytes'
  8-bit Adam: 2 bytes per parameter plus its per-block scales; SGD with momentum: 1 value), and the averaging
  round's buffers (hivemind's averaged copy of the parameters and the round's delta: 2 copies);
- per micro-batch in flight: the activations its backward keeps (measured: the tensors autograd saves in one
  forward of a probe batch, per sample) and one parameter snapshot (`StageWorker` keeps the parameters of the
  forward that ran, for its backward).

The budget is the device's free memory (CUDA: `torch.cuda.mem_get_info`; CPU: available RAM) times a safety
margin. `plan_stage_memory` returns the largest micro-batch that fits with `in_flight` micro-batches at once, or
raises `StageDoesNotFit` with the figures and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from swarm.errors import SwarmError

SAFETY = (
    0.85  # of the free memory; the rest is for the allocator's fragmentation, CUDA context, other programs
)
AVERAGING_COPIES = 2  # hivemind's averaged tensors + the round's delta
OPTIMIZERS = ("adam", "adam8bit", "sgd")
_BNB_BLOCK = 256  # bitsandbytes' blockwise optimizer state: one fp32 scale per block of this many values


class StageDoesNotFit(SwarmError, ValueError):
    """The stage cannot be served on this device, even with micro-batches of one sample; the message says why."""

    exit_code = 2  # a setting to change (device, optimizer, stage), as ConfigError
    summary = "this machine cannot serve that stage: "


def optimizer_state_bytes(n_params: int, optimizer: str) -> int:
    """Bytes of optimizer state for `n_params` fp32 parameters."""
    if optimizer == "adam":
        return 2 * 4 * n_params
    if optimizer == "adam8bit":
        return 2 * n_params + 2 * 4 * (-(-n_params // _BNB_BLOCK))
    if optimizer == "sgd":
        return 4 * n_params
    raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


def make_optimizer(params: Iterable[nn.Parameter], lr: float, optimizer: str) -> torch.optim.Optimizer:
    """The stage's local optimizer: 'adam', 'sgd' (momentum 0.9) or 'adam8bit' (bitsandbytes, 8-bit state)."""
    params = list(params)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if optimizer == "adam8bit":
        import bitsandbytes as bnb

        # min_8bit_size=0: every tensor gets 8-bit state (bitsandbytes keeps small ones in fp32 by default)
        return bnb.optim.Adam8bit(params, lr=lr, min_8bit_size=0)
    raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


def activation_bytes_per_sample(module: nn.Module, x: torch.Tensor) -> float:
    """Bytes autograd keeps for one sample's backward (saved tensors + the output), measured on the batch `x`."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    x = x.detach().requires_grad_(x.is_floating_point())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = module(x)
    kept = sum(n for (ptr, _), n in seen.items() if ptr not in params) + y.numel() * y.element_size()
    return kept / max(len(x), 1)


def free_bytes(device: torch.device | str) -> int:
    """Free memory of `device` now: CUDA's free memory, or the RAM available on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    budget: int  # bytes we allow ourselves (free * SAFETY)
    params: int
    grads: int
    optimizer: int
    averaging: int
    per_sample: float  # activation bytes kept per sample of a micro-batch
    snapshot: int  # bytes of one parameter snapshot (per micro-batch in flight)
    in_flight: int
    max_batch: int  # largest micro-batch that fits with `in_flight` of them at once

    @property
    def fixed(self) -> int:
        return self.params + self.grads + self.optimizer + self.averaging

    @property
    def in_flight_room(self) -> int:
        """Bytes left for the micro-batches in flight (their kept activations and parameter snapshots):
        `StageWorker.limit_kept` bounds what a stage keeps by it."""
        return self.budget - self.fixed

    def needed(self, batch_size: int) -> int:
        return self.fixed + self.in_flight * (self.snapshot + int(self.per_sample * batch_size))

    def describe(self) -> str:
        return (
            f"memory on {self.device}: {gib(self.budget)} usable; the stage takes {gib(self.fixed)} "
            f"(parameters {gib(self.params)}, gradients {gib(self.grads)}, optimizer {gib(self.optimizer)}, "
            f"averaging {gib(self.averaging)}) + {gib(self.snapshot)} and {mib(self.per_sample)} per sample for "
            f"each micro-batch in flight; fits micro-batches of up to {self.max_batch} samples with "
            f"{self.in_flight} in flight"
        )


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def plan_stage_memory(
    module: nn.Module, probe: torch.Tensor, *, device: torch.device | str = "cpu", optimizer: str = "adam",
    in_flight: int = 4, free: int | None = None, batch_size: int | None = None, stage: str = "the stage",
) -> MemoryPlan:  # fmt: skip
    """What serving `module` on `device` takes; raises StageDoesNotFit when not even 1 sample fits, or when
    `batch_size` is given and does not fit (the message names the largest that does and what else to change).

    `probe`: a small batch of the stage's input (a few samples; only the per-sample figure is used). `free`: the
    free bytes to plan with (default: measured on `device`).
    """
    if in_flight < 1:
        raise ValueError(f"in_flight must be at least 1, got {in_flight}")
    n_params = sum(p.numel() for p in module.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    opt = optimizer_state_bytes(n_params, optimizer)
    per_sample = activation_bytes_per_sample(module, probe)
    budget = int((free_bytes(device) if free is None else free) * SAFETY)
    plan = MemoryPlan(
        device=str(device), budget=budget, params=param_bytes, grads=param_bytes, optimizer=opt,
        averaging=AVERAGING_COPIES * param_bytes, per_sample=per_sample, snapshot=param_bytes,
        in_flight=in_flight, max_batch=0,
    )  # fmt: skip
    room = budget - plan.fixed - in_flight * plan.snapshot
    max_batch = (
        int(room // (in_flight * per_sample)) if room > 0 and per_sample > 0 else (10**6 if room > 0 else 0)
    )
    plan = MemoryPlan(**{**plan.__dict__, "max_batch": max_batch})
    if max_batch < 1:
        raise StageDoesNotFit(
            f"{stage} does not fit on {device}: it needs {gib(plan.needed(1))} with micro-batches of one sample "
            f"({in_flight} in flight) but only {gib(budget)} is usable ({int(SAFETY * 100)}% of the free memory, or of --memory-limit). "
            + _advice(plan, optimizer)
        )
    if batch_size is not None and batch_size > max_batch:
        raise StageDoesNotFit(
            f"{stage} on {device}: micro-batches of {batch_size} samples need {gib(plan.needed(batch_size))} but "
            f"{gib(budget)} is usable; up to {max_batch} samples fit with {in_flight} in flight. "
            + _advice(plan, optimizer)
        )
    return plan


def _advice(plan: MemoryPlan, optimizer: str) -> str:
    tips = []
    if optimizer == "adam":
        saved = plan.optimizer - optimizer_state_bytes(plan.params // 4, "adam8bit")
        tips.append(f"use the 8-bit optimizer (--optimizer adam8bit, or optimizer = \"adam8bit\" in the profile: "
                    f"saves {gib(saved)})")
    tips.append("ask for a smaller micro-batch or fewer in flight (trainers' --batch-size / --concurrency)")
    tips.append("serve another stage (--stage) or join a swarm cut into more stages")
    tips.append("close other programs using this device, or use --device cpu")
    return "To make it fit: " + "; ".join(tips) + "."


def preflight_stage(
    workload, n_stages: int, stage: int, *, seed: int = 0, device: str = "cpu", optimizer: str = "adam",
    in_flight: int = 4, free: int | None = None,
) -> MemoryPlan | None:  # fmt: skip
    """The memory plan of serving `stage` of `workload` on `device` (a probe batch of its real input is run through
    the stages before it); raises StageDoesNotFit. None when the device cannot be looked at (a GPU torch does not
    see: the stage's own start says so)."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)  # fmt: skip
    if dev.type == "cuda" and not torch.cuda.is_available():
        return None
    stages = workload.build_stages(n_stages, seed)
    x, _ = next(workload.batches(4, seed))
    with torch.no_grad():
        for earlier in stages[:stage]:
            x = earlier(x)
    module = stages[stage].to(dev)
    return plan_stage_memory(module, x.to(dev), device=dev, optimizer=optimizer, in_flight=in_flight, free=free,
                             stage=f"stage {stage} of {workload.name}")  # fmt: skip


def check_stage_fits(workload, n_stages: int, stage: int, *, seed: int = 0, device: str = "cpu",
                     optimizer: str = "adam", log=None, limit_gib: float | None = None) -> MemoryPlan | None:  # fmt: skip
    """`preflight_stage` for a stage peer about to serve: logs what fits, raises StageDoesNotFit (exit code 2).
    `limit_gib` (swarm-peer --memory-limit): plan with at most this much of the device's free memory."""
    free = None
    if limit_gib is not None:
        dev = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
        measured = free_bytes(dev) if not (dev.startswith("cuda") and not torch.cuda.is_available()) else None
        free = int(limit_gib * 2**30) if measured is None else min(measured, int(limit_gib * 2**30))
    plan = preflight_stage(workload, n_stages, stage, seed=seed, device=device, optimizer=optimizer, free=free)
    if plan is not None and log is not None:
        log.info("stage %d: %s", stage, plan.describe())
    return plan
