"""Checkpoint -> kill the whole swarm (SIGKILL to the experiment's owner process) -> relaunch from the checkpoint ->
the swarm goes on from that round with the checkpoint's model (its test loss, not a fresh model's)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from experiment_support import cli, snapshot, state, wait_for, write_toml

from swarm.apps.experiment.checkpoint import evaluate, read_manifest
from swarm.apps.experiment.state import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FRESH_LOSS = 2.2  # test loss of the untrained digits MLP is ~2.30 (ln 10)


def _good_checkpoint(sd: Path):
    snap = snapshot(sd) or {}
    good = [c for c in snap.get("checkpoints", []) if c["complete"] and c["test_loss"] is not None
            and c["test_loss"] < 1.6]  # fmt: skip
    return good[-1] if good else None


def test_a_killed_swarm_relaunched_from_a_checkpoint_goes_on(tmp_path: Path):
    toml = write_toml(tmp_path / "exp.toml", {
        "experiment": {"name": "resumetest", "round_duration": 4, "lr": 0.003},
        "economy": {"chain": "none"}, "checkpoints": {"every_rounds": 2},
        "monitor": {"poll_seconds": 1.0}, "local": {"stage_peers": 2, "trainers": 1},
    })  # fmt: skip
    first, second = tmp_path / "first", tmp_path / "second"
    try:
        out = cli("launch", str(toml), "--state-dir", str(first), cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        ckpt = wait_for("a checkpoint of a trained model", lambda: _good_checkpoint(first), 240)
        folder, r, loss = Path(ckpt["path"]), ckpt["round"], ckpt["test_loss"]

        st = state(first)
        os.kill(st["supervisor_pid"], signal.SIGKILL)  # no clean-up: every child must still die with it
        pids = [(p["pid"], p.get("started")) for p in st["processes"].values()]
        wait_for("every process of the killed swarm to be gone",
                 lambda: not any(pid_alive(pid, started) for pid, started in pids), 30)  # fmt: skip
        assert read_manifest(folder)["round"] == r and evaluate(folder) == pytest.approx(loss)

        out = cli("launch", str(toml), "--state-dir", str(second), "--resume-from", str(folder), cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert state(second)["round_offset"] == r + 1
        resumed = wait_for("a checkpoint of the resumed swarm", lambda: [
            c for c in (snapshot(second) or {}).get("checkpoints", []) if c["complete"] and c["test_loss"] is not None
        ], 180)[0]  # fmt: skip
        assert resumed["round"] > r  # rounds go on from the checkpoint's
        assert resumed["test_loss"] < min(FRESH_LOSS, 1.5 * loss + 0.1), (resumed, loss)
        assert (snapshot(second) or {}).get("round", 0) > r
        manifest = json.loads((Path(resumed["path"]) / "manifest.json").read_text())
        assert manifest["round_offset"] == r + 1
    finally:
        for sd in (first, second):
            if (sd / "state.json").exists():
                cli("stop", "--state-dir", str(sd), cwd=tmp_path)
