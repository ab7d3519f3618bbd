"""Whole swarms on loopback, every peer a real `python -m swarm.peer` process (hivemind DHT + p2pd each).

The autouse leak check (tests/conftest.py) asserts that no peer, DHT process or p2pd survives any of these.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarm.apps.events import Left, Ready, RoundDone, Step, Synced
from swarm.apps.demo import DemoConfig, DemoSwarm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROUND_S = 5.0


def losses(swarm: DemoSwarm, peer: str) -> list[float]:
    return [e.loss for e in swarm.history if isinstance(e, Step) and e.peer == peer]


def events_of(swarm: DemoSwarm, peer: str, kind: type) -> list:
    return [e for e in swarm.history if isinstance(e, kind) and e.peer == peer]


def run_until(swarm: DemoSwarm, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the swarm did not get there in time"
        time.sleep(0.2)
        swarm.drain()


def start_swarm(tmp_path: Path, stages: list[int], trainer_steps: int) -> DemoSwarm:
    """Bootstrap, one stage peer per entry of `stages` (pinned there), then one trainer for `trainer_steps`."""
    swarm = DemoSwarm(DemoConfig(n_stages=2, round_duration=ROUND_S), tmp_path)
    swarm.start_peer("bootstrap", ["--role", "bootstrap", "--n-stages", "2", "--round-duration", str(ROUND_S)])
    swarm.bootstrap_maddrs = swarm.wait_for("bootstrap", lambda e: isinstance(e, Ready)).maddrs
    for i, stage in enumerate(stages):
        swarm.start_peer(f"s{i}", [*swarm.join_args, "--stage", str(stage), "--lr", "0.003"])
    for i in range(len(stages)):
        swarm.wait_for(f"s{i}", lambda e: isinstance(e, Ready) and e.role == "stage")
    swarm.start_peer("trainer", [*swarm.join_args, "--role", "trainer", "--steps", str(trainer_steps)])
    return swarm


def test_two_stage_swarm_trains_averages_and_leaves_cleanly(tmp_path: Path):
    with start_swarm(tmp_path, stages=[0, 1, 1], trainer_steps=120) as swarm:
        run_until(swarm, lambda: not swarm.child("trainer").alive, timeout=120)
        assert swarm.child("trainer").returncode == 0
        curve = losses(swarm, "trainer")
        assert len(curve) == 120
        assert sum(curve[-10:]) / 10 < 0.7 * sum(curve[:10]) / 10, "the swarm's loss did not decrease"
        left = events_of(swarm, "trainer", Left)
        assert left and left[0].eval_loss is not None
        # the two peers of stage 1 averaged together in at least one round, int8 on the wire
        paired = [e for e in swarm.history if isinstance(e, RoundDone) and e.stage == 1 and e.group_size == 2]
        assert paired and all(e.bytes_sent > 0 for e in paired)
        assert {e.peer for e in paired} == {"s1", "s2"}
        swarm.children.stop_all()  # SIGINT: every peer shuts its averager, server and DHT down
        swarm.drain()
        codes = {name: swarm.child(name).returncode for name in ("s0", "s1", "s2", "bootstrap")}
        assert codes == dict.fromkeys(codes, 0), f"not every peer left cleanly (logs in {tmp_path})"
        assert all(events_of(swarm, name, Left) for name in codes), "a peer did not report leaving"


def test_kill_9_of_a_stage_peer_mid_round_does_not_stop_training_and_a_restarted_peer_resyncs(tmp_path: Path):
    with start_swarm(tmp_path, stages=[0, 1, 1, 1], trainer_steps=250) as swarm:
        three = swarm.wait_for("s1", lambda e: isinstance(e, RoundDone) and e.group_size == 3, timeout=90)
        run_until(swarm, lambda: len(losses(swarm, "trainer")) >= 15, timeout=90)
        # kill s2 one second into a round's averaging (rounds end every ROUND_S; matchmaking takes ~3 s)
        round_end = three.time - three.seconds
        kill_at = round_end + ROUND_S * (int((time.time() - round_end) / ROUND_S) + 1) + 1.0
        time.sleep(max(0.0, kill_at - time.time()))
        victim = swarm.child("s2")
        victim.send_signal(signal.SIGKILL)  # the peer alone: its watchdog must take its DHT and p2pd down
        assert victim.wait(10) == -signal.SIGKILL
        killed_at = len(losses(swarm, "trainer"))
        kill_round = int((kill_at - round_end) / ROUND_S) + three.round

        # training goes on (the trainer reroutes stage 1), and the two survivors of stage 1 average together
        run_until(swarm, lambda: len(losses(swarm, "trainer")) >= killed_at + 15, timeout=90)
        for name in ("s1", "s3"):
            swarm.wait_for(name, lambda e: isinstance(e, RoundDone) and e.round > kill_round and e.group_size == 2,
                           timeout=60)  # fmt: skip

        # a restarted peer joins stage 1 again and downloads the trained parameters from a peer serving it
        swarm.start_peer("s2-again", [*swarm.join_args, "--stage", "1"])
        synced = swarm.wait_for("s2-again", lambda e: isinstance(e, Synced))
        assert synced.from_peers and synced.distance_from_seed > 1e-3
        swarm.wait_for("s2-again", lambda e: isinstance(e, RoundDone) and e.group_size >= 2, timeout=60)

        run_until(swarm, lambda: not swarm.child("trainer").alive, timeout=120)
        assert swarm.child("trainer").returncode == 0
        curve = losses(swarm, "trainer")
        assert sum(curve[-10:]) / 10 < 0.7 * sum(curve[:10]) / 10


def test_unreachable_initial_peer_is_one_line_and_exit_3():
    dead = "/ip4/127.0.0.1/tcp/9/p2p/QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
    result = subprocess.run(
        [sys.executable, "-m", "swarm.peer", "--join", "--initial-peers", dead, "--host", "127.0.0.1",
         "--log-level", "ERROR"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("swarm-peer:")]
    assert len(lines) == 1 and "cannot join the swarm" in lines[0]


def test_demo_runs_a_swarm_and_summarises_it(tmp_path: Path):
    """`python -m swarm.demo` (no chain): bootstrap, stage peers, a trainer; live view, summary and plot."""
    result = subprocess.run(
        [sys.executable, "-m", "swarm.demo", "--no-chain", "--stage-peers", "2", "--duration", "10", "--round-duration", str(ROUND_S),
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "loss curve (" in out and "rounds averaged: " in out and "test loss: trainer-0" in out
    assert "peers per stage at the end of training: [1, 1]" in out  # each peer picked the empty stage
    first, last = (float(x) for x in out.split("loss: ", 1)[1].split(" (mean", 1)[0].split(" -> "))
    assert last < first
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert {p.name for p in tmp_path.glob("*.log")} >= {"bootstrap.log", "trainer-0.log", "stage-peer-1.log"}


@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_stopping_the_demo_stops_every_peer_it_started(tmp_path: Path, children, how: str):
    """Ctrl-C: the demo stops its peers. kill -9: its peers die with it and their watchdogs take DHT and p2pd."""
    demo = children.start(
        [sys.executable, "-m", "swarm.demo", "--no-chain", "--stage-peers", "2", "--duration", "60", "--out",
         str(tmp_path)],
        name="demo", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "stage-peer-0.log").exists():  # the bootstrap is up and stage peers are starting
        assert demo.alive and time.monotonic() < deadline, "the demo did not start its peers"
        time.sleep(0.2)
    if how == "ctrl-c":
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground process group
    else:
        demo.send_signal(signal.SIGKILL)
    assert demo.wait(60) is not None, "the demo did not stop"
    # the autouse leak check then asserts that no peer, DHT process or p2pd of the demo is left
