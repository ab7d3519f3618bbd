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


def test_resume_restores_the_stage_once_and_numbers_rounds_on(tmp_path: Path):
    saved = get_workload("digits").build_stages(2, seed=0)
    with torch.no_grad():
        for m in saved:
            for p in m.parameters():
                p.mul_(-1)
    src = ckpt.round_dir(tmp_path / "a", 9)
    for s, m in enumerate(saved):
        ckpt.save_stage(src, s, m, {"round": 9})
    fresh = get_workload("digits").build_stage(2, 1, seed=0)
    hook = ckpt.CheckpointHook(tmp_path / "b", every=2, resume_from=src, offset=10)
    hook(_report(1, fresh, 0, "C"))  # first round: restore, do not save
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), saved[1].parameters(), strict=True))
    with torch.no_grad():
        next(fresh.parameters()).add_(1.0)
    hook(_report(1, fresh, 1, "C"))  # global round 11: saved, not restored again
    assert (ckpt.round_dir(tmp_path / "b", 11) / "stage-1.safetensors").exists()
    assert not torch.equal(next(fresh.parameters()), next(saved[1].parameters()))
    with pytest.raises(ckpt.CheckpointError, match="does not fit"):
        ckpt.load_stage(src, 1, get_workload("digits").build_stage(2, 0, seed=0))


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
