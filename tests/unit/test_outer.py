"""The outer optimizer (swarm/rounds/outer.py): an idle round (Δ = 0) is no outer step."""

from __future__ import annotations

import torch

from swarm.rounds.outer import OuterOptimizer, state_digest


def test_an_idle_round_neither_moves_the_anchor_nor_spends_the_momentum():
    opt = OuterOptimizer("nesterov", lr=0.7, momentum=0.9)
    delta = torch.tensor([1.0, -2.0, 0.5])
    anchor = opt.step(torch.zeros(3), delta)
    momentum, digest = opt.momentum.clone(), state_digest(anchor, 0, opt)
    for _ in range(5):  # no batch reached the stage: Δ is exactly 0 on every peer of the group
        nxt = opt.step(anchor, torch.zeros(3))
        assert torch.equal(nxt, anchor) and nxt is not anchor
    assert torch.equal(opt.momentum, momentum) and state_digest(anchor, 0, opt) == digest
    # the next trained round goes on as if the idle rounds had not happened
    twin = OuterOptimizer("nesterov", lr=0.7, momentum=0.9)
    twin.step(torch.zeros(3), delta)
    torch.testing.assert_close(opt.step(anchor, delta), twin.step(anchor, delta))
    # a tiny but nonzero Δ is a step (only an exact zero is idle)
    assert not torch.equal(opt.step(anchor, torch.tensor([0.0, 1e-30, 0.0])), anchor)
    assert torch.equal(OuterOptimizer("sgd").step(anchor, torch.zeros(3)), anchor)
