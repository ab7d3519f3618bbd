"""swarm-peer's memory preflight and --relay through the real parts: real peer processes on a real hivemind DHT +
p2pd. A stage that does not fit in --memory-limit is refused at join with a clear message (exit 2); one that fits
caps the micro-batches it accepts to what fits, says so, and a larger one is turned away with what to do (a trainer
splits its batches to the announced caps); --relay
decides which p2pd runs a relay service (its command line)."""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import torch

from runtime import procs
from swarm.apps.events import Ready, parse_event
from swarm.models import get_workload
from swarm.network.dht import create_dht
from swarm.network.reachability import join_swarm
from swarm.pipeline.memory import SAFETY, preflight_stage
from swarm.pipeline.routing import RoutingError, StageRouter
from swarm.pipeline.trainer import Trainer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CAP = 8  # the micro-batch the memory limit of the capped stage peer is sized for


def _peer(children, tmp_path: Path, name: str, *args: str):
    events: list = []
    log = tmp_path / f"{name}.log"
    with log.open("wb") as stderr:
        proc = children.start([sys.executable, "-m", "swarm.peer", "--host", "127.0.0.1", "--events", *args],
                              name=name, stderr=stderr, on_line=lambda line: events.append(parse_event(line)))
    return proc, events, log


def _ready(proc, events: list, log: Path, timeout: float = 180) -> Ready:
    deadline = time.monotonic() + timeout
    while True:
        ready = [e for e in events if isinstance(e, Ready)]
        if ready:
            return ready[0]
        assert proc.alive and time.monotonic() < deadline, f"not ready: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def _limit_for(max_batch: int) -> float:
    """GiB of --memory-limit for which stage 0 of digits fits micro-batches of `max_batch` (+ half a sample)."""
    plan = preflight_stage(get_workload("digits"), 2, 0, free=1 << 40)
    room = (max_batch + 0.5) * plan.in_flight * plan.per_sample
    return (plan.fixed + plan.in_flight * plan.snapshot + room) / SAFETY / 2**30


def test_a_stage_too_big_for_the_memory_limit_is_refused_and_one_that_fits_caps_its_micro_batches(
    tmp_path: Path, children
):
    exp = f"pre{uuid.uuid4().hex[:6]}"
    boot, boot_events, boot_log = _peer(children, tmp_path, "boot", "--role", "bootstrap", "--experiment", exp)
    maddrs = _ready(boot, boot_events, boot_log).maddrs
    join = ["--join", "--initial-peers", *maddrs, "--experiment", exp, "--role", "stage", "--stage", "0",
            "--no-rebalance"]  # fmt: skip

    refused = procs.run([sys.executable, "-m", "swarm.peer", "--host", "127.0.0.1", *join, "--memory-limit",
                              "0.0001"], capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("swarm-peer: this machine cannot serve that stage: stage 0 of digits does not fit on cpu")
    assert "To make it fit" in last and "adam8bit" in last

    limit = _limit_for(CAP)
    peer, events, log = _peer(children, tmp_path, "capped", *join, "--memory-limit", f"{limit:.9f}")
    _ready(peer, events, log)
    assert f"fits micro-batches of up to {CAP} samples" in log.read_text()  # the volunteer is told what fits

    dht = create_dht(maddrs)
    router = StageRouter(dht, exp, 2)
    try:
        router.start()
        deadline = time.monotonic() + 60
        while not router.peers(0):
            assert time.monotonic() < deadline, "the capped stage peer was never announced"
            router.refresh(force=True)
            time.sleep(0.5)
        x = torch.randn(4 * CAP, 64)
        with pytest.raises(RoutingError) as err:
            router.forward(0, x)
        assert f"a micro-batch of {4 * CAP} samples is more than this peer's memory allows (at most {CAP}" in str(
            err.value)
        assert f"use --batch-size {CAP} or less" in str(err.value)
        out, _ = router.forward(0, x[:CAP])  # what fits is served
        assert out.shape[0] == CAP

        # a trainer sizes its micro-batches to what the stage peers announce: 4 x CAP samples go as CAP-sample ones
        other, other_events, other_log = _peer(children, tmp_path, "stage1", *join[:-3], "--stage", "1",
                                               "--no-rebalance")  # fmt: skip
        _ready(other, other_events, other_log)
        with Trainer(dht, exp, get_workload("digits"), n_stages=2, batch_size=4 * CAP) as trainer:
            deadline = time.monotonic() + 60
            while trainer.swarm_cap() != CAP or not trainer.router.peers(1):
                assert time.monotonic() < deadline, "the trainer never saw both stages and the memory cap"
                trainer.router.refresh(force=True)
                time.sleep(0.5)
            report = trainer.run(steps=6)
        assert [s.samples for s in report.steps] == [CAP * (i + 1) for i in range(6)]
        assert all(math.isfinite(s.loss) for s in report.steps)
    finally:
        router.shutdown()
        dht.shutdown()


def _p2pd_args() -> list[list[str]]:
    return [p.cmdline() for p in psutil.Process().children(recursive=True) if "p2pd" in p.name()]


@pytest.mark.parametrize(("role", "relay", "serves"), [("bootstrap", "auto", True), ("bootstrap", "off", False),
                                                        ("stage", "auto", False), ("stage", "serve", True)])
def test_relay_decides_which_peer_runs_a_relay_service(role: str, relay: str, serves: bool):
    before = {tuple(c) for c in _p2pd_args()}
    boot = create_dht() if role == "stage" else None
    peers = [] if boot is None else [str(a) for a in boot.get_visible_maddrs()]
    before |= {tuple(c) for c in _p2pd_args()}
    dht, _ = join_swarm(lambda **o: create_dht(peers, **o), threading.Event(), role, peers, relay=relay)
    try:
        assert dht is not None
        mine = [c for c in _p2pd_args() if tuple(c) not in before]
        assert len(mine) == 1, mine
        assert any("forceReachabilityPublic" in a for a in mine[0]) == serves, mine[0]
    finally:
        dht.shutdown()
        if boot is not None:
            boot.shutdown()
