"""Routing choice and retries, with the network replaced by local stage workers (no processes)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from hivemind.p2p import PeerID
from hivemind.proto import runtime_pb2

from swarm.models import get_workload
from swarm.network.records import StageAnnouncement
from swarm.pipeline.routing import RoutingError, StageRouter, choose_peer
from swarm.pipeline.serving import ServingError, pack_tensors, unpack_tensors
from swarm.pipeline.stage_worker import StageWorker
from swarm.pipeline.trainer import RemoteStages, run_training

PEER_IDS = [PeerID(b"\x00\x10" + bytes([i]) * 16).to_base58() for i in range(6)]


def ann(i: int, stage: int = 0, throughput: float = 10.0, load: int = 0) -> StageAnnouncement:
    return StageAnnouncement(
        peer_id=PEER_IDS[i], stage=stage, throughput=throughput, load=load, params_version=0, wallet=None
    )


@pytest.mark.parametrize(
    ("peers", "in_flight", "share_of_first"),
    [
        pytest.param([ann(0, throughput=30.0), ann(1, throughput=10.0)], {}, 0.75, id="follows-throughput"),
        pytest.param([ann(0, load=0), ann(1, load=3)], {}, 0.8, id="avoids-announced-load"),
        pytest.param([ann(0), ann(1)], {PEER_IDS[0]: 3}, 0.2, id="own-calls-in-flight-count-as-load"),
        pytest.param([ann(0, throughput=0.0), ann(1, throughput=20.0)], {}, 0.5, id="unmeasured-is-stage-average"),
    ],
)
def test_choice_is_weighted_by_throughput_over_one_plus_load(peers, in_flight, share_of_first):
    rng = random.Random(0)
    counts = Counter(choose_peer(peers, rng, in_flight=in_flight).peer_id for _ in range(4000))
    assert counts[PEER_IDS[0]] / 4000 == pytest.approx(share_of_first, abs=0.03)


def test_excluded_peers_are_never_chosen():
    rng = random.Random(4)
    peers = [ann(0), ann(1), ann(2)]
    assert {choose_peer(peers, rng, exclude={PEER_IDS[0], PEER_IDS[2]}).peer_id for _ in range(50)} == {PEER_IDS[1]}
    assert choose_peer(peers, rng, exclude=set(PEER_IDS)) is None
    assert choose_peer([], rng) is None


class FakeSwarm(StageRouter):
    """A router whose peers are local StageWorkers; `dead` peers fail every call like a vanished peer."""

    def __init__(self, announcements: list[StageAnnouncement], workers: dict[str, StageWorker], **kw):
        super().__init__(None, "exp", 1 + max(a.stage for a in announcements), seed=0, wait_for_peers=0.0, **kw)
        self.table, self.workers, self.dead, self.sent = announcements, workers, set(), []
        self.fail_once: set[str] = set()
        self.hung: set[str] = set()
        self.timeouts: list[float] = []

    def _fetch(self):
        out: dict[int, list[StageAnnouncement]] = {}
        for a in self.table:
            out.setdefault(a.stage, []).append(a)
        return out

    def _send(self, peer, name, request, timeout):
        self.sent.append(peer)
        self.timeouts.append(timeout)
        if peer in self.dead or peer in self.hung:
            raise TimeoutError
        if peer in self.fail_once:
            self.fail_once.discard(peer)
            raise ConnectionResetError
        tensors = unpack_tensors(request, len(request.tensors), name)
        worker = self.workers[peer]
        if name.endswith(".forward"):
            out = [worker.forward(*tensors)]
        else:
            grad = worker.backward(*tensors)
            out = [] if grad is None else [grad]
        return pack_tensors(name, out, runtime_pb2.ExpertResponse)


@pytest.fixture
def two_stage_swarm():
    w = get_workload("digits")
    s0, s1 = w.build_stages(2, seed=0)
    s1b = w.build_stages(2, seed=0)[1]
    table = [ann(0, stage=0), ann(1, stage=1), ann(2, stage=1)]
    workers = {PEER_IDS[0]: StageWorker(s0, lr=3e-3), PEER_IDS[1]: StageWorker(s1, lr=3e-3),
               PEER_IDS[2]: StageWorker(s1b, lr=3e-3)}
    return w, FakeSwarm(table, workers)


def test_a_dead_peer_is_retried_on_another_peer_of_its_stage(two_stage_swarm):
    w, router = two_stage_swarm
    router.dead.add(PEER_IDS[1])
    report = run_training(RemoteStages(router), w, w.batches(32, seed=0), steps=30)
    assert len(report.steps) == 30
    assert report.final_loss < report.steps[0].loss
    assert router.workers[PEER_IDS[2]].steps == 30 and router.workers[PEER_IDS[1]].steps == 0
    assert router.sent.count(PEER_IDS[1]) == 1  # banned after its first failure


def test_backward_goes_to_the_forward_peer_while_it_lives(two_stage_swarm):
    w, router = two_stage_swarm
    x, _ = next(w.batches(8, seed=0))
    h, peer = router.forward(1, router.forward(0, x)[0])
    router.sent.clear()
    router.backward(1, router.forward(0, x)[0], torch.ones_like(h), prefer=peer)
    assert router.sent[-1] == peer


def test_backward_falls_back_when_the_forward_peer_dies(two_stage_swarm):
    w, router = two_stage_swarm
    x, _ = next(w.batches(8, seed=0))
    h0, _ = router.forward(0, x)
    h1, peer = router.forward(1, h0)
    router.dead.add(peer)
    grad = router.backward(1, h0, torch.ones_like(h1), prefer=peer)
    assert grad.shape == h0.shape and router.sent[-1] != peer


def test_a_stage_with_no_live_peer_is_a_clear_error(two_stage_swarm):
    w, router = two_stage_swarm
    router.dead.update(PEER_IDS[:3])
    x, _ = next(w.batches(8, seed=0))
    with pytest.raises(RoutingError, match="no peer could serve stage 0 forward"):
        router.forward(0, x)


def test_unknown_stage_is_a_clear_error(two_stage_swarm):
    _, router = two_stage_swarm
    with pytest.raises(RoutingError, match="stages 0..1"):
        router.forward(2, torch.zeros(1, 64))


def test_an_unstarted_router_says_so():
    router = StageRouter(None, "exp", 1, wait_for_peers=0.0)
    router._fetch = lambda: {0: [ann(0)]}
    with pytest.raises(RoutingError, match="call start"):
        router.forward(0, torch.zeros(1, 64))


def test_oversized_messages_are_refused_before_sending():
    with pytest.raises(ServingError, match="smaller micro-batch"):
        pack_tensors("exp.s0.forward", [torch.zeros(2_000_000)])


def test_garbage_tensors_are_a_serving_error():
    msg = runtime_pb2.ExpertRequest(uid="x", tensors=[runtime_pb2.Tensor(buffer=b"abc", size=[5], dtype="float32")])
    with pytest.raises(ServingError, match="cannot be decoded"):
        unpack_tensors(msg, 1, "a forward request")
    with pytest.raises(ServingError, match="must carry 2"):
        unpack_tensors(msg, 2, "a backward request")


def test_a_stage_whose_only_peer_failed_once_is_not_abandoned(two_stage_swarm):
    w, router = two_stage_swarm
    router.fail_once.add(PEER_IDS[0])
    x, _ = next(w.batches(8, seed=0))
    with pytest.raises(RoutingError, match="ConnectionResetError"):
        router.forward(0, x)
    _, peer = router.forward(0, x)  # banned, but the only one: tried again at once instead of waiting out the ban
    assert peer == PEER_IDS[0]


def test_a_peer_that_stops_answering_costs_a_short_timeout_once_latency_is_known(two_stage_swarm):
    w, router = two_stage_swarm
    router.timeout, router.min_timeout = 30.0, 2.0
    x, _ = next(w.batches(8, seed=0))
    router.forward(0, x)
    assert router.timeouts[0] == 30.0  # nothing measured yet: the full timeout
    for _ in range(5):
        h, _ = router.forward(0, x)
        router.forward(1, h)
    router.hung.add(PEER_IDS[1])
    router.timeouts.clear()
    for _ in range(6):
        router.forward(1, h)
    assert router.timeouts and max(router.timeouts) == 2.0  # local calls take ms: the floor applies
    assert router.call_timeout(1, "backward") == 30.0  # backward of stage 1 never measured
