"""Whole swarms on loopback, every peer a real `python -m swarm.peer` process (hivemind DHT + p2pd each).

The autouse leak check (tests/conftest.py) asserts that no peer, DHT process or p2pd survives any of these.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import procs
from swarm.apps.demo import DemoConfig, DemoSwarm
from swarm.apps.events import Left, Ready, RoundDone, Step, Synced

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
        # the two peers of stage 1 average together (in a round of their own pace, not bounded by the trainer's)
        for name in ("s1", "s2"):
            paired = swarm.wait_for(name, lambda e: isinstance(e, RoundDone) and e.stage == 1 and e.group_size == 2,
                                    timeout=60)  # fmt: skip
            assert paired.bytes_sent > 0
        swarm.children.stop_all()  # SIGINT: every peer shuts its averager, server and DHT down
        swarm.drain()
        codes = {name: swarm.child(name).returncode for name in ("s0", "s1", "s2", "bootstrap")}
        assert codes == dict.fromkeys(codes, 0), f"not every peer left cleanly (logs in {tmp_path})"
        assert all(events_of(swarm, name, Left) for name in codes), "a peer did not report leaving"


TRAINER_STEPS_KILL = 600


def test_kill_9_of_a_stage_peer_mid_round_does_not_stop_training_and_a_restarted_peer_resyncs(tmp_path: Path):
    # enough steps that the trainer is still training after the kill, however fast the pipeline got
    with start_swarm(tmp_path, stages=[0, 1, 1, 1], trainer_steps=TRAINER_STEPS_KILL) as swarm:
        ids = {name: swarm.wait_for(name, lambda e: isinstance(e, Ready)).peer_id for name in ("s1", "s2", "s3")}
        three = swarm.wait_for("s1", lambda e: isinstance(e, RoundDone) and e.group_size == 3, timeout=90)
        run_until(swarm, lambda: len(losses(swarm, "trainer")) >= 15, timeout=90)
        # kill s2 just after a round's averaging began: a round ends every ROUND_S (three.time - three.seconds
        # is when round three.round ended and its averaging began)
        boundary = three.time - three.seconds
        next_round = int((time.time() - boundary) / ROUND_S) + 1
        kill_round = three.round + next_round
        time.sleep(max(0.0, boundary + next_round * ROUND_S + 0.2 - time.time()))
        victim = swarm.child("s2")
        victim.send_signal(signal.SIGKILL)  # the peer alone: its watchdog must take its DHT and p2pd down
        killed_at = time.time()
        assert victim.wait(10) == -signal.SIGKILL
        steps_at_kill = len(losses(swarm, "trainer"))
        assert steps_at_kill + 15 <= TRAINER_STEPS_KILL, f"the trainer was nearly done ({steps_at_kill} steps)"

        # the kill landed mid-round: while the survivors were averaging kill_round; they finished that round
        # without the victim's update, and later rounds as a pair
        for name in ("s1", "s3"):
            done = swarm.wait_for(name, lambda e: isinstance(e, RoundDone) and e.round == kill_round, timeout=60)
            assert done.time - done.seconds <= killed_at <= done.time, "the kill did not land during the round"
            assert ids["s2"] not in done.included and done.group_size <= 3
            swarm.wait_for(name, lambda e: isinstance(e, RoundDone) and e.round > kill_round and e.group_size == 2,
                           timeout=60)  # fmt: skip
        # training goes on (the trainer reroutes stage 1)
        run_until(swarm, lambda: len(losses(swarm, "trainer")) >= steps_at_kill + 15, timeout=90)

        # a restarted peer joins stage 1 again and downloads the trained parameters from a peer serving it
        swarm.start_peer("s2-again", [*swarm.join_args, "--stage", "1"])
        synced = swarm.wait_for("s2-again", lambda e: isinstance(e, Synced))
        assert synced.from_peers and synced.distance_from_seed > 1e-3
        swarm.wait_for("s2-again", lambda e: isinstance(e, RoundDone) and e.group_size >= 2, timeout=60)

        run_until(swarm, lambda: not swarm.child("trainer").alive, timeout=120)
        assert swarm.child("trainer").returncode == 0
        curve = losses(swarm, "trainer")
        assert sum(curve[-10:]) / 10 < 0.7 * sum(curve[:10]) / 10


def test_an_unreachable_initial_peer_is_said_plainly_and_retried_until_ctrl_c(tmp_path: Path, children):
    dead = "/ip4/127.0.0.1/tcp/9/p2p/QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
    log = tmp_path / "peer.log"
    with log.open("wb") as stderr:
        peer = children.start(
            [sys.executable, "-m", "swarm.peer", "--join", "--initial-peers", dead, "--host", "127.0.0.1",
             "--log-level", "WARNING"],
            name="peer", stderr=stderr,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while "cannot reach the swarm (attempt 1" not in log.read_text():
        assert peer.alive and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    assert peer.alive  # it keeps retrying (with growing pauses) instead of giving up
    peer.send_signal(signal.SIGINT)
    assert peer.wait(60) == 0, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()


def test_demo_runs_a_swarm_and_summarises_it(tmp_path: Path):
    """`python -m swarm.demo` (no chain): bootstrap, stage peers, a trainer; live view, summary and plot."""
    result = procs.run(
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
    """Ctrl-C: the demo stops its peers, prints its summary and exits 130. kill -9: its peers die with it and their
    watchdogs take DHT and p2pd down (the autouse leak check asserts that nothing of the demo is left)."""
    out = tmp_path / "demo.out"
    with out.open("wb") as stdout:
        demo = children.start(
            [sys.executable, "-m", "swarm.demo", "--no-chain", "--stage-peers", "2", "--duration", "60", "--out",
             str(tmp_path)],
            name="demo", stdout=stdout, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (tmp_path / "stage-peer-0.log").exists():  # the bootstrap is up and stage peers are starting
        assert demo.alive and time.monotonic() < deadline, "the demo did not start its peers"
        time.sleep(0.2)
    if how == "ctrl-c":
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to the foreground process group
        assert demo.wait(60) == 130, out.read_text()[-2000:]
        text = out.read_text()
        assert "interrupted: stopping every peer" in text and "rounds averaged: " in text and "logs and plot: " in text
    else:
        demo.send_signal(signal.SIGKILL)
        assert demo.wait(60) == -signal.SIGKILL


def _strings_in(value) -> list[str]:
    """Every str and bytes (as hex and as text) inside a DHT value, nested dicts/lists/records included."""
    if isinstance(value, bytes):
        return [value.hex(), value.decode("latin-1")]
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings_in(k) + _strings_in(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings_in(v)]
    inner = getattr(value, "value", None)  # hivemind's ValueWithExpiration
    return _strings_in(inner) if inner is not None else [repr(value)]


def _wait_for_text(path: Path, needle: str, demo, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        assert demo.alive and time.monotonic() < deadline, f"{needle!r} never appeared in {path}"
        time.sleep(0.5)


@pytest.mark.timeout(900)
def test_the_demo_with_the_chain_proves_pays_and_keeps_wallet_keys_out_of_logs_and_the_dht(tmp_path: Path, children):
    """`python -m swarm.demo` as the README runs it (with the chain), made short: anvil, the escrow, paid stage peers
    wired by the CLI (wallet file -> settler + gossip relay), proofs verified on-chain, rounds finalized, rewards
    claimed, a clean stop. While it runs: the bootstrap's round clock is the escrow's (--chain-experiment), every
    paid peer's gossip relay announced itself, and no wallet key is in any DHT record; after: nor in any log.
    One stage, three peers, the last a free rider (issue 13): it proves its update on chain but sends random data
    for it, so the group drops it and its certificates (the demo requires them) leave it out (its wallet-signed
    random parts also get it slashed: fraud proofs): it earns 0 and none of its contributions is certified, while
    both honest peers are certified and paid. (Two honest peers, not one: with one honest peer and one rider there
    is no honest majority, the rider's anchor wins the 1-1 tie and the honest peer ends up averaging alone, so
    nothing of it is certified either.)"""
    from swarm.chain.client import ChainClient
    from swarm.network.dht import create_dht
    from swarm.network.gossip.discovery import fetch_gossip_peers, gossip_key
    from swarm.network.records import experiment_key, fetch_experiment, stages_key

    out = tmp_path / "demo.out"
    with out.open("wb") as stdout:
        demo = children.start(
            [sys.executable, "-m", "swarm.demo", "--n-stages", "1", "--stage-peers", "3", "--byzantine", "1",
             "--attack", "random", "--duration", "20", "--round-duration", "10", "--submit-window", "60", "--out",
             str(tmp_path)],
            name="demo", stdout=stdout, stderr=subprocess.STDOUT,
        )  # fmt: skip
    joined = _wait_for_text(out, "--initial-peers ", demo).split("--experiment ", 1)[1].split("\n", 1)[0]
    experiment, maddrs = joined.split(" --initial-peers ")[0], joined.split(" --initial-peers ")[1].split()
    clock = _wait_for_text(tmp_path / "bootstrap.log", "round clock of experiment", demo)
    clock = clock.split("round clock of experiment ", 1)[1].split("\n", 1)[0]  # "N of escrow 0x.. at URL: start S, D s"
    chain_id, escrow, rpc = int(clock.split()[0]), clock.split()[3], clock.split()[5].rstrip(":")
    keys = [p.read_text().strip().lower().removeprefix("0x") for p in sorted((tmp_path / "keys").glob("*.key"))]
    assert len(keys) == 3 and all(len(k) == 64 for k in keys)

    dht = create_dht(maddrs, host="127.0.0.1")
    try:
        deadline = time.monotonic() + 120
        while (record := fetch_experiment(dht, experiment)) is None or len(fetch_gossip_peers(dht, experiment)) < 2:
            assert demo.alive and time.monotonic() < deadline, "no experiment record or no gossip relays on the DHT"
            time.sleep(1.0)
        state = ChainClient(rpc, escrow=escrow).experiment(chain_id)
        assert record.chain_experiment_id == chain_id
        assert (record.start_time, record.round_duration) == (float(state.start), float(state.round_duration))
        found = [s.lower() for key in (experiment_key(experiment), stages_key(experiment), gossip_key(experiment))
                 for s in _strings_in(dht.get(key, latest=True))]  # fmt: skip
        assert len(found) > 3 and not [k for k in keys if any(k in s for s in found)], "a wallet key is on the DHT"
    finally:
        dht.shutdown()

    assert demo.wait(800) == 0, out.read_text()[-3000:]
    text = " ".join(out.read_text().split())  # the summary is wrapped at the console's width
    chain = re.search(r"chain: (\d+) proven contributions verified on-chain over \d+ rounds; (\d+) rounds finalized",
                      text)  # fmt: skip
    assert chain and int(chain[1]) >= 2 and int(chain[2]) >= 1, text[-2000:]
    rewards = re.search(r"rewards claimed: ([\d.]+) SWT by (\d+) peers", text)
    assert rewards and float(rewards[1]) > 0, text[-2000:]
    earned = dict(re.findall(r"(stage-peer-\d) ([\d.]+) SWT for \d+ claimed of \d+ contributed", text))
    certified = dict(re.findall(r"(stage-peer-\d) (\d+)/\d+", text.split("certified contributions", 1)[-1]))
    for honest in ("stage-peer-0", "stage-peer-1"):  # certified and paid
        assert float(earned[honest]) > 0 and int(certified[honest]) > 0, text[-2000:]
    # the rider (the last peer) contributed, and no certificate counted it as averaged
    assert float(earned["stage-peer-2"]) == 0 and int(certified["stage-peer-2"]) == 0, text[-2000:]
    logs = [out, *tmp_path.glob("*.log")]
    assert len(logs) >= 6  # the demo's output, bootstrap, 3 stage peers, trainer
    for log in logs:
        assert not [k for k in keys if k in log.read_text(errors="replace").lower()], f"a wallet key is in {log.name}"
