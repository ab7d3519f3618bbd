"""An experiment whose start is in the future (a chain experiment may set one): stage peers wait for round 0."""

from __future__ import annotations

import io
import threading
import types
from typing import ClassVar

import torch
from hivemind.p2p import PeerID

import swarm.apps.stage_peer as sp
from swarm.apps.config import load_config
from swarm.apps.events import EventWriter
from swarm.models import get_workload
from swarm.network.records import ExperimentRecord, StageAnnouncement
from swarm.rounds import clock
from swarm.rounds.averager import RoundResult, round_group_bits

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
ME = PeerID(bytes([0, 16, 1]) * 6).to_base58()
T0 = 1_000_000.0  # the fake DHT clock's origin


class FakeTime:
    """The DHT clock; a `stop.wait(t)` advances it by t, so the test's rounds pass instantly."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class ClockStop:
    def __init__(self, time: FakeTime, until: float) -> None:
        self.time, self.until = time, until

    def is_set(self) -> bool:
        return self.time.now >= self.until

    def wait(self, timeout: float | None = None) -> bool:
        self.time.now += timeout or 0.0
        return self.is_set()


class FakeDHT:
    class _Id:
        def to_base58(self) -> str:
            return ME

    peer_id = _Id()


class FakeServer:
    announced: ClassVar[list[int]] = []

    def __init__(self, dht, experiment, workload, stage, module, **kw) -> None:
        self.stage, self.module, self.peer_id, self.requests = stage, module, ME, 0
        self.params_lock = threading.RLock()
        self._version = 0
        self.worker = types.SimpleNamespace(module=module, optimizer=None, max_batch=None, cap_reason="",
                                            limit_kept=lambda **_: None)  # the memory plan's bound on kept activations

    @property
    def params_version(self) -> int:
        return self._version

    @params_version.setter
    def params_version(self, v: int) -> None:  # what the real server announces on the DHT (must be >= 0)
        StageAnnouncement(peer_id=ME, stage=self.stage, throughput=1.0, load=0, params_version=v)
        self._version = v
        FakeServer.announced.append(v)

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class FakeAverager:
    def __init__(self, dht, experiment, stage, module, **kw) -> None:
        self.last_delta, self.last_commitment = torch.zeros(1), None

    def load_state_from_peers(self, timeout: float) -> bool:
        return False

    def step(self, round: int, timeout: float, stop=None) -> RoundResult:
        round_group_bits(round)  # the real averager's check: a negative round raises ValueError
        return RoundResult(round=round, group_size=1, averaged=False, bytes_sent=0, bytes_received=0, seconds=0.0,
                           update_norm=0.0)  # fmt: skip

    def shutdown(self) -> None:
        pass


def test_a_stage_peer_waits_for_an_experiment_that_starts_in_the_future(monkeypatch):
    time = FakeTime()
    monkeypatch.setattr(clock, "get_dht_time", time)
    monkeypatch.setattr(sp, "StageServer", FakeServer)
    monkeypatch.setattr(sp, "StageAverager", FakeAverager)
    monkeypatch.setattr(sp, "fetch_stage_announcements", lambda dht, name: {0: [], 1: []})
    monkeypatch.setattr(sp, "publish_experiment", lambda dht, record: True)
    FakeServer.announced = []
    record = ExperimentRecord(name="exp", workload="digits", n_stages=2, round_duration=1.0, start_time=T0 + 2.5)
    config = load_config({"initial_peers": [PEER], "stage": 0, "rebalance": False, "verify": False})
    rounds: list[int] = []
    peer = sp.StagePeer(config, FakeDHT(), record, get_workload("digits"), EventWriter("p", io.StringIO()),
                        hooks=[lambda report: rounds.append(report.round)])  # fmt: skip
    assert peer.clock.current_round() == -3  # the clock really is before the start
    peer.run(ClockStop(time, until=T0 + 6.0))
    assert rounds == [0, 1, 2]  # no round before the start, then every round
    assert FakeServer.announced and min(FakeServer.announced) == 0
    assert peer.rounds_done == 3
    assert peer.server is None  # shut down on the way out
