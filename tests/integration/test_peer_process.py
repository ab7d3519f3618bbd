"""`python -m swarm.peer` as a real process: its help, and how it leaves on SIGTERM, SIGHUP and a second Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarm.apps.events import Left, Ready, parse_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_help_tells_a_volunteer_how_to_join():
    result = subprocess.run(
        [sys.executable, "-m", "swarm.peer", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    for needed in ("--join --initial-peers", "--role", "SWARM_WALLET_KEY", "Ctrl-C", "exit codes", "peers/",
                   "--device", "--identity-path", "--matchmaking-time", "--prover-workers"):  # fmt: skip
        assert needed in result.stdout


def start_bootstrap(children, tmp_path: Path, name: str):
    """A bootstrap peer (the cheapest real peer: a DHT and a record) with its events and its log in tmp_path."""
    events: list = []
    log = tmp_path / f"{name}.log"
    with log.open("wb") as stderr:
        peer = children.start(
            [sys.executable, "-m", "swarm.peer", "--role", "bootstrap", "--host", "127.0.0.1", "--events",
             "--experiment", name],
            name=name, stderr=stderr, on_line=lambda line: events.append(parse_event(line)),
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(isinstance(e, Ready) for e in events):
        assert peer.alive and time.monotonic() < deadline, f"{name} did not get ready: {log.read_text()[-1000:]}"
        time.sleep(0.1)
    return peer, events, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_leave_cleanly_with_exit_0(tmp_path: Path, children, sig: int):
    peer, events, log = start_bootstrap(children, tmp_path, f"leave{int(sig)}")
    peer.send_signal(sig)
    assert peer.wait(60) == 0, log.read_text()[-2000:]
    assert any(isinstance(e, Left) and e.reason == "stopped" for e in events)
    assert f"leaving ({signal.Signals(sig).name}): stopping cleanly" in log.read_text()


def test_a_second_ctrl_c_forces_the_exit_with_130(tmp_path: Path, children):
    peer, _, log = start_bootstrap(children, tmp_path, "forced")
    peer.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while "stopping cleanly" not in log.read_text():  # the first one was handled: the peer is on its way out
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.01)
    peer.send_signal(signal.SIGINT)
    code = peer.wait(60)
    text = log.read_text()
    if code == 0:  # it finished its clean exit before the second Ctrl-C arrived: nothing was forced
        assert "forced out" not in text
        pytest.skip("the clean exit was faster than the second Ctrl-C")
    assert code == 130, text[-2000:]
    assert "swarm-peer: forced out (second Ctrl-C)" in text
