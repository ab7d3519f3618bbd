"""The stage peer's loop with its network parts replaced by fakes: round hooks, resync, rebalancing, bad --stage."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from hivemind.p2p import PeerID
from hivemind.utils import get_dht_time

import swarm.apps.stage_peer as sp
from swarm.apps.config import ConfigError, load_config
from swarm.apps.events import EventWriter, StageChanged, Synced, parse_event
from swarm.models import get_workload
from swarm.network.records import ExperimentRecord, StageAnnouncement
from swarm.rounds.averager import RoundResult

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
ME, OTHER = (PeerID(bytes([0, 16, i]) * 6).to_base58() for i in (1, 2))
TRAIN_STEP = 0.5  # what "training" adds to every parameter during a round
AVERAGING_SHIFT = 1.0  # what the fake averaging adds after the round


class FakeDHT:
    class _Id:
        def to_base58(self) -> str:
            return ME

    peer_id = _Id()


@dataclass
class FakeServer:
    dht: object
    experiment: str
    workload: object
    stage: int
    module: torch.nn.Module
    lr: float = 0.0
    wallet: str | None = None
    device: str = "cpu"
    params_lock: threading.RLock = field(default_factory=threading.RLock)
    peer_id: str = ME
    requests: int = 0
    params_version: int = 0
    started: bool = False
    switches: list[int] = field(default_factory=list)

    class worker:  # mimics StageServer.worker
        throughput = 10.0
        optimizer = None  # the round report carries it (for checkpoints)

        @staticmethod
        def limit_kept(**_) -> None:  # the memory plan's bound on kept activations
            pass

    def start(self) -> None:
        self.started = True

    def switch_stage(self, stage: int, module: torch.nn.Module) -> None:
        self.stage, self.module = stage, module
        self.switches.append(stage)

    def shutdown(self) -> None:
        self.started = False


class FakeAverager:
    created: ClassVar[list[FakeAverager]] = []

    def __init__(self, dht, experiment, stage, module, **kwargs) -> None:
        self.stage, self.module, self.kwargs = stage, module, kwargs
        self.loaded = self.shut = False
        self.anchor = self._flat()
        self.last_delta, self.last_commitment = None, None
        FakeAverager.created.append(self)

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def load_state_from_peers(self, timeout: float) -> bool:
        with torch.no_grad():
            for p in self.module.parameters():
                p.fill_(3.0)  # "the stage's current parameters" held by the other peer
        self.anchor = self._flat()
        self.loaded = True
        return True

    def step(self, round: int, timeout: float, stop=None) -> RoundResult:
        """Like both averagers: Δ = parameters at the round's end - anchor; the shift moves the anchor too."""
        snapshot = self._flat()
        self.last_delta = snapshot - self.anchor
        with torch.no_grad():
            for p in self.module.parameters():
                p.add_(AVERAGING_SHIFT)
        self.anchor = snapshot + AVERAGING_SHIFT
        return RoundResult(round=round, group_size=2, averaged=True, bytes_sent=10, bytes_received=10, seconds=0.0,
                           update_norm=0.0)  # fmt: skip

    def shutdown(self) -> None:
        self.shut = True


class TrainingStop:
    """A stop event whose waits stand for a round of training (they add TRAIN_STEP) and that stops after N."""

    def __init__(self, peer: sp.StagePeer, rounds: int) -> None:
        self.peer, self.rounds, self.waits = peer, rounds, 0

    def is_set(self) -> bool:
        return self.waits >= self.rounds

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        with torch.no_grad():
            for p in self.peer.server.module.parameters():
                p.add_(TRAIN_STEP)
        return False


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> dict:
    announcements = {0: [], 1: [StageAnnouncement(peer_id=OTHER, stage=1, throughput=5.0, load=0, params_version=0)]}
    FakeAverager.created = []
    monkeypatch.setattr(sp, "StageServer", FakeServer)
    monkeypatch.setattr(sp, "StageAverager", FakeAverager)
    monkeypatch.setattr(sp, "VerifiedAverager", FakeAverager)
    monkeypatch.setattr(sp, "fetch_stage_announcements", lambda dht, name: announcements)
    monkeypatch.setattr(sp, "publish_experiment", lambda dht, record: True)
    return announcements


def make_peer(out: io.StringIO, hooks=(), **settings) -> sp.StagePeer:
    config = load_config({"initial_peers": [PEER], **settings})
    record = ExperimentRecord(name="exp", workload="digits", n_stages=2, round_duration=3600.0,
                              start_time=get_dht_time())  # fmt: skip
    return sp.StagePeer(config, FakeDHT(), record, get_workload("digits"), EventWriter("p", out), hooks=list(hooks))


@pytest.mark.parametrize("verify", [True, False])
def test_round_hooks_get_the_averagers_update_and_a_failing_hook_does_not_stop_training(fakes, verify):
    reports: list[sp.RoundReport] = []

    def broken(report: sp.RoundReport) -> None:
        raise RuntimeError("prover crashed")

    peer = make_peer(io.StringIO(), hooks=[broken, reports.append], stage=0, verify=verify)
    peer.run(TrainingStop(peer, rounds=3))
    assert len(reports) == 3 and peer.rounds_done == 3
    for report in reports:
        assert report.stage == 0 and report.peer_id == ME and report.result.group_size == 2
        n_params = sum(p.numel() for p in report.module.parameters())
        # only the round's own training, not the averaging shift applied after the previous round
        assert torch.allclose(report.delta, torch.full((n_params,), TRAIN_STEP))
        assert report.commitment is None  # the fake commits nothing
    averager = FakeAverager.created[0]
    assert averager.kwargs["lock"] is reports[0].params_lock  # averaging takes the server's lock
    assert ("clock" in averager.kwargs) == verify  # the verified averager runs its phases on the round clock


def test_joiner_resyncs_from_a_peer_of_its_stage_before_serving(fakes):
    out = io.StringIO()
    peer = make_peer(out, stage=1, rebalance=False)
    stop = TrainingStop(peer, rounds=0)
    peer.run(stop)
    (averager,) = FakeAverager.created
    assert averager.loaded and averager.stage == 1 and averager.shut
    synced = [e for e in map(parse_event, out.getvalue().splitlines()) if isinstance(e, Synced)]
    assert synced[0].from_peers and synced[0].distance_from_seed > 0


def test_an_unpinned_peer_picks_the_empty_stage_and_rebalances_after_its_cooldown(fakes, monkeypatch):
    targets: list[int] = []

    def always_move(my_stage, announcements, n_stages, **kw):
        targets.append(my_stage)
        return 1 - my_stage

    monkeypatch.setattr(sp, "rebalance_target", always_move)
    out = io.StringIO()
    peer = make_peer(out)
    rounds = sp.REBALANCE_COOLDOWN + sp.REBALANCE_EVERY
    peer.run(TrainingStop(peer, rounds=rounds))
    assert FakeAverager.created[0].stage == 0  # stage 0 had nobody
    changes = [e for e in map(parse_event, out.getvalue().splitlines()) if isinstance(e, StageChanged)]
    # looked only every REBALANCE_EVERY rounds, and not again during the cooldown after moving
    assert [(c.old, c.new) for c in changes] == [(0, 1)] and len(targets) == 1
    assert peer.server is None  # shut down on the way out
    first, second = FakeAverager.created
    assert first.shut and second.stage == 1 and second.loaded and second.shut


def test_a_stage_that_does_not_exist_is_a_config_error(fakes):
    peer = make_peer(io.StringIO(), stage=5)
    with pytest.raises(ConfigError, match="--stage 5 does not exist"):
        peer.run(threading.Event())
