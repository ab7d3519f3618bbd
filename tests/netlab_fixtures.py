"""Fixtures for tests on emulated hosts (experiments/netlab.py): a lab of network namespaces, and peers in it.

Use: `from netlab_fixtures import netlab, LabPeer, start_bootstrap` in a test module (tests/ is on sys.path).
Tests using `netlab` skip, with the reason, where namespaces cannot be made (not root, no `ip`, no iptables);
CI runs as root, so CI runs them. After each test the lab is removed and the test fails if any of its namespaces
is left (the process leak check of tests/conftest.py covers the processes: they carry the session's tag).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.netlab import Host, Lab, list_namespaces, unavailable_reason

__all__ = ["Host", "Lab", "LabPeer", "netlab", "start_bootstrap", "start_stage_peer"]

PEER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture
def netlab() -> Iterator[Lab]:
    """A fresh lab; everything in it (namespaces, links, processes) is gone after the test, or the test fails."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"emulated hosts unavailable: {reason}")
    lab = Lab().start()
    try:
        yield lab
    finally:
        lab.close()
        left = list_namespaces(lab.prefix)
        assert not left, f"the lab left namespaces behind: {left}"


class LabPeer:
    """A `python -m swarm.peer ... --events` process on a lab host; its events are collected, its log kept."""

    def __init__(self, host: Host, name: str, args: list[str], log_dir: Path) -> None:
        self.host, self.name = host, name
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 -- closed in stop()
        env = {**os.environ, **PEER_ENV}
        self.child = host.run(
            [sys.executable, "-m", "swarm.peer", *args, "--events"],
            name=name, env=env, on_line=self._on_line, stderr=self._log,
        )  # fmt: skip

    def _on_line(self, line: str) -> None:
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                return
            event["_t"] = time.time()  # when we read it (wall clock, to compare with the test's own times)
            with self._lock:
                self.events.append(event)

    def of(self, kind: str) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e.get("kind") == kind]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait(self, condition: Callable[[], object], timeout: float, what: str) -> object:
        """Poll until `condition()` is truthy; fail with the peer's log tail if it does not come in time."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                tail = "\n".join(self.log().splitlines()[-25:])
                pytest.fail(
                    f"{self.name}: timed out after {timeout:.0f} s waiting for {what}; log tail:\n{tail}"
                )
            if not self.child.alive and not condition():
                tail = "\n".join(self.log().splitlines()[-25:])
                pytest.fail(f"{self.name} exited ({self.child.returncode}) before {what}; log tail:\n{tail}")
            time.sleep(0.2)

    def wait_event(self, kind: str, timeout: float, count: int = 1) -> list[dict]:
        return self.wait(
            lambda: len(self.of(kind)) >= count and self.of(kind), timeout, f"{count} {kind!r} event(s)"
        )

    def wait_log(self, text: str, timeout: float) -> str:
        return self.wait(lambda: text in self.log() and self.log(), timeout, f"{text!r} in its log")

    def stop(self) -> None:
        self.child.stop()
        self._log.close()


def start_bootstrap(
    lab: Lab, log_dir: Path, *, n_stages: int = 1, round_s: float = 6.0, name: str = "boot"
) -> tuple[LabPeer, str]:
    """A bootstrap peer on a new public host; returns it and the multiaddr others join with."""
    host = lab.add_public(name)
    boot = LabPeer(host, name, ["--role", "bootstrap", "--host", host.ip, "--port", "31337", "--n-stages",
                                str(n_stages), "--round-duration", str(round_s)], log_dir)  # fmt: skip
    ready = boot.wait_event("ready", 90)[0]
    maddr = next(a for a in ready["maddrs"] if f"/ip4/{host.ip}/" in a)
    return boot, maddr


def start_stage_peer(
    host: Host, maddr: str, log_dir: Path, *, stage: int = 0, timeout: float = 150
) -> LabPeer:
    """A stage peer on `host` (named after it) that joins through `maddr` and serves `stage`; returns once ready."""
    peer = LabPeer(host, host.name, ["--join", "--initial-peers", maddr, "--stage", str(stage), "--host", host.ip],
                   log_dir)  # fmt: skip
    peer.wait_event("ready", timeout)
    return peer
