"""Peers beyond loopback: hosts as network namespaces, home hosts behind NAT routers (experiments/netlab.py).

Every peer is a real `python -m swarm.peer` (hivemind DHT + p2pd) inside its own namespace. Skipped, with the
reason, where namespaces cannot be made (not root); CI runs as root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netlab_fixtures import (
    ROOT,
    LabPeer,
    list_namespaces,
    netlab,
    start_bootstrap,
    start_stage_peer,
    unavailable_reason,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["netlab"]  # the fixture, imported so that pytest finds it


def test_lab_hosts_nat_and_isolation(netlab):
    """A home host connects out through its router; nobody connects in; two homes do not see each other."""
    pub = netlab.add_public("pub")
    home1, home2 = netlab.add_home("home1"), netlab.add_home("home2")
    assert home1.ip == home2.ip == "192.168.1.2"  # the same private address in both homes, as in real life
    serve = (
        "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 4000)); s.listen()\nwhile True: s.accept()[0].close()"
    )
    listener = [sys.executable, "-c", serve]
    for host in (pub, home1):
        host.run(listener, name=f"listen-{host.name}")
    deadline = time.monotonic() + 20
    while not home1.can_connect(pub.ip, 4000):
        assert time.monotonic() < deadline, "a home host cannot connect out to the public segment"
        time.sleep(0.2)
    assert not pub.can_connect(home1.ip, 4000, timeout=1)  # no route into a home
    assert not pub.can_connect(home1.public_ip, 4000, timeout=1)  # the router forwards nothing in
    assert not home2.can_connect(home1.public_ip, 4000, timeout=1)  # another home neither
    home1.link_down()
    assert not home1.can_connect(pub.ip, 4000, timeout=1)
    home1.link_up()
    assert home1.can_connect(pub.ip, 4000)


def test_lab_is_removed_when_its_owner_is_killed(tmp_path: Path):
    """kill -9 of the process that built a lab: its reaper deletes the namespaces and kills what ran inside."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"emulated hosts unavailable: {reason}")
    script = (
        "import sys,time; sys.path.insert(0, sys.argv[1]); from experiments.netlab import Lab\n"
        "lab = Lab().start(); h = lab.add_home('h'); lab.add_public('p')\n"
        "h.run([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(lab.prefix, flush=True); time.sleep(600)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        prefix = owner.stdout.readline().strip()
        assert prefix and len(list_namespaces(prefix)) == 4  # switch, router, home, public
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 30
        while list_namespaces(prefix):
            assert time.monotonic() < deadline, f"namespaces outlived their lab: {list_namespaces(prefix)}"
            time.sleep(0.2)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()


def test_nat_trainer_joins_with_plain_join_and_trains(netlab, tmp_path: Path):
    """A trainer behind a home NAT joins with `--join` (DHT client, outbound only) and trains through the stage."""
    boot, maddr = start_bootstrap(netlab, tmp_path, n_stages=1)
    stage_host = netlab.add_public("stage0")
    stage = LabPeer(
        stage_host, "stage0", ["--join", "--initial-peers", maddr, "--host", stage_host.ip], tmp_path
    )
    stage.wait_event("ready", 120)
    assert "peers can connect to this peer directly" in stage.log()
    home = netlab.add_home("home")
    trainer = LabPeer(home, "trainer", ["--join", "--role", "trainer", "--initial-peers", maddr, "--host", home.ip,
                                         "--steps", "40", "--batch-size", "16"], tmp_path)  # fmt: skip
    trainer.wait_event("step", 150, count=40)
    log = trainer.log()
    assert "cannot be reached from outside" in log and "fine for a trainer" in log, log[-2000:]
    assert f"come from {home.public_ip}" in log  # the checker saw the router's address, not ours
    losses = [e["loss"] for e in trainer.of("step")]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8, f"the loss did not go down: {losses}"
    trainer.wait(lambda: not trainer.child.alive, 60, "the trainer to leave after its steps")
    assert trainer.child.returncode == 0
    for peer in (trainer, stage, boot):
        peer.stop()


def test_unreachable_bootstrap_is_retried_with_backoff_until_ctrl_c(netlab, tmp_path: Path):
    """No initial peer answers: the peer says so, retries with growing pauses, and leaves cleanly on Ctrl-C."""
    home = netlab.add_home("home")
    netlab.add_public("nobody")  # a public host where no peer runs
    dead = "/ip4/10.77.0.11/tcp/31337/p2p/QmYEJFZcMru2V4rfL1tUqvWwn2XArLJhgcYcfk7LwXUxnt"
    peer = LabPeer(home, "joiner", ["--join", "--initial-peers", dead, "--host", home.ip], tmp_path)
    peer.wait(lambda: peer.log().count("cannot reach the swarm") >= 2, 120, "two retry messages")
    log = peer.log()
    assert "Retrying in 5 s" in log and "Retrying in 10 s" in log, log[-2000:]
    assert "Ctrl-C to stop" in log and dead in log
    assert peer.child.alive  # still trying: it never gives up by itself
    peer.child.interrupt()
    assert peer.child.wait(40) == 0, peer.log()[-2000:]
    peer.stop()


@pytest.mark.timeout(480)
def test_nat_stage_peer_serves_through_the_bootstrap_relay_and_averages(netlab, tmp_path: Path):
    """A stage peer behind a NAT: found unreachable at join, restarted with a relay reservation on the bootstrap;
    a public peer of its stage averages with it and a trainer in another home reaches it through the relay."""
    boot, maddr = start_bootstrap(netlab, tmp_path, n_stages=1, round_s=6.0)
    public = start_stage_peer(netlab.add_public("s-pub"), maddr, tmp_path)
    natted = start_stage_peer(netlab.add_home("s-nat"), maddr, tmp_path)
    trainer_host = netlab.add_home("tr")
    assert "serving through a relay" in natted.log(), natted.log()[-3000:]
    trainer = LabPeer(trainer_host, "trainer", ["--join", "--role", "trainer", "--initial-peers", maddr, "--host",
                                                trainer_host.ip, "--batch-size", "16"], tmp_path)  # fmt: skip
    natted.wait(lambda: any(e["group_size"] >= 2 for e in natted.of("round")), 150, "a round averaged with the "
                "public stage peer")  # fmt: skip
    public.wait(
        lambda: any(e["group_size"] >= 2 for e in public.of("round")), 60, "the same on the public side"
    )
    natted.wait(lambda: any(e.get("requests", 0) > 0 for e in natted.of("round")), 120, "requests served to the "
                "trainer through the relay")  # fmt: skip
    assert len(trainer.of("step")) > 0
    for peer in (trainer, natted, public, boot):
        peer.stop()
