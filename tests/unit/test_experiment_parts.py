"""swarm-experiment's parts without a swarm: the checkpoint hook (real modules, real safetensors files), the
chain summary's arithmetic, the dashboard's HTTP API and server-sent events (aiohttp test client)."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from swarm.apps.experiment import checkpoint as ckpt
from swarm.apps.experiment.monitor import ChainReader
from swarm.apps.experiment.web import make_app
from swarm.models import get_workload


def _report(stage: int, module, round_: int, peer: str):
    exp = SimpleNamespace(name="t", workload="digits", n_stages=2, chain_experiment_id=None)
    return SimpleNamespace(experiment=exp, round=round_, stage=stage, peer_id=peer, module=module,
                           params_lock=threading.Lock(), result=SimpleNamespace(group_size=2))  # fmt: skip


def test_one_peer_per_stage_saves_and_the_manifest_completes(tmp_path: Path):
    stages = get_workload("digits").build_stages(2, seed=0)
    with torch.no_grad():
        for m in stages:
            for p in m.parameters():
                p.add_(0.5)
    hook_a, hook_b = ckpt.CheckpointHook(tmp_path, every=2), ckpt.CheckpointHook(tmp_path, every=2)
    hook_a(_report(0, stages[0], 0, "A"))  # round 0: (0 + 1) % 2 != 0, nothing
    assert ckpt.list_checkpoints(tmp_path) == []
    hook_a(_report(0, stages[0], 1, "A"))
    hook_b(_report(0, stages[0], 1, "B"))  # the second peer of stage 0 finds the stage claimed
    folder = ckpt.round_dir(tmp_path, 1)
    assert json.loads((folder / "stage-0.json").read_text())["peer_id"] == "A"
    assert ckpt.list_checkpoints(tmp_path) == [(1, folder, False)]
    hook_b(_report(1, stages[1], 1, "B"))
    manifest = ckpt.read_manifest(folder)
    assert manifest["round"] == 1 and [s["peer_id"] for s in manifest["stages"]] == ["A", "B"]
    assert manifest["outer_optimizer"]["kind"] == "sgd" and manifest["outer_optimizer"]["state"] is None
    _, loaded = ckpt.load_model(folder)
    for a, b in zip(stages, loaded, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb)
    assert math.isfinite(ckpt.evaluate(folder)) and ckpt.latest_complete(tmp_path) == folder


def _trained(optimizer: str, outer: str = "nesterov"):
    """Stage 1 of digits after a few local steps of `optimizer` and two outer steps (nesterov: momentum != 0)."""
    from swarm.pipeline.memory import make_optimizer

    module = get_workload("digits").build_stage(2, 1, seed=0)
    opt = make_optimizer(module.parameters(), 1e-2, optimizer)
    averager = _averager(module, outer)
    gen = torch.Generator().manual_seed(1)
    for r in range(2):
        for _ in range(2):
            x = torch.randn(8, next(module.parameters()).shape[1], generator=gen)
            opt.zero_grad()
            module(x).square().mean().backward()
            opt.step()
        params = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
        averager.anchor, averager.anchor_round = averager.outer.step(averager.anchor, params - averager.anchor), r
    return module, opt, averager


def _averager(module, outer: str):
    """A real VerifiedAverager that is not started (no DHT)."""
    from swarm.rounds.clock import RoundClock
    from swarm.rounds.verified import VerifiedAverager

    dht = SimpleNamespace(peer_id=SimpleNamespace(to_base58=lambda: "QmTest"))
    averager = VerifiedAverager(dht, "t", 1, module, clock=RoundClock(0.0, 10.0), outer=outer, start=False)
    averager._announce = lambda: None  # no DHT to announce the restored anchor on
    return averager


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adam8bit"])
def test_a_checkpoint_holds_and_restores_the_whole_training_state(tmp_path: Path, optimizer: str,
                                                                   monkeypatch: pytest.MonkeyPatch):
    from swarm.pipeline.memory import make_optimizer

    monkeypatch.setattr(ckpt, "RESTORED", {})

    module, opt, averager = _trained(optimizer)
    assert averager.outer.momentum is not None and float(averager.outer.momentum.norm()) > 0
    report = SimpleNamespace(**vars(_report(1, module, 9, "A")), averager=averager, optimizer=opt)
    ckpt.CheckpointHook(tmp_path / "a", every=5)(report)  # round 9: (9 + 1) % 5 == 0, saved
    src = ckpt.round_dir(tmp_path / "a", 9)
    meta = json.loads((src / "stage-1.json").read_text())
    ts = meta["training_state"]
    assert ts["anchor_round"] == 1 and ts["outer"]["kind"] == "nesterov" and ts["optimizer"]["kind"] == optimizer
    saved = load_file(str(src / ts["file"]))
    assert ckpt.fingerprint(saved) == ts["fingerprint"]
    assert {"anchor", "outer.momentum"} <= set(saved) and any(k.startswith("optimizer/0/") for k in saved)

    fresh = get_workload("digits").build_stage(2, 1, seed=0)
    fresh_opt, fresh_avg = make_optimizer(fresh.parameters(), 1e-2, optimizer), _averager(fresh, "nesterov")
    restored = ckpt.restore_stage(src, 1, module=fresh, lock=threading.Lock(), averager=fresh_avg, optimizer=fresh_opt)
    assert restored["fingerprint"] == ts["fingerprint"]  # read back from the live averager and optimizer
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), module.parameters(), strict=True))
    assert torch.equal(fresh_avg.anchor, averager.anchor) and fresh_avg.anchor_round == -1
    assert torch.equal(fresh_avg.outer.momentum, averager.outer.momentum)
    live, _ = ckpt.training_state(None, fresh_opt)
    want, _ = ckpt.training_state(None, opt)
    assert live.keys() == want.keys() and all(torch.equal(live[k], want[k]) for k in want)
    assert fresh_opt.state_dict()["state"][0].get("step") == opt.state_dict()["state"][0].get("step")
    # the same next step from the same state: the resumed optimizer goes on exactly where the saved one was
    x = torch.randn(4, next(module.parameters()).shape[1], generator=torch.Generator().manual_seed(2))
    for m, o in ((module, opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), module.parameters(), strict=True))

    # the resumed stage's next checkpoint says where it came from; the rounds are numbered on from the offset
    ckpt.CheckpointHook(tmp_path / "b", every=2, offset=10)(
        SimpleNamespace(**vars(_report(1, fresh, 1, "C")), averager=fresh_avg, optimizer=fresh_opt))
    again = json.loads((ckpt.round_dir(tmp_path / "b", 11) / "stage-1.json").read_text())
    assert again["resumed_from"]["fingerprint"] == ts["fingerprint"] and again["resumed_from"]["round"] == 9
    averager.shutdown()
    fresh_avg.shutdown()


def test_restoring_into_another_kind_or_from_parameters_only(tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch):
    from swarm.pipeline.memory import make_optimizer

    monkeypatch.setattr(ckpt, "RESTORED", {})

    module, opt, averager = _trained("adam")
    src = ckpt.round_dir(tmp_path, 4)
    ckpt.save_stage(src, 1, module, {"round": 4}, averager=averager, optimizer=opt)
    ts = json.loads((src / "stage-1.json").read_text())["training_state"]
    fresh = get_workload("digits").build_stage(2, 1, seed=0)
    sgd_opt, sgd_avg = make_optimizer(fresh.parameters(), 1e-2, "sgd"), _averager(fresh, "sgd")
    restored = ckpt.restore_stage(src, 1, module=fresh, averager=sgd_avg, optimizer=sgd_opt)
    assert "optimizer's state starts afresh" in caplog.text or "state starts afresh" in caplog.text
    assert "momentum starts at zero" in caplog.text
    assert restored["fingerprint"] != ts["fingerprint"] and restored["parts"] == ["parameters", "anchor"]
    assert torch.equal(sgd_avg.anchor, averager.anchor) and sgd_avg.outer.momentum is None

    old = ckpt.round_dir(tmp_path, 5)  # a checkpoint of parameters only (no averager, no optimizer)
    ckpt.save_stage(old, 1, module, {"round": 5})
    assert "training_state" not in json.loads((old / "stage-1.json").read_text())
    fresh2 = get_workload("digits").build_stage(2, 1, seed=0)
    avg2 = _averager(fresh2, "sgd")
    ckpt.restore_stage(old, 1, module=fresh2, averager=avg2)
    params = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    assert torch.equal(avg2.anchor, params)  # the anchor becomes the restored parameters, not the seed's
    with pytest.raises(ckpt.CheckpointError, match="does not fit"):
        ckpt.restore_stage(src, 1, module=get_workload("digits").build_stage(2, 0, seed=0))
    for a in (averager, sgd_avg, avg2):
        a.shutdown()


def test_the_swarms_loss_is_the_mean_of_the_trainers_reports_at_all_their_samples():
    from swarm.apps.experiment.monitor import Monitor
    from swarm.network.records import TrainerReport

    mon = Monitor.__new__(Monitor)
    mon._trainers, mon._live_trainers, mon.swarm_losses = {}, [], []

    def rep(peer: str, samples: int, loss: float, t: float) -> TrainerReport:
        return TrainerReport(peer_id=peer, steps=samples // 32, samples=samples, loss=loss, time=t)

    mon._note_trainers([rep("A", 320, 2.0, 10.0), rep("B", 64, 1.0, 11.0)])
    assert mon.swarm_losses == [[11.0, 384.0, 1.5]]
    mon._note_trainers([rep("A", 320, 2.0, 10.0), rep("B", 64, 1.0, 11.0)])  # nothing new: no point
    assert len(mon.swarm_losses) == 1
    mon._note_trainers([rep("A", 640, 0.5, 20.0)])  # B left: its samples still count, its loss no longer
    assert mon.swarm_losses[-1] == [20.0, 704.0, 0.5] and [r.peer_id for r in mon._live_trainers] == ["A"]
    with pytest.raises(ValueError, match="loss"):
        TrainerReport(peer_id="A", steps=1, samples=1, loss=float("nan"), time=1.0)


def test_chain_summary_sums_the_chains_own_amounts():
    reader = ChainReader.__new__(ChainReader)
    big = 10**18 + 1  # more than a float holds exactly: it must stay exact
    reader.events = {
        "Contributed": [{"peer": "0xA", "round": 0}, {"peer": "0xB", "round": 0}, {"peer": "0xA", "round": 1}],
        "Claimed": [{"peer": "0xA", "amount": big}, {"peer": "0xA", "amount": 2}, {"peer": "0xB", "amount": 5}],
        "RoundFinalized": [{"round": 0}], "AuditOpened": [], "AuditAnswered": [],
        "Slashed": [{"peer": "0xC", "amount": 7}],
    }  # fmt: skip
    s = reader.summary(pool=123, block=9, reward_per_round=10**19)
    rows = {r["peer"]: r for r in s["rewards"]}
    assert rows["0xA"]["claimed_wei"] == str(big + 2) and rows["0xA"]["contributions"] == 2
    assert rows["0xB"]["claimed_wei"] == "5" and rows["0xC"]["slashed_wei"] == "7"
    assert s["paid_wei"] == str(big + 7) and s["pool_wei"] == "123" and s["proven_rounds"] == 2


class _FakeMonitor:
    def __init__(self) -> None:
        self.version, self.snap = 1, {"health": {"ok": True}, "round": 3, "loss": [[0.0, 32.0, math.nan]]}

    def get(self):
        return self.version, self.snap


async def test_dashboard_api_and_stream(aiohttp_client=None):
    from aiohttp.test_utils import TestClient, TestServer

    monitor = _FakeMonitor()
    async with TestClient(TestServer(make_app(monitor))) as client:
        page = await client.get("/")
        assert page.status == 200 and "/static/app.js" in await page.text()
        for asset in ("/static/app.js", "/static/style.css"):
            assert (await client.get(asset)).status == 200
        state = await (await client.get("/api/state")).json()
        assert state["round"] == 3 and state["loss"][0][2] is None  # NaN is not JSON: it becomes null
        assert (await client.get("/api/health")).status == 200
        resp = await client.get("/api/stream")
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"event: state\nid: 1\ndata: ")
        monitor.version, monitor.snap = 2, {"round": 4}
        second = await resp.content.readuntil(b"\n\n")
        assert b"id: 2" in second and json.loads(second.split(b"data: ", 1)[1]) == {"round": 4}
        resp.close()


def test_a_stage_peer_starts_an_unserved_stage_from_the_checkpoint_and_a_served_one_from_its_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import io

    import test_stage_peer as fake  # the stage peer's loop with fake network parts (tests/unit/test_stage_peer.py)

    monkeypatch.setattr(ckpt, "RESTORED", {})  # what this process restored: not left to the other tests

    announcements = {0: [], 1: [fake.StageAnnouncement(peer_id=fake.OTHER, stage=1, throughput=5.0, load=0,
                                                       params_version=0)]}  # fmt: skip
    for name, value in (("StageServer", fake.FakeServer), ("StageAverager", fake.FakeAverager),
                        ("VerifiedAverager", fake.FakeAverager)):  # as test_stage_peer's `fakes` fixture
        monkeypatch.setattr(fake.sp, name, value)
    saved = get_workload("digits").build_stages(2, seed=0)
    with torch.no_grad():
        for m in saved:
            for p in m.parameters():
                p.fill_(7.0)
    folder = ckpt.round_dir(tmp_path, 3)
    for s, m in enumerate(saved):
        ckpt.save_stage(folder, s, m, {"round": 3})
    ckpt.complete_manifest(folder, 2, {"round": 3})
    for stage, want in ((0, 7.0), (1, 3.0)):  # stage 1 is served by another peer: its parameters (3.0) win
        peer = fake.make_peer(io.StringIO(), stage=stage, resume_from=folder)
        peer._join(stage, announcements)
        assert all(bool((p == want).all()) for p in peer.server.module.parameters()), stage
    assert ckpt.RESTORED[0]["from"] == str(folder) and ckpt.RESTORED[0]["parts"] == ["parameters"]
