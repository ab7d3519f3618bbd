"""Laptops on emulated hosts: a stage peer frozen (SIGSTOP of its whole process group, as a closed lid does) or
cut off (its link down) comes back by itself and contributes again, while the swarm goes on without it.

The issue's figures are 60 s frozen and 30 s offline; the tests use FREEZE_S / OFFLINE_S (shorter, the same
behaviour: both are longer than hivemind's request timeouts and than a round). `experiments/soak.py` runs the
full lengths.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from netlab_fixtures import LabPeer, netlab, start_bootstrap, start_stage_peer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
__all__ = ["netlab"]

ROUND_S = 6.0
FREEZE_S = float(os.environ.get("SWARM_TEST_FREEZE_S", "20"))
OFFLINE_S = float(os.environ.get("SWARM_TEST_OFFLINE_S", "15"))


def averaged_rounds(peer: LabPeer, after: float) -> list[dict]:
    return [e for e in peer.of("round") if e["group_size"] >= 2 and e.get("_t", 0) > after]


def start_swarm(netlab, tmp_path: Path) -> tuple[LabPeer, LabPeer, LabPeer, LabPeer]:
    boot, maddr = start_bootstrap(netlab, tmp_path, n_stages=1, round_s=ROUND_S)
    desk = start_stage_peer(netlab.add_public("desk"), maddr, tmp_path)
    laptop = start_stage_peer(netlab.add_public("laptop"), maddr, tmp_path)
    trainer_host = netlab.add_home("tr")
    trainer = LabPeer(trainer_host, "trainer", ["--join", "--role", "trainer", "--initial-peers", maddr, "--host",
                                                trainer_host.ip, "--batch-size", "16"], tmp_path)  # fmt: skip
    laptop.wait(lambda: averaged_rounds(laptop, 0), 150, "a first round averaged with the desk")
    # the trainer has timed both stage peers' calls by now (before that a call may wait out the full timeout)
    trainer.wait_event("step", 120, count=30)
    return boot, desk, laptop, trainer


def check_swarm_went_on_and_laptop_came_back(desk, laptop, trainer, since: float, until: float) -> None:
    steps = [e for e in trainer.of("step") if since < e["_t"] < until]
    assert steps, "the trainer made no step while the laptop was away"
    assert [e for e in desk.of("round") if since < e["_t"] < until], "the desk averaged no round meanwhile"
    laptop.wait(lambda: averaged_rounds(laptop, until), 150, "a round averaged again after coming back")
    desk.wait(lambda: averaged_rounds(desk, until), 60, "the desk averaging with the laptop again")


def test_frozen_laptop_comes_back_and_contributes_again(netlab, tmp_path: Path):
    boot, desk, laptop, trainer = start_swarm(netlab, tmp_path)
    since = time.time()
    os.killpg(
        laptop.child.pid, signal.SIGSTOP
    )  # the peer, its DHT and averager processes, its p2pd: all frozen
    try:
        time.sleep(FREEZE_S)  # the scenario itself: a lid closed for this long
    finally:
        os.killpg(laptop.child.pid, signal.SIGCONT)
    until = time.time()
    check_swarm_went_on_and_laptop_came_back(desk, laptop, trainer, since, until)
    laptop.wait_log("was frozen", 30)
    for peer in (trainer, laptop, desk, boot):
        peer.stop()


def test_laptop_whose_link_goes_down_comes_back_and_contributes_again(netlab, tmp_path: Path):
    boot, desk, laptop, trainer = start_swarm(netlab, tmp_path)
    since = time.time()
    laptop.host.link_down()
    try:
        time.sleep(OFFLINE_S)  # the scenario itself: Wi-Fi gone for this long
    finally:
        laptop.host.link_up()
    until = time.time()
    check_swarm_went_on_and_laptop_came_back(desk, laptop, trainer, since, until)
    for peer in (trainer, laptop, desk, boot):
        peer.stop()
