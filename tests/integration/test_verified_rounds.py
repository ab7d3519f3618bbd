"""Verified rounds through real hivemind DHTs and p2pd on loopback: commit, exchange, check, agree, apply."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hivemind.utils import get_dht_time

from swarm.network.dht import local_dhts
from swarm.rounds.clock import RoundClock
from swarm.rounds.outer import exact_mean
from swarm.rounds.verified import RoundTiming, VerifiedAverager
from zk.circuit import SMALL_PARAMS
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROUND_S = 10.0
TIMING = RoundTiming(commit_s=2.5, exchange_s=3.5, agree_s=1.5)  # generous: CI shares 2 cores
PARAMS = SMALL_PARAMS  # 128-value chunks: a 2.6k-parameter module has 21 chunks, 3 parts of 8


def make_module(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def train_locally(module: torch.nn.Module, seed: int) -> None:
    """A stand-in for local steps: a different, deterministic change on every peer."""
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


def clock_ending_now(r: int) -> RoundClock:
    """A clock whose round `r` has just ended, so that step(r) starts its commit phase at once."""
    return RoundClock(get_dht_time() - (r + 1) * ROUND_S + 0.2, ROUND_S)


@pytest.fixture
def experiment() -> str:
    return f"ver{uuid.uuid4().hex[:8]}"


def averagers(dhts, experiment, modules, clock, attacks=None, **kwargs) -> list[VerifiedAverager]:
    attacks = attacks or [None] * len(modules)
    return [VerifiedAverager(d, experiment, 0, m, clock=clock, params=PARAMS, part_chunks=8, timing=TIMING,
                             attack=a, **kwargs) for d, m, a in zip(dhts, modules, attacks)]


def step_all(avs, r):
    clock = clock_ending_now(r)  # made now: starting the averagers took seconds
    for a in avs:
        a.clock = clock
    with ThreadPoolExecutor(len(avs)) as pool:
        return list(pool.map(lambda a: a.step(r), avs))


def test_an_honest_group_of_three_ends_with_bit_identical_anchors_equal_to_the_committed_mean(experiment):
    modules = [make_module(0) for _ in range(3)]  # the same starting point (anchor)
    anchor = flat(modules[0]).clone()
    for i, m in enumerate(modules):
        train_locally(m, i)
    deltas = [flat(m) - anchor for m in modules]
    with local_dhts(3) as dhts:
        avs = averagers(dhts, experiment, modules, clock=clock_ending_now(0))
        try:
            for a in avs:  # the averagers were built after training: their anchor is the shared start
                a.anchor = anchor.clone()
            results = step_all(avs, 0)
        finally:
            for a in avs:
                a.shutdown()
    ids = sorted(a.peer_id for a in avs)
    for res in results:
        assert res.verified and res.averaged and res.included == ids and res.dropped == {}, res
        assert res.parts_checked == 2 * 3 and res.bytes_received > 0 and res.bytes_sent > 0
    committed = [avs[i].last_commitment.update for i in range(3)]
    for q, d in zip(committed, deltas):  # what was committed is the quantized Δ of each peer, not its parameters
        assert torch.equal(q.values, quantize_update(d, PARAMS.block).values)
    expected = anchor + exact_mean([committed[ids.index(a.peer_id)] for a in sorted(avs, key=lambda a: a.peer_id)])
    for a, m in zip(avs, modules):
        assert torch.equal(a.anchor, avs[0].anchor)  # bit-identical across the group
        assert torch.equal(flat(m), a.anchor)  # no local steps since the snapshot: parameters = anchor
        assert a.anchor_round == 0
    torch.testing.assert_close(avs[0].anchor, expected, rtol=0, atol=1e-7)
    honest_float_mean = anchor + torch.stack(deltas).mean(0)
    assert float((avs[0].anchor - honest_float_mean).abs().max()) < 1e-3  # only int8 rounding away from it
