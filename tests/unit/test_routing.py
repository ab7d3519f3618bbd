"""Routing choice and retries, with the network replaced by real `StageServer` handlers called in-process."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
import torch
from hivemind.p2p import PeerID
from hivemind.proto import runtime_pb2

from swarm.models import get_workload
from swarm.network.records import StageAnnouncement
from swarm.pipeline import wire
from swarm.pipeline.routing import RequestRejected, RoutingError, StageRouter, Verdict, choose_peer, classify
from swarm.pipeline.serving import StageServer
from swarm.pipeline.trainer import RemoteStages, run_training
from swarm.pipeline.wire import Status

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
        pytest.param(
            [ann(0, throughput=0.0), ann(1, throughput=20.0)], {}, 0.5, id="unmeasured-is-stage-average"
        ),
    ],
)
def test_choice_is_weighted_by_throughput_over_one_plus_load(peers, in_flight, share_of_first):
    rng = random.Random(0)
    counts = Counter(choose_peer(peers, rng, in_flight=in_flight).peer_id for _ in range(4000))
    assert counts[PEER_IDS[0]] / 4000 == pytest.approx(share_of_first, abs=0.03)


def test_excluded_peers_are_never_chosen():
    rng = random.Random(4)
    peers = [ann(0), ann(1), ann(2)]
    assert {choose_peer(peers, rng, exclude={PEER_IDS[0], PEER_IDS[2]}).peer_id for _ in range(50)} == {
        PEER_IDS[1]
    }
    assert choose_peer(peers, rng, exclude=set(PEER_IDS)) is None
    assert choose_peer([], rng) is None


def local_server(w, stage: int, module, **kw) -> StageServer:
    """A stage server whose handlers are called in-process (no DHT, no p2pd)."""
    return StageServer(None, "exp", w, stage, module, lr=3e-3, **kw)


class FakeSwarm(StageRouter):
    """A router whose peers are real StageServer handlers called in-process; `dead` peers fail every call like a
    vanished peer."""

    def __init__(self, announcements: list[StageAnnouncement], servers: dict[str, StageServer], **kw):
        super().__init__(
            None, "exp", 1 + max(a.stage for a in announcements), seed=0, wait_for_peers=0.0, **kw
        )
        self.table, self.servers, self.dead, self.sent = announcements, servers, set(), []
        self.workers = {peer: server.worker for peer, server in servers.items()}
        self.fail_once: set[str] = set()
        self.hung: set[str] = set()
        self.timeouts: list[float] = []

    def _fetch(self):
        out: dict[int, list[StageAnnouncement]] = {}
        for a in self.table:
            out.setdefault(a.stage, []).append(a)
        return out

    def _send(self, peer, name, request, timeout):
        self.sent.append((peer, len(request.tensors)))
        self.timeouts.append(timeout)
        if peer in self.dead or peer in self.hung:
            raise TimeoutError
        if peer in self.fail_once:
            self.fail_once.discard(peer)
            raise ConnectionResetError
        return asyncio.run(self.servers[peer]._serve(request, name.rsplit(".", 1)[1]))


@pytest.fixture
def two_stage_swarm():
    w = get_workload("digits")
    s0, s1 = w.build_stages(2, seed=0)
    s1b = w.build_stages(2, seed=0)[1]
    table = [ann(0, stage=0), ann(1, stage=1), ann(2, stage=1)]
    servers = {PEER_IDS[0]: local_server(w, 0, s0), PEER_IDS[1]: local_server(w, 1, s1),
               PEER_IDS[2]: local_server(w, 1, s1b)}  # fmt: skip
    return w, FakeSwarm(table, servers)


def test_a_dead_peer_is_retried_on_another_peer_of_its_stage(two_stage_swarm):
    w, router = two_stage_swarm
    router.dead.add(PEER_IDS[1])
    report = run_training(RemoteStages(router), w, w.batches(32, seed=0), steps=30)
    assert len(report.steps) == 30
    assert report.final_loss < report.steps[0].loss
    assert router.workers[PEER_IDS[2]].steps == 30 and router.workers[PEER_IDS[1]].steps == 0
    assert [p for p, _ in router.sent].count(PEER_IDS[1]) == 1  # banned after its first failure


def test_backward_goes_to_the_forward_peer_while_it_lives(two_stage_swarm):
    w, router = two_stage_swarm
    x, _ = next(w.batches(8, seed=0))
    h, peer = router.forward(1, router.forward(0, x)[0])
    router.sent.clear()
    router.backward(1, router.forward(0, x)[0], torch.ones_like(h), prefer=peer)
    assert router.sent[-1][0] == peer


def test_backward_falls_back_when_the_forward_peer_dies(two_stage_swarm):
    w, router = two_stage_swarm
    x, _ = next(w.batches(8, seed=0))
    h0, _ = router.forward(0, x)
    h1, peer = router.forward(1, h0)
    router.dead.add(peer)
    grad = router.backward(1, h0, torch.ones_like(h1), prefer=peer)
    assert grad.shape == h0.shape and router.sent[-1][0] != peer


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


def test_oversized_messages_are_refused_before_sending(two_stage_swarm):
    with pytest.raises(wire.WireError, match="smaller micro-batch"):
        wire.pack(runtime_pb2.ExpertRequest, [torch.zeros(2_000_000)], uid="exp.s0.forward")
    _, router = two_stage_swarm
    with pytest.raises(RequestRejected, match="smaller micro-batch"):  # a RoutingError, as the CLI expects
        router.forward(1, torch.zeros(40_000, 128))
    assert router.sent == []


def test_garbage_tensors_are_a_wire_error():
    msg = runtime_pb2.ExpertRequest(
        uid="x", tensors=[runtime_pb2.Tensor(buffer=b"abc", size=[5], dtype="float32")]
    )
    with pytest.raises(wire.WireError, match="cannot be decoded"):
        wire.unpack(msg, 1, "a forward request")
    with pytest.raises(wire.WireError, match="must carry 2"):
        wire.unpack(msg, 2, "a backward request")


def test_a_stage_whose_only_peer_failed_once_is_not_abandoned(two_stage_swarm):
    w, router = two_stage_swarm
    router.fail_once.add(PEER_IDS[0])
    x, _ = next(w.batches(8, seed=0))
    with pytest.raises(RoutingError, match="ConnectionResetError"):
        router.forward(0, x)
    _, peer = router.forward(
        0, x
    )  # banned, but the only one: tried again at once instead of waiting out the ban
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
    assert router.timeouts and 2.0 <= min(router.timeouts) and max(router.timeouts) < 30.0  # floor, not the full
    assert router.call_timeout(1, "backward") == 30.0  # backward of stage 1 never measured


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (Status.OK, Verdict.ACCEPT),
        (Status.REJECTED, Verdict.REJECT),
        (Status.BUSY, Verdict.RETRY),
        (Status.MISSING, Verdict.RESEND),
        (Status.WRONG_STAGE, Verdict.BAN),
        (Status.ERROR, Verdict.BAN),
        (TimeoutError(), Verdict.BAN),
        (ConnectionResetError(), Verdict.BAN),
        (wire.WireError("garbage response"), Verdict.BAN),
    ],
)
def test_every_outcome_has_one_verdict(outcome, verdict):
    assert classify(outcome) is verdict


def _serve(server: StageServer, kind: str, tensors, uid: str | None = None, **meta):
    request = wire.pack(
        runtime_pb2.ExpertRequest, tensors, uid=uid or f"exp.s{server.stage}.{kind}", meta=meta
    )
    response = asyncio.run(server._serve(request, kind))
    return wire.response_status(response)[0], response


def test_the_server_answers_each_failure_with_its_status():
    w = get_workload("digits")
    server = local_server(w, 0, w.build_stage(2, 0))
    x, _ = next(w.batches(4, seed=0))
    assert _serve(server, "forward", [x])[0] is Status.OK
    assert (
        _serve(server, "forward", [torch.zeros(4, 7)])[0] is Status.REJECTED
    )  # wrong shape: checked before compute
    assert _serve(server, "forward", [x.long()])[0] is Status.REJECTED  # wrong dtype
    garbage = runtime_pb2.ExpertRequest(
        uid="exp.s0.forward", tensors=[runtime_pb2.Tensor(buffer=b"abc", size=[4, 64], dtype="float32")]
    )
    assert wire.response_status(asyncio.run(server._serve(garbage, "forward")))[0] is Status.REJECTED
    assert _serve(server, "forward", [x], uid="exp.s1.forward")[0] is Status.WRONG_STAGE
    assert _serve(server, "backward", [torch.ones(4, 128)], mb="never-seen")[0] is Status.MISSING
    server.worker.forward = lambda *a, **k: 1 / 0  # a bug in the stage's compute
    status, response = _serve(server, "forward", [x])
    assert status is Status.ERROR and "ZeroDivisionError" in wire.response_status(response)[1]
    assert (
        server.answers[Status.REJECTED] == 3 and server.answers[Status.ERROR] == 1 and server.in_flight == 0
    )


def test_a_full_queue_answers_busy():
    w = get_workload("digits")
    server = local_server(w, 0, w.build_stage(2, 0), max_queue=0)
    assert _serve(server, "forward", [next(w.batches(4, seed=0))[0]])[0] is Status.BUSY


def test_a_request_accepted_before_a_stage_switch_is_not_computed_on_the_new_stage():
    w = get_workload("digits")
    server = local_server(w, 0, w.build_stage(2, 0))
    compute = server._compute

    class SwitchOnSubmit:  # the switch lands between accepting the request and computing it
        def submit(self, fn, *args):
            server.stage = 1
            return compute.submit(fn, *args)

    server._compute = SwitchOnSubmit()
    assert _serve(server, "forward", [next(w.batches(4, seed=0))[0]])[0] is Status.WRONG_STAGE
    assert server.worker.steps == 0


def test_a_bad_input_is_the_callers_error_and_bans_no_one(two_stage_swarm):
    _, router = two_stage_swarm
    with pytest.raises(RequestRejected, match="rejected the input.*64 features"):
        router.forward(0, torch.zeros(4, 7))
    assert len(router.sent) == 1 and router.retries == 0 and router.peers(0) == router.refresh()[0]


def test_a_compute_failure_bans_the_peer_and_is_retried_elsewhere(two_stage_swarm):
    w, router = two_stage_swarm
    broken = router.servers[PEER_IDS[1]]
    broken.worker.forward = lambda *a, **k: 1 / 0
    x, _ = next(w.batches(8, seed=0))
    h, _ = router.forward(0, x)
    served_by = {router.forward(1, h)[1] for _ in range(8)}
    assert served_by == {PEER_IDS[2]}
    assert [a.peer_id for a in router.peers(1)] == [PEER_IDS[2]]  # banned
    assert broken.answers[Status.ERROR] == 1  # asked once, then avoided


def test_a_busy_peer_is_skipped_without_a_ban(two_stage_swarm):
    w, router = two_stage_swarm
    router.servers[PEER_IDS[1]].max_queue = 0
    x, _ = next(w.batches(8, seed=0))
    h, _ = router.forward(0, x)
    assert {router.forward(1, h)[1] for _ in range(8)} == {PEER_IDS[2]}
    assert len(router.peers(1)) == 2


def test_backward_sends_only_the_gradient_to_the_peer_that_kept_the_activations(two_stage_swarm):
    w, router = two_stage_swarm
    x, _ = next(w.batches(8, seed=0))
    h0, p0 = router.forward(0, x, mb="m1")
    h1, p1 = router.forward(1, h0, mb="m1")
    assert router.workers[p1].kept == 1
    router.sent.clear()
    g0 = router.backward(1, h0, torch.ones_like(h1), prefer=p1, mb="m1")
    assert router.sent == [(p1, 1)] and router.workers[p1].kept == 0 and g0.shape == h0.shape
    # a peer that dropped the activations (too many in flight) says so, and gets the input again
    router.workers[p0]._kept.clear()
    router.sent.clear()
    assert router.backward(0, x, g0, prefer=p0, mb="m1").shape == x.shape
    assert router.sent == [(p0, 1), (p0, 2)] and router.retries == 0 and router.workers[p0].steps == 1


def test_training_with_int8_activations_learns(two_stage_swarm):
    w, router = two_stage_swarm
    router.codec = "int8"
    report = run_training(RemoteStages(router), w, w.batches(32, seed=0), steps=40, concurrency=2)
    assert report.final_loss < 0.6 * report.steps[0].loss


def test_the_last_stage_takes_the_targets_and_answers_loss_and_gradient_in_one_call(two_stage_swarm):
    w, router = two_stage_swarm
    x, y = next(w.batches(8, seed=0))
    h, _ = router.forward(0, x)
    router.sent.clear()
    loss, grad = router.forward_loss(1, h, y)
    assert 1.0 < loss < 4.0 and grad.shape == h.shape and len(router.sent) == 1
    with pytest.raises(RequestRejected, match="targets do not fit"):
        router.forward_loss(1, h, y[:3])
    assert len(router.peers(1)) == 2  # nobody banned for the caller's targets
