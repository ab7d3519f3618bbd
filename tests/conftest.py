"""Shared fixtures: real parts started and always stopped, and an autouse check that no test leaves a process behind.

Every process this test session starts inherits SWARM_TEST_SESSION (p2pd, anvil and node workers inherit our
environment too), so a leftover is found even after it was re-parented to init, and only ours are ever killed.
"""

from __future__ import annotations

import concurrent.futures.thread
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator

import psutil
import pytest

from runtime.procs import ChildSet

SESSION_ENV = "SWARM_TEST_SESSION"
SESSION_TAG = f"{SESSION_ENV}={uuid.uuid4().hex}"
os.environ[SESSION_ENV] = SESSION_TAG.split("=", 1)[1]
# paid peers started by tests keep their settlement journals here, not in the user's ~/.swarm; removed at the end
TEST_DATA_DIR = tempfile.mkdtemp(prefix="swarm-test-data-")
os.environ["SWARM_DATA_DIR"] = TEST_DATA_DIR

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
    global _exit_status
    _exit_status = int(session.exitstatus)
    shutil.rmtree(TEST_DATA_DIR, ignore_errors=True)


def _is_idle_pool_worker(frame) -> bool:
    """Whether a thread's stack is an executor worker waiting for work (joined at exit without trouble)."""
    callee = None
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_worker" and code.co_filename.endswith(os.path.join("concurrent", "futures", "thread.py")):
            return callee is None  # in work_queue.get(), a C call: no frame above _worker's own
        callee, frame = frame, frame.f_back
    return False


def busy_threads(before: set[int]) -> list[threading.Thread]:
    """Non-daemon threads not in `before` that are doing something: the interpreter waits for them at exit, so
    one that never ends hangs the process after the last test (idle executor workers are told to stop; fine)."""
    frames = sys._current_frames()
    return [t for t in threading.enumerate()
            if not t.daemon and t is not threading.main_thread() and t.is_alive() and t.ident not in before
            and not _is_idle_pool_worker(frames.get(t.ident))]  # fmt: skip


def describe_threads(threads: list[threading.Thread]) -> str:
    frames = sys._current_frames()
    return "\n".join(f"thread {t.name!r}:\n" + "".join(traceback.format_stack(frames[t.ident])[-6:])
                     for t in threads if t.ident in frames)  # fmt: skip


@pytest.fixture(autouse=True)
def no_busy_threads_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if a non-daemon thread it started is still busy after it: such a thread makes pytest (and a
    peer) hang at exit, as one did on CI for 68 minutes after the last test passed."""
    before = {t.ident for t in threading.enumerate() if t.ident is not None}
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while (left := busy_threads(before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        pytest.fail(f"{request.node.nodeid} left {len(left)} busy non-daemon thread(s):\n{describe_threads(left)}",
                    pytrace=False)


_exit_status = 0


def pytest_unconfigure(config: pytest.Config) -> None:
    """The last hook: stop executor workers, wait a little for every non-daemon thread, and if one is stuck print
    where and leave with the tests' status instead of hanging at interpreter exit (CI would wait 90 minutes)."""
    concurrent.futures.thread._shutdown = True  # what the interpreter's own exit hook does, but with a deadline
    for queue in list(concurrent.futures.thread._threads_queues.values()):
        queue.put(None)
    deadline = time.monotonic() + 30.0
    stuck = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    for t in stuck:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in stuck if t.is_alive()]
    if stuck:
        print(f"\nswarm conftest: {len(stuck)} non-daemon thread(s) would hang the exit:\n{describe_threads(stuck)}",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(_exit_status or 1)


@pytest.fixture
def children() -> Iterator[ChildSet]:
    """A set of child processes (`children.start(argv, name=...)`) that is always stopped after the test."""
    with ChildSet() as procs:
        yield procs
