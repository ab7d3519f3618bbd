"""Exercise the GPU path of a stage: memory preflight vs measured peak, stage compute GPU vs CPU, 8-bit optimizer.

Runs where torch sees a GPU; elsewhere prints "no GPU" and what it would have checked, and exits 0 (CI and the
development machines have none). Figures go to BENCHMARKS.md ("beyond loopback").

    .venv/bin/python experiments/gpu_check.py [--quick] [--device cuda:0]

Per workload stage: (1) the preflight's prediction for `in_flight` micro-batches against the peak that CUDA's
allocator measured while running them (forward of all, then backward + optimizer step of each, as a stage peer
does), as a ratio (>= 1 means the preflight was on the safe side); (2) samples/s through forward + backward +
optimizer step on the GPU against the CPU, same run; (3) Adam vs 8-bit Adam state on the GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swarm.models import get_workload
from swarm.pipeline.memory import make_optimizer, plan_stage_memory


def stage_inputs(workload, stages, stage: int, batch: int) -> torch.Tensor:
    x, _ = next(workload.batches(batch, seed=0))
    with torch.no_grad():
        for s in stages[:stage]:
            x = s(x)
    return x


def step_all(module, opt, xs: list[torch.Tensor]) -> None:
    """Forward every micro-batch (graphs kept, as a stage peer keeps them), then backward + step each."""
    outs = [module(x.requires_grad_(x.is_floating_point())) for x in xs]
    for y in outs:
        opt.zero_grad(set_to_none=True)
        y.float().pow(2).mean().backward()
        opt.step()


def throughput(module, opt, x: torch.Tensor, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step_all(module, opt, [x])
        n += len(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return n / (time.perf_counter() - start)


def check(device: torch.device, quick: bool) -> list[str]:
    lines, ratios = [], []
    in_flight, batch = 4, 64
    for name, n_stages in (("digits", 2), ("tinylm", 2)):
        workload = get_workload(name)
        stages = workload.build_stages(n_stages)
        for k, stage in enumerate(stages):
            x = stage_inputs(workload, stages, k, batch)
            for optimizer in ("adam", "adam8bit"):
                module = workload.build_stages(n_stages)[k].to(device)
                opt = make_optimizer(module.parameters(), 1e-3, optimizer)
                plan = plan_stage_memory(module, x[:4].to(device), device=device, optimizer=optimizer,
                                         in_flight=in_flight)  # fmt: skip
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                xs = [x.to(device) for _ in range(in_flight)]
                step_all(module, opt, xs)  # creates the optimizer state
                step_all(module, opt, xs)
                torch.cuda.synchronize(device)
                measured = torch.cuda.max_memory_allocated(device) - base + plan.params  # weights were there
                predicted = plan.needed(batch) - plan.averaging  # no averaging round in this check
                ratios.append(predicted / measured)
                lines.append(f"{name} stage {k} {optimizer:8s}: predicted {predicted / 2**20:8.2f} MiB, measured "
                             f"peak {measured / 2**20:8.2f} MiB (x{predicted / measured:.2f}); fits up to "
                             f"{plan.max_batch} samples x {in_flight} in flight")  # fmt: skip
                del module, opt, xs
            secs = 1.0 if quick else 5.0
            gpu_mod = workload.build_stages(n_stages)[k].to(device)
            gpu = throughput(gpu_mod, make_optimizer(gpu_mod.parameters(), 1e-3, "adam"), x.to(device), secs)
            cpu_mod = workload.build_stages(n_stages)[k]
            cpu = throughput(cpu_mod, make_optimizer(cpu_mod.parameters(), 1e-3, "adam"), x, secs)
            lines.append(f"{name} stage {k}: {gpu:,.0f} samples/s on {device} vs {cpu:,.0f} on CPU "
                         f"(x{gpu / cpu:.1f}, micro-batches of {batch})")  # fmt: skip
    lines.append(f"SUMMARY preflight/measured memory ratio min {min(ratios):.2f} max {max(ratios):.2f} "
                 f"(>= 1: safe side) on {torch.cuda.get_device_name(device)}")  # fmt: skip
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print(f"no GPU: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none, CPU-only wheel'}) sees "
              "no CUDA device; nothing to check here. On a GPU machine this compares the memory preflight with the "
              "measured peak and GPU vs CPU stage throughput.")  # fmt: skip
        print("SUMMARY no GPU: skipped")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for line in check(torch.device(args.device), args.quick):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
