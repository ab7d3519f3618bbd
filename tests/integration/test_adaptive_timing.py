"""Adaptive phase timing through real hivemind DHTs and p2pd: a group's phases follow what it reported in the
previous round, identically on every peer, the group still averages when one peer's timing differs, and a peer
that lost the previous round reads the group's timing from the DHT."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hivemind.utils import get_dht_time

from swarm.network.dht import local_dhts
from swarm.rounds.clock import RoundClock, RoundTiming
from swarm.rounds.verified import VerifiedAverager
from zk.circuit import SMALL_PARAMS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

ROUND_S = 20.0  # adapted phases may take up to 90 % of it
BASE = RoundTiming(commit_s=2.5, exchange_s=3.5, agree_s=1.5)  # the configured (first-round) timing
FLOOR = RoundTiming(commit_s=1.5, exchange_s=1.5, agree_s=1.0)  # adapted phases never shorter (CI shares 2 cores)


def make_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))


def train_locally(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


def step_all(avs: list[VerifiedAverager], r: int) -> list:
    clock = RoundClock(get_dht_time() - (r + 1) * ROUND_S + 0.2, ROUND_S)  # round r has just ended
    for a in avs:
        a.clock = clock
    with ThreadPoolExecutor(len(avs)) as pool:
        return list(pool.map(lambda a: a.step(r), avs))


def test_a_group_adapts_its_phases_identically_and_still_averages_when_one_peer_keeps_its_own():
    experiment = f"adapt{uuid.uuid4().hex[:8]}"
    modules = [make_module() for _ in range(3)]
    with local_dhts(3) as dhts:
        clock = RoundClock(get_dht_time(), ROUND_S)
        avs = [VerifiedAverager(d, experiment, 0, m, clock=clock, params=SMALL_PARAMS, part_chunks=8, timing=BASE,
                                adaptive=True, timing_floor=FLOOR) for d, m in zip(dhts, modules)]  # fmt: skip
        ids = sorted(a.peer_id for a in avs)
        timings = []
        try:
            for r in range(4):
                for i, m in enumerate(modules):
                    train_locally(m, 10 * r + i)
                avs[0].adaptive = r != 2  # round 2: peer 0 keeps the configured timing while the others adapt
                if r == 3:  # peer 1 lost round 2 (as if it had just joined): it reads round 2's records off the DHT
                    avs[1]._kept_records = None
                results = step_all(avs, r)
                timings.append([a.last_phases.timing for a in avs])
                for a, res in zip(avs, results):
                    assert res.included == ids and res.dropped == {}, (r, res)
                    assert torch.equal(a.anchor, avs[0].anchor) and a.anchor_round == r  # bit-identical
                    assert a.last_phases.pulled == 2 and a.last_phases.late_s < 2.0
                records = avs[1].records_of(r)
                reported = [rec.last_exchange_ms > 0 for rec in records.values()]
                assert all(reported) if r >= 1 else not any(reported)  # round 0 has nothing to report yet
        finally:
            for a in avs:
                a.shutdown()
    assert timings[0] == timings[1] == [BASE] * 3  # rounds 0 and 1: no reports in the previous round's records
    adapted = timings[2][1]
    assert timings[2] == [BASE, adapted, adapted]  # peer 0 differs, the others agree exactly
    assert adapted != BASE and adapted.total < BASE.total  # a fast group: shorter phases, still everyone kept
    assert timings[3][0] == timings[3][1] == timings[3][2] != BASE  # all the same again, peer 1 from the DHT
