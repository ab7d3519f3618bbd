"""Kept activations: a backward without the input computes what a backward with it does; what a stage keeps is
bounded by count and by its memory plan, and a dropped micro-batch falls back to the input being sent again."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from swarm.pipeline.memory import plan_stage_memory
from swarm.pipeline.stage_worker import MissingActivations, StageWorker


def mlp(width: int = 64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 8))


def test_a_backward_from_kept_activations_equals_one_from_the_resent_input():
    """Same module, same micro-batch: the gradient w.r.t. the input and the parameters after the step are the same
    whether the stage kept the graph (the backward carries only the gradient) or recomputes from the input."""
    kept, resent = StageWorker(mlp(), lr=1e-2), StageWorker(copy.deepcopy(mlp()), lr=1e-2)
    x, g = torch.randn(8, 32), torch.randn(8, 8)
    assert torch.equal(kept.forward(x, keep="mb"), resent.forward(x))
    dx_kept = kept.backward(None, g, key="mb")
    dx_resent = resent.backward(x, g)
    assert torch.allclose(dx_kept, dx_resent, atol=1e-6) and dx_kept.abs().sum() > 0
    for a, b in zip(kept.module.parameters(), resent.module.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert kept.kept == 0 and kept.kept_bytes == 0


def test_kept_micro_batches_are_bounded_by_bytes_and_the_oldest_goes_first():
    worker = StageWorker(mlp(), lr=1e-2)
    worker.limit_kept(per_sample=100, per_micro_batch=1000, limit=3500)  # one 5-sample micro-batch: 1,500 bytes
    for key in "abc":
        worker.forward(torch.randn(5, 32), keep=key)
    assert worker.kept == 2 and worker.kept_bytes == 3000
    with pytest.raises(MissingActivations):
        worker.backward(None, torch.ones(5, 8), key="a")  # dropped: the router sends the input again
    assert worker.backward(torch.randn(5, 32), torch.ones(5, 8), key="a").shape == (5, 32)  # ... and it recomputes
    assert worker.backward(None, torch.ones(5, 8), key="c").shape == (5, 32)
    assert worker.kept == 1 and worker.kept_bytes == 1500
    worker.forward(torch.randn(40, 32), keep="big")  # above the limit alone: still kept, the others dropped
    assert worker.kept == 1 and worker.kept_bytes == 5000
    worker.limit_kept(per_sample=100, per_micro_batch=1000, limit=10**9)
    worker.max_kept = 3
    for key in "defg":
        worker.forward(torch.randn(1, 32), keep=key)
    assert worker.kept == 3  # the count bound holds too


def test_the_memory_plan_bounds_what_a_stage_keeps():
    """With the plan's room for micro-batches in flight, a stage keeps `in_flight` micro-batches of the largest
    size the plan allows, and more of smaller ones."""
    module, probe = mlp(256), torch.randn(4, 32)
    plan = plan_stage_memory(module, probe, free=4 * 2**20, in_flight=3)
    assert 1 < plan.max_batch < 10**6
    worker = StageWorker(module, lr=1e-2)
    worker.limit_kept(per_sample=plan.per_sample, per_micro_batch=plan.snapshot, limit=plan.in_flight_room)
    for i in range(plan.in_flight + 3):
        worker.forward(torch.randn(plan.max_batch, 32), keep=f"big{i}")
    assert worker.kept == plan.in_flight and worker.kept_bytes <= plan.in_flight_room
    for i in range(8):
        worker.forward(torch.randn(max(1, plan.max_batch // 8), 32), keep=f"small{i}")
    assert worker.kept > plan.in_flight and worker.kept_bytes <= plan.in_flight_room
