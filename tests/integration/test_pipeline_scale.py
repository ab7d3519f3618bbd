"""Six stage peers (three per stage) on loopback: a trainer spreads micro-batches over all of them, then each stage's
peers average in one verified round and end with identical parameters (the large runs are experiments/bench_scale.py)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hivemind.utils import get_dht_time

from swarm.models import get_workload
from swarm.network.dht import local_dhts
from swarm.network.records import fetch_stage_announcements
from swarm.pipeline.serving import StageServer
from swarm.pipeline.trainer import Trainer
from swarm.rounds.clock import RoundClock
from swarm.rounds.verified import RoundTiming, VerifiedAverager
from zk.circuit import SMALL_PARAMS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PER_STAGE = 3
TIMING = RoundTiming(commit_s=10.0, exchange_s=6.0, agree_s=3.0)  # generous: six commits share 2 busy cores
ROUND_S = 10.0


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_six_stage_peers_share_the_work_and_each_stage_averages_as_one_group():
    w = get_workload("digits")
    experiment = f"scale{uuid.uuid4().hex[:8]}"
    with local_dhts(2 * PER_STAGE + 1) as dhts:
        servers = [StageServer(d, experiment, w, i // PER_STAGE, w.build_stage(2, i // PER_STAGE, seed=0), lr=3e-3)
                   for i, d in enumerate(dhts[1:])]  # fmt: skip
        averagers: list[VerifiedAverager] = []
        try:
            for s in servers:
                s.start()
            # made before training, as a stage peer does: every replica's anchor is the shared initial parameters
            clock = RoundClock(get_dht_time(), ROUND_S)
            averagers = [VerifiedAverager(s.dht, experiment, s.stage, s.module, clock=clock, lock=s.params_lock,
                                          params=SMALL_PARAMS, part_chunks=8, timing=TIMING) for s in servers]  # fmt: skip
            records = fetch_stage_announcements(dhts[0], experiment)
            assert {st: len(anns) for st, anns in records.items()} == {0: PER_STAGE, 1: PER_STAGE}
            with Trainer(dhts[0], experiment, w, n_stages=2, batch_size=16, concurrency=3) as trainer:
                report = trainer.run(60)
            assert report.final_loss < report.steps[0].loss
            assert all(s.worker.steps > 0 for s in servers), [s.worker.steps for s in servers]  # all took work
            assert sum(s.worker.steps for s in servers) == 2 * 60
            stage0 = [s for s in servers if s.stage == 0]
            assert len({tuple(flat(s.module)[:8].tolist()) for s in stage0}) == PER_STAGE  # replicas diverged
            clock = RoundClock(get_dht_time() - ROUND_S + 0.2, ROUND_S)  # round 0 ends now
            for a in averagers:
                a.clock = clock
            with ThreadPoolExecutor(len(averagers)) as pool:
                results = list(pool.map(lambda a: a.step(0), averagers))
            assert [len(r.included) for r in results] == [PER_STAGE] * len(servers)
            for stage in (0, 1):
                params = [flat(s.module) for s in servers if s.stage == stage]
                assert all(torch.equal(params[0], p) for p in params[1:])  # bit-identical after the round
        finally:
            for a in averagers:
                a.shutdown()
            for s in servers:
                s.shutdown()
