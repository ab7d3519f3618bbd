"""The stage memory preflight (swarm/pipeline/memory.py) and the 8-bit optimizer option, on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from swarm.models import get_workload
from swarm.pipeline.memory import (
    MemoryPlan,
    StageDoesNotFit,
    activation_bytes_per_sample,
    make_optimizer,
    optimizer_state_bytes,
    plan_stage_memory,
)


def mlp(width: int = 64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 8))


def test_optimizer_state_sizes():
    n = 1_000_000
    assert optimizer_state_bytes(n, "adam") == 8 * n
    assert optimizer_state_bytes(n, "sgd") == 4 * n
    assert 2 * n < optimizer_state_bytes(n, "adam8bit") < 2.1 * n  # 1 byte per moment + a scale per block
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        optimizer_state_bytes(n, "lion")


def test_activations_are_measured_per_sample_and_grow_with_width():
    narrow, wide = mlp(64), mlp(512)
    small = activation_bytes_per_sample(narrow, torch.randn(4, 32))
    assert small == pytest.approx(activation_bytes_per_sample(narrow, torch.randn(16, 32)))
    assert activation_bytes_per_sample(wide, torch.randn(4, 32)) > 4 * small
    # input (32) + first output (64, saved by ReLU... and Linear2 saves ReLU's output 64) + output (8), fp32
    assert 4 * (32 + 64 + 8) <= small <= 4 * (32 + 3 * 64 + 8)


def test_plan_sizes_micro_batches_from_the_free_memory():
    module, probe = mlp(256), torch.randn(4, 32)
    plan = plan_stage_memory(module, probe, free=64 * 2**20, in_flight=4)
    assert isinstance(plan, MemoryPlan) and plan.max_batch > 1000
    assert plan.needed(plan.max_batch) <= plan.budget < plan.needed(plan.max_batch + 1)
    smaller = plan_stage_memory(module, probe, free=2 * 2**20, in_flight=4)
    assert 0 < smaller.max_batch < plan.max_batch
    assert "fits micro-batches of up to" in smaller.describe()


def test_a_stage_that_does_not_fit_is_refused_with_what_to_do():
    module, probe = mlp(1024), torch.randn(4, 32)
    need = plan_stage_memory(module, probe, free=10**12).fixed
    with pytest.raises(StageDoesNotFit, match="does not fit on cpu") as err:
        plan_stage_memory(module, probe, free=need // 2, stage="stage 1 of test")
    text = str(err.value)
    assert "stage 1 of test" in text and "adam8bit" in text and "--device cpu" in text
    with pytest.raises(StageDoesNotFit, match="micro-batches of 100000 samples") as err:
        plan_stage_memory(module, probe, free=8 * need, batch_size=100_000)
    assert "samples fit" in str(err.value)


def test_the_8bit_optimizer_shrinks_the_plan_and_can_make_a_stage_fit():
    module, probe = mlp(1024), torch.randn(4, 32)
    adam = plan_stage_memory(module, probe, free=10**12, optimizer="adam")
    eight = plan_stage_memory(module, probe, free=10**12, optimizer="adam8bit")
    assert eight.optimizer < adam.optimizer / 3
    free = int((eight.needed(1) + adam.needed(1)) / 2 / 0.85)  # between the two
    with pytest.raises(StageDoesNotFit):
        plan_stage_memory(module, probe, free=free, optimizer="adam")
    assert plan_stage_memory(module, probe, free=free, optimizer="adam8bit").max_batch >= 1


def test_adam8bit_trains_on_the_cpu_with_8bit_state():
    module = mlp(64)
    opt = make_optimizer(module.parameters(), 1e-2, "adam8bit")
    x, y = torch.randn(64, 32), torch.randn(64, 8)
    losses = []
    for _ in range(60):
        loss = nn.functional.mse_loss(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    state = opt.state[module[0].weight]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(module.parameters(), 1e-3, "adamw9")


def test_plan_of_a_real_stage_on_this_machine():
    workload = get_workload("digits")
    stages = workload.build_stages(2)
    x, _ = next(workload.batches(8, seed=0))
    with torch.no_grad():
        probe = stages[0](x)
    plan = plan_stage_memory(stages[1], probe, device="cpu")
    assert plan.max_batch >= 64 and plan.params == sum(p.numel() * 4 for p in stages[1].parameters())


def test_laptop_gpu_profile_serves_a_stage_on_the_gpu():
    from pathlib import Path

    from swarm.apps.config import load_config

    profile = Path(__file__).resolve().parents[2] / "peers" / "laptop-gpu.toml"
    config = load_config({"join": True, "initial_peers": ["/ip4/10.0.0.1/tcp/1/p2p/QmX"]}, profile)
    assert config.role == "stage" and config.device.startswith("cuda") and config.optimizer == "adam8bit"
    assert load_config({"join": True, "initial_peers": ["/ip4/10.0.0.1/tcp/1/p2p/QmX"], "device": "cpu"},
                       profile).device == "cpu"  # fmt: skip


def test_preflight_of_a_workload_stage_runs_its_real_input_and_refuses_when_too_small():
    from swarm.pipeline.memory import preflight_stage

    workload = get_workload("tinylm")
    plan = preflight_stage(workload, 2, 1, device="cpu")
    assert plan is not None and plan.per_sample > 0 and plan.max_batch >= 16
    with pytest.raises(StageDoesNotFit, match="stage 1 of tinylm does not fit on cpu"):
        preflight_stage(workload, 2, 1, device="cpu", free=plan.fixed // 2)
    assert preflight_stage(workload, 2, 0, device="cuda") is None or torch.cuda.is_available()


def test_a_stage_worker_trains_with_the_8bit_optimizer_chosen_in_the_config(monkeypatch):
    from swarm.apps.config import ConfigError, load_config
    from swarm.pipeline.stage_worker import StageWorker

    join = {"join": True, "initial_peers": ["/ip4/10.0.0.1/tcp/1/p2p/QmX"]}
    monkeypatch.setenv("SWARM_OPTIMIZER", "adam8bit")
    assert load_config(join).optimizer == "adam8bit"
    monkeypatch.setenv("SWARM_OPTIMIZER", "lion")
    with pytest.raises(ConfigError, match="SWARM_OPTIMIZER"):
        load_config(join)
    worker = StageWorker(mlp(64), lr=1e-2, optimizer="adam8bit")
    x, target = torch.randn(32, 32), torch.randn(32, 8)
    losses = []
    for _ in range(40):
        y = worker.forward(x)
        losses.append(float(((y - target) ** 2).mean()))
        worker.backward(x, 2 * (y - target) / y.numel())
    assert losses[-1] < 0.8 * losses[0]
    assert worker.optimizer.__class__.__name__ == "Adam8bit"
