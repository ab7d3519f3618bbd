"""swarm-experiment end to end, as a researcher runs it: launch (embedded anvil, escrow funded) -> two stage peers and
a trainer join with the printed command -> status shows them -> a checkpoint -> stop leaves nothing running ->
results and export from the state directory alone. Real processes throughout (hivemind DHT + p2pd, anvil)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from experiment_support import cli, snapshot, state, wait_for, write_toml

from swarm.apps.experiment.state import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _with_swarm_loss(sd: Path) -> dict | None:
    snap = snapshot(sd) or {}
    return snap if len(snap.get("swarm_loss", [])) >= 2 and len(snap.get("trainers", [])) == 1 else None


def test_launch_join_status_stop_results_export(tmp_path: Path, children):
    toml = write_toml(tmp_path / "exp.toml", {
        "experiment": {"name": "clitest", "round_duration": 4, "lr": 0.003},
        "economy": {"chain": "embedded", "reward_per_round": 5.0, "pool": 100.0},
        "checkpoints": {"every_rounds": 2},
        "monitor": {"poll_seconds": 1.0},
    })  # fmt: skip
    sd = tmp_path / "state"
    out = cli("launch", str(toml), "--state-dir", str(sd), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    join = re.search(r"^\s+(swarm-peer --join .*)$", out.stdout, re.MULTILINE).group(1).split()
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", out.stdout)
    st = state(sd)
    assert st["status"] == "running" and st["chain"]["kind"] == "embedded"
    assert "private" not in json.dumps(st).lower()  # addresses and pids only, never a key
    try:
        argv = [sys.executable, "-m", "swarm.peer", *join[1:], "--host", "127.0.0.1"]
        env = {**os.environ, "SWARM_CHECKPOINT_DIR": st["checkpoint_dir"], "SWARM_CHECKPOINT_EVERY": "2"}
        hook = ["--round-hooks", "swarm.apps.experiment.checkpoint:on_round"]
        for s in (0, 1):
            with open(tmp_path / f"s{s}.log", "wb") as log:
                children.start([*argv, "--stage", str(s), *hook], name=f"s{s}", env=env, stderr=log)
        wait_for("both stage peers on the dashboard", lambda: (snapshot(sd) or {}).get("n_peers") == 2, 180)
        with open(tmp_path / "trainer.log", "wb") as log:
            children.start([*argv, "--role", "trainer", "--steps", "100000"], name="trainer", stderr=log)

        status = cli("status", "--state-dir", str(sd), cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "stage 0: 1 peers" in status.stdout and "stage 1: 1 peers" in status.stdout
        assert "bootstrap" in status.stdout and "monitor" in status.stdout and "running" in status.stdout
        peers = {p["peer_id"] for s in snapshot(sd)["stages"] for p in s["peers"]}
        assert all(p in status.stdout for p in peers)
        assert "0 proofs verified" in status.stdout  # the chain is read (unpaid peers prove nothing)

        ckpt = wait_for("a complete checkpoint", lambda: [c for c in (snapshot(sd) or {}).get("checkpoints", [])
                                                          if c["complete"] and c["test_loss"] is not None], 120)
        assert set(ckpt[0]["saved_by"]) == {"0", "1"}
        # the trainer joined from outside: its loss reaches the dashboard through its report on the DHT only
        swarm = wait_for("the joined trainer's loss on the dashboard", lambda: _with_swarm_loss(sd), 180)
        assert swarm["loss"] == [] and swarm["trainers"][0]["steps"] > 0  # no local trainer: no local loss
        assert all(0 <= p[2] < 5 for p in swarm["swarm_loss"]) and swarm["swarm_loss"][-1][1] > 0
    finally:
        children.stop_all()
        stopped = cli("stop", "--state-dir", str(sd), cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    final = state(sd)
    assert final["status"] == "stopped"
    assert not [n for n, p in final["processes"].items() if pid_alive(p["pid"], p.get("started"))]
    assert not pid_alive(final["supervisor_pid"], final["supervisor_started"])
    assert not pid_alive(final["chain"]["anvil_pid"])
    assert cli("status", "--state-dir", str(sd), cwd=tmp_path).returncode == 3  # not running any more

    res = cli("results", "--state-dir", str(sd), "--baseline-steps", "100", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = (sd / "results" / "report.md").read_text()
    assert "single-process baseline" in report and (sd / "results" / "loss_vs_samples.png").stat().st_size > 1000
    exp = cli("export", "--state-dir", str(sd), cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    card = (sd / "export" / "MODEL_CARD.md").read_text()
    assert "test loss of this model" in card and "On-chain settlement" in card
    from safetensors.torch import load_file

    tensors = load_file(str(sd / "export" / "model.safetensors"))
    assert any(k.startswith("stage0.") for k in tensors) and any(k.startswith("stage1.") for k in tensors)
