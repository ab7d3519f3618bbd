"""Shared fixtures: real parts started and always stopped, and an autouse check that no test leaves a process behind.

Every process this test session starts inherits SWARM_TEST_SESSION (p2pd, anvil and node workers inherit our
environment too), so a leftover is found even after it was re-parented to init, and only ours are ever killed.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

from runtime.procs import ChildSet

SESSION_ENV = "SWARM_TEST_SESSION"
SESSION_TAG = f"{SESSION_ENV}={uuid.uuid4().hex}"
os.environ[SESSION_ENV] = SESSION_TAG.split("=", 1)[1]

LEAK_GRACE_S = float(os.environ.get("SWARM_LEAK_GRACE", "5"))  # a child told to stop may take this long to go
WATCHED_NAMES = ("p2pd", "anvil", "node", "swarm.peer", "swarm-peer", "runtime.procs")

# torch's shared-memory broker: started once per process by hivemind's MPFuture (file_system sharing), lives as long
# as pytest and exits with it; killing it breaks every later DHT in the session ("RuntimeError: Broken pipe").
PROCESS_LIFETIME_HELPERS = ("torch_shm_manager",)

ProcKey = tuple[int, float]  # (pid, create_time): a pid alone may be reused


def _is_ours(p: psutil.Process) -> bool:
    """Whether `p` carries this session's tag in its environment (only our own uid's processes are readable)."""
    try:
        with open(f"/proc/{p.pid}/environ", "rb") as f:
            return SESSION_TAG.encode() in f.read().split(b"\0")
    except OSError:
        return False


def _describe(p: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"pid {p.pid} {p.name()}: {' '.join(p.cmdline())[:160]}"
    return f"pid {p.pid} (gone)"


def session_processes() -> dict[ProcKey, psutil.Process]:
    """Live processes started (directly or not) by this test session, pytest itself excluded."""
    me = os.getpid()
    found: dict[ProcKey, psutil.Process] = {}
    candidates = {p.pid: p for p in psutil.Process(me).children(recursive=True)}
    for p in psutil.process_iter():
        if p.pid != me and p.pid not in candidates and _is_ours(p):
            candidates[p.pid] = p
    for p in candidates.values():
        with contextlib.suppress(psutil.Error):
            if p.name() in PROCESS_LIFETIME_HELPERS:
                continue
            if p.status() != psutil.STATUS_ZOMBIE:
                found[(p.pid, p.create_time())] = p
    return found


def leftovers(before: dict[ProcKey, psutil.Process], grace: float = LEAK_GRACE_S) -> list[psutil.Process]:
    """Processes of this session that were not in `before` and are still alive after `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        new = [p for key, p in session_processes().items() if key not in before]
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.1)


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=3.0)


@pytest.fixture(autouse=True)
def no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if a process it started (p2pd, anvil, node, a peer, anything) is still alive after it."""
    before = session_processes()
    yield
    left = leftovers(before)
    if left:
        described = [_describe(p) for p in left]
        kill_all(left)
        watched = [d for d in described if any(n in d for n in WATCHED_NAMES)]
        pytest.fail(
            f"{request.node.nodeid} left {len(left)} process(es) running (now killed)"
            + (f", including {len(watched)} p2pd/anvil/node/peer" if watched else "")
            + ":\n  " + "\n  ".join(described),
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Session-scoped fixtures are torn down by now: anything of ours still alive is a leak; kill it."""
    left = list(session_processes().values())
    if left:
        described = "\n  ".join(_describe(p) for p in left)
        kill_all(left)
        print(f"\nswarm conftest: {len(left)} process(es) outlived the test session (killed):\n  {described}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def children() -> Iterator[ChildSet]:
    """A set of child processes (`children.start(argv, name=...)`) that is always stopped after the test."""
    with ChildSet() as procs:
        yield procs
