"""What a volunteer sees, on a real loopback swarm (hivemind DHT + p2pd, every peer a `python -m swarm.peer`):
the live panel in a pseudo-terminal, plain lines when stdout is a pipe, `swarm-peer status` from another
"terminal" against the running peer and against none, and the summary each role prints when it leaves."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from runtime import procs
from swarm.apps.demo import DemoConfig, DemoSwarm
from swarm.apps.events import Ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROUND_S = 4.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class PtyReader:
    """The output of a child that writes to a pseudo-terminal (160 columns), read by a thread."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        self.raw = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.raw += data

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float, alive=lambda: True) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text):
                return m
            assert alive(), f"the peer exited; its terminal showed:\n{self.text[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never appeared; the terminal showed:\n{self.text[-3000:]}")

    def close(self) -> None:
        for fd in (self.slave, self.master):
            try:
                os.close(fd)
            except OSError:
                pass


def status(status_dir: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "swarm.peer", "status", "--dir", str(status_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_panel_status_plain_lines_and_summaries_on_a_loopback_swarm(tmp_path: Path, monkeypatch):
    status_dir = tmp_path / "status"
    monkeypatch.setenv("SWARM_STATUS_DIR", str(status_dir))  # inherited by every peer started below
    assert status(status_dir).returncode == 1  # no peer yet
    term = PtyReader()
    swarm = DemoSwarm(DemoConfig(n_stages=1, round_duration=ROUND_S), tmp_path)
    try:
        with swarm:
            swarm.start_peer(
                "bootstrap", ["--role", "bootstrap", "--n-stages", "1", "--round-duration", str(ROUND_S)]
            )
            maddrs = swarm.wait_for("bootstrap", lambda e: isinstance(e, Ready)).maddrs
            join = [
                "--join",
                "--host",
                "127.0.0.1",
                "--experiment",
                swarm.experiment,
                "--initial-peers",
                *maddrs,
            ]
            with open(tmp_path / "stage.log", "wb") as log:
                stage = swarm.children.start([sys.executable, "-m", "swarm.peer", *join, "--lr", "0.003"],
                                             name="stage", stdout=term.slave, stderr=log)  # fmt: skip
            # the live panel, in a terminal, with values that move: rounds averaged, alone in its stage
            term.wait_for(r"rounds averaged\s+[1-9]\d* \(last: round \d+\)", 120, lambda: stage.alive)
            term.wait_for(r"stage\s+0: the stage that limited the pipeline", 5)
            term.wait_for(r"alone in stage 0", 3 * ROUND_S + 30, lambda: stage.alive)
            assert (
                "swarm-peer · stage" in term.text and "→ " in term.text
            )  # the panel, and advice for the warning

            # a trainer whose stdout is a pipe: plain lines, no terminal codes
            with open(tmp_path / "trainer.log", "wb") as log:
                trainer = procs.run(
                    [sys.executable, "-m", "swarm.peer", *join, "--role", "trainer", "--steps", "25"],
                    stdout=subprocess.PIPE, stderr=log, text=True, timeout=150, check=False,
                )  # fmt: skip
            assert trainer.returncode == 0, (tmp_path / "trainer.log").read_text()[-2000:]
            out = trainer.stdout
            assert "\x1b[" not in out
            assert re.search(r"^step 0: loss \d+\.\d{4}", out, re.MULTILINE) and re.search(
                r"^step 20: loss", out, re.MULTILINE
            )
            assert re.search(
                r"^  samples: 800 in 25 steps .* evaluation loss \d+\.\d{4}", out, re.MULTILINE
            ), out

            # another terminal asks the running stage peer what it does
            deadline = (
                time.monotonic() + 3 * ROUND_S + 10
            )  # served requests are counted at the end of a round
            while not re.search(
                r"^served: [1-9]", (running := status(status_dir, "--no-chain")).stdout, re.MULTILINE
            ):
                assert running.returncode == 0, running.stdout + running.stderr
                assert time.monotonic() < deadline, running.stdout
                time.sleep(1)
            assert re.search(r"^peer: stage \w+ \(pid \d+\)", running.stdout, re.MULTILINE)
            assert re.search(r"^rounds averaged: [1-9]", running.stdout, re.MULTILINE)
            assert re.search(r"^served: [1-9]\d* forward/backward requests", running.stdout, re.MULTILINE), (
                running.stdout
            )
            assert "warning: reachable only from this machine" in running.stdout

            stage.interrupt()  # Ctrl-C: the peer leaves cleanly and prints its summary
            assert stage.wait(60) == 0
            term.wait_for(r"swarm-peer summary: stage peer \w+", 10)
            term.wait_for(r"rounds averaged: [1-9]\d*", 5)
            swarm.children.stop_all()
    finally:
        term.close()
    gone = status(status_dir)
    assert gone.returncode == 1 and "no swarm peer is running" in gone.stdout
    assert not list(status_dir.glob("*.json")), "a peer left its status file behind"
