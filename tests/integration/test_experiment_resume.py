"""Checkpoint -> kill the whole swarm (SIGKILL to the experiment's owner process) -> relaunch from the checkpoint ->
the swarm goes on from that round with the checkpoint's model (the trainer's first losses are the checkpoint's,
not a fresh model's) and the checkpoint's training state: every stage's anchor, outer momentum (nesterov) and Adam
state, as saved (fingerprints read back from the live peers)."""

from __future__ import annotations

import json
import os
import signal
import statistics
from pathlib import Path

import pytest
from experiment_support import cli, snapshot, state, wait_for, write_toml
from safetensors.torch import load_file

from swarm.apps.events import Step, parse_event
from swarm.apps.experiment.checkpoint import evaluate, fingerprint, read_manifest
from swarm.apps.experiment.state import EVENTS, pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FRESH_LOSS = 2.2  # test loss of the untrained digits MLP is ~2.30 (ln 10)


def _good_checkpoint(sd: Path):
    """The newest complete checkpoint of a trained model whose every stage has taken a nesterov step (momentum)."""
    snap = snapshot(sd) or {}
    good = [c for c in snap.get("checkpoints", []) if c["complete"] and c["test_loss"] is not None
            and c["test_loss"] < 1.0 and all("outer.momentum" in _state(Path(c["path"]), s) for s in (0, 1))]
    return good[-1] if good else None


def _state(folder: Path, stage: int) -> dict:
    return load_file(str(folder / json.loads((folder / f"stage-{stage}.json").read_text())["training_state"]["file"]))


def _first_losses(sd: Path, n: int = 7) -> list[float]:
    """The trainers' first `n` step losses of a launched swarm (its events file)."""
    lines = (sd / EVENTS).read_text().splitlines() if (sd / EVENTS).exists() else []
    return [e.loss for e in map(parse_event, lines) if isinstance(e, Step)][:n]


def test_a_killed_swarm_relaunched_from_a_checkpoint_goes_on(tmp_path: Path):
    toml = write_toml(tmp_path / "exp.toml", {
        "experiment": {"name": "resumetest", "round_duration": 4, "lr": 0.003, "outer_optimizer": "nesterov"},
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
        saved = {}  # stage -> fingerprint of its saved training state
        for st in read_manifest(folder)["stages"]:
            ts = st["training_state"]
            tensors = load_file(str(folder / ts["file"]))
            assert ts["outer"]["kind"] == "nesterov" and ts["optimizer"]["kind"] == "adam", ts
            assert float(tensors["outer.momentum"].norm()) > 0 and float(tensors["optimizer/0/exp_avg_sq"].sum()) > 0
            assert fingerprint(tensors) == ts["fingerprint"]
            saved[st["stage"]] = ts["fingerprint"]

        out = cli("launch", str(toml), "--state-dir", str(second), "--resume-from", str(folder), cwd=tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert state(second)["round_offset"] == r + 1
        resumed = wait_for("a checkpoint of the resumed swarm", lambda: [
            c for c in (snapshot(second) or {}).get("checkpoints", []) if c["complete"] and c["test_loss"] is not None
        ], 180)[0]  # fmt: skip
        assert resumed["round"] > r  # rounds go on from the checkpoint's
        # the loss goes on from the checkpoint's: the resumed trainer's first steps are near it, a fresh swarm's not
        wait_for("the resumed trainer's first steps", lambda: len(_first_losses(second)) == 7, 120)
        fresh, after = statistics.median(_first_losses(first)), statistics.median(_first_losses(second))
        assert fresh > FRESH_LOSS - 0.5 and after < min(FRESH_LOSS - 0.8, 3 * loss + 0.5), (fresh, after, loss)
        assert resumed["test_loss"] < FRESH_LOSS, (resumed, loss)
        assert (snapshot(second) or {}).get("round", 0) > r
        manifest = json.loads((Path(resumed["path"]) / "manifest.json").read_text())
        assert manifest["round_offset"] == r + 1
        for st in manifest["stages"]:  # each stage started from the checkpoint's state, read back from the live peer
            assert st["resumed_from"]["round"] == r and st["resumed_from"]["fingerprint"] == saved[st["stage"]], st
            assert set(st["resumed_from"]["parts"]) >= {"parameters", "anchor", "outer momentum", "adam state"}
    finally:
        for sd in (first, second):
            if (sd / "state.json").exists():
                cli("stop", "--state-dir", str(sd), cwd=tmp_path)
