"""Start child processes that cannot outlive us, and stop them on every path (return, exception, signal, exit).

Each child leads its own process group and gets SIGKILL when its parent dies (PR_SET_PDEATHSIG); stopping is
SIGINT to the child, then SIGTERM and SIGKILL to its whole group, each with a timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Self

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
INTERRUPT_GRACE_S = 10.0  # after SIGINT: time for a clean shutdown (DHT, averager, server)
TERMINATE_GRACE_S = 3.0  # after SIGTERM to the group, before SIGKILL


class ProcessError(RuntimeError):
    """A child process could not be started or stopped."""


class ShutdownRequested(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM/SIGHUP, so that `finally` blocks run as they do on Ctrl-C."""


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the thread that started it dies (Linux PR_SET_PDEATHSIG).

    Start children from a long-lived thread (the main thread): the signal follows the starting *thread*.
    """
    parent_pid = os.getpid() if parent_pid is None else parent_pid
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child should only call into it

    def _preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return _preexec


def run(argv: Sequence[str], *, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run` for a child that must not outlive us: killed (SIGKILL) when the calling thread dies, so a
    killed test runner or script leaves no orphan (a peer run to completion by a test, say)."""
    return subprocess.run(argv, check=check, preexec_fn=die_with_parent(), **kwargs)


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _hold_stop_signals() -> set[signal.Signals] | None:
    """Block SIGINT/SIGTERM in the main thread (returns the old mask), or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _release_stop_signals(old: set[signal.Signals] | None) -> None:
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class ChildProcess:
    """One child process in its own process group; `stop()` ends it and everything it started.

    >>> with ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"], name="sleeper") as child:
    ...     assert child.alive
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stdin: int | IO | None = subprocess.DEVNULL,
        stdout: int | IO | None = subprocess.DEVNULL,
        stderr: int | IO | None = None,
        on_line: Callable[[str], None] | None = None,
        death_signal: int | None = signal.SIGKILL,
        interrupt_signal: int = signal.SIGINT,
    ) -> None:
        """`on_line`, if given, gets each line the child writes on stdout (read by a thread of ours);
        `death_signal` is what the child gets when we die (None: nothing); `interrupt_signal` asks it to leave.
        With `stdin`/`stdout` = subprocess.PIPE the binary pipes are `child.stdin`/`child.stdout` (e.g. for an
        asyncio reader: `loop.connect_read_pipe`)."""
        self.argv, self.name = list(argv), name
        self._env = None if env is None else dict(env)
        self._cwd = cwd
        self._stdin = stdin
        self._stdout = subprocess.PIPE if on_line is not None else stdout
        self._stderr = stderr
        self._on_line = on_line
        self._death_signal, self._interrupt_signal = death_signal, interrupt_signal
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ProcessError(f"{self.name} has not been started")
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def stdin(self) -> IO | None:
        """The child's stdin pipe (with stdin=subprocess.PIPE), else None."""
        return None if self._proc is None else self._proc.stdin

    @property
    def stdout(self) -> IO | None:
        """The child's stdout pipe (with stdout=subprocess.PIPE and no `on_line`), else None."""
        return None if self._proc is None or self._on_line is not None else self._proc.stdout

    @property
    def stderr(self) -> IO | None:
        """The child's stderr pipe (with stderr=subprocess.PIPE), else None."""
        return None if self._proc is None else self._proc.stderr

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the child (own process group, dies with us); raises ProcessError if it cannot be executed."""
        with self._lock:
            if self._proc is not None:
                raise ProcessError(f"{self.name} is already started")
            # A Ctrl-C landing inside Popen (after fork, before we hold the Popen) would leave a child nobody
            # stops; hold SIGINT/SIGTERM until the child is registered (they are delivered right after).
            held = _hold_stop_signals()
            try:
                self._proc = subprocess.Popen(
                    self.argv, env=self._env, cwd=self._cwd, stdin=self._stdin,
                    stdout=self._stdout, stderr=self._stderr, start_new_session=True,
                    preexec_fn=self._preexec(),  # noqa: PLW1509 (PDEATHSIG needs it; it only calls prctl)
                    text=self._on_line is not None, bufsize=1 if self._on_line is not None else -1,
                )  # fmt: skip
                _REGISTRY.add(self)
            except OSError as exc:
                raise ProcessError(f"cannot start {self.name} ({self.argv[0]}): {exc.strerror or exc}") from exc
            finally:
                _release_stop_signals(held)
        if self._on_line is not None:
            self._reader = threading.Thread(target=self._read_lines, name=f"{self.name}-stdout", daemon=True)
            self._reader.start()
        logger.debug("started %s (pid %d)", self.name, self._proc.pid)
        return self

    def _preexec(self) -> Callable[[], None] | None:
        death = None if self._death_signal is None else die_with_parent(sig=self._death_signal)

        def _child() -> None:
            # A parent may ignore SIGINT (hivemind's averager sets SIG_IGN in its caller) and an ignored signal
            # survives exec: reset it, or the child could never be interrupted. Then drop our hold on them.
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            if death is not None:
                death()

        return _child

    def _read_lines(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None and self._on_line is not None
        with contextlib.suppress(ValueError, OSError):  # the pipe closed under us
            for line in self._proc.stdout:
                try:
                    self._on_line(line.rstrip("\n"))
                except Exception:  # a bad line must not kill the reader
                    logger.exception("%s: handling a line of output failed", self.name)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child (not its group) to exit; its return code, or None on timeout."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        """Signal the child itself (e.g. SIGKILL to simulate a crash; its watchdog cleans up the rest)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    def interrupt(self) -> None:
        """Ask the child to leave cleanly (SIGINT, as Ctrl-C does, unless told otherwise); returns at once."""
        self.send_signal(self._interrupt_signal)

    def stop(self, interrupt_grace: float = INTERRUPT_GRACE_S, terminate_grace: float = TERMINATE_GRACE_S) -> None:
        """SIGINT the child, then SIGTERM and SIGKILL its whole group; returns when the group is gone (idempotent)."""
        stop_children([self], interrupt_grace, terminate_grace)

    def _gone(self) -> bool:
        """The child has exited (and is reaped) and nothing is left in its process group."""
        assert self._proc is not None
        return self._proc.poll() is not None and not group_alive(self._proc.pid)

    def _release(self) -> None:
        assert self._proc is not None
        if not self._gone():
            logger.error("%s (pgid %d) did not stop even after SIGKILL", self.name, self._proc.pid)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(1.0)
        _REGISTRY.discard(self)


class ChildSet:
    """Several children stopped together: all are interrupted at once, so stopping N takes one grace, not N."""

    def __init__(self) -> None:
        self.children: list[ChildProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def __iter__(self) -> Iterator[ChildProcess]:
        return iter(list(self.children))

    def start(self, argv: Sequence[str], *, name: str, **kwargs) -> ChildProcess:
        """Start one more child (see ChildProcess); it is stopped with the set."""
        child = ChildProcess(argv, name=name, **kwargs)
        self.children.append(child)
        return child.start()

    def stop_all(
        self, interrupt_grace: float = INTERRUPT_GRACE_S, terminate_grace: float = TERMINATE_GRACE_S
    ) -> None:
        """Interrupt every child, wait up to `interrupt_grace` for all, then kill what is left, group by group."""
        stop_children(self.children, interrupt_grace, terminate_grace)


def stop_children(
    children: Sequence[ChildProcess],
    interrupt_grace: float = INTERRUPT_GRACE_S,
    terminate_grace: float = TERMINATE_GRACE_S,
) -> None:
    """Stop `children` together, each phase for all at once: SIGINT to each child (a clean leave), then SIGTERM
    and SIGKILL to the process groups still alive, with one shared wait per phase."""
    started = [c for c in children if c._proc is not None]
    for child in started:
        if child.alive:
            child.interrupt()
    _wait_all(started, interrupt_grace, groups=False)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pending = [c for c in started if not c._gone()]
        if not pending:
            break
        for child in pending:
            logger.debug("%s: sending %s to its process group", child.name, signal.Signals(sig).name)
            _signal_group(child.pid, sig)
        _wait_all(pending, terminate_grace, groups=True)
    for child in started:
        child._release()


def _wait_all(children: Sequence[ChildProcess], timeout: float, *, groups: bool) -> None:
    """Wait until every child has exited (with `groups`: and its whole group), or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait(max(0.0, deadline - time.monotonic()))
        if groups:
            _wait_group_gone(child.pid, max(0.0, deadline - time.monotonic()))


class _Registry:
    """Every child started by this process and not yet stopped; stopped at interpreter exit."""

    def __init__(self) -> None:
        self._children: set[ChildProcess] = set()
        self._lock = threading.Lock()
        atexit.register(self.stop_all)

    def add(self, child: ChildProcess) -> None:
        with self._lock:
            self._children.add(child)

    def discard(self, child: ChildProcess) -> None:
        with self._lock:
            self._children.discard(child)

    def live(self) -> list[ChildProcess]:
        with self._lock:
            return list(self._children)

    def stop_all(self) -> None:
        live = self.live()
        if live:
            logger.info("stopping %d child process(es) left running", len(live))
            stop_children(live, interrupt_grace=3.0, terminate_grace=2.0)


_REGISTRY = _Registry()


def raise_on_termination_signals() -> None:
    """Turn SIGTERM and SIGHUP into ShutdownRequested in the main thread, so clean-up code runs as on Ctrl-C."""

    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise ShutdownRequested(f"received {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)


def start_watchdog(interval: float = 1.0, ready_timeout: float = 30.0) -> ChildProcess:
    """Guard this process's descendants: if we die without cleaning up (SIGKILL, OOM), the watchdog kills them.

    Our descendants (hivemind's DHT process and its p2pd, workers) do not die with us by themselves. The watchdog
    polls our descendant pids, and once we are gone it kills the ones it saw, and our process group if we led one.
    Returns once it has made its first poll (so the descendants we have now are guarded), or raises ProcessError
    after `ready_timeout` s. Stop it (`.stop()`) after a clean shutdown.
    """
    argv = [sys.executable, "-m", "runtime.procs", "--watch", str(os.getpid()), "--interval", str(interval)]
    polled = threading.Event()
    # no death signal: outliving us is its job; SIGTERM (not handled there) stops it at once
    watchdog = ChildProcess(argv, name="watchdog", death_signal=None, interrupt_signal=signal.SIGTERM,
                            on_line=lambda line: polled.set()).start()  # fmt: skip
    if not polled.wait(ready_timeout):
        watchdog.stop()
        raise ProcessError(f"the watchdog did not start within {ready_timeout:.0f} s")
    return watchdog


def _watch(parent_pid: int, interval: float) -> None:
    """The watchdog's body (in its own process): poll `parent_pid`'s descendants; kill them when it is gone."""
    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    me = os.getpid()
    try:
        parent = psutil.Process(parent_pid)
        pgid = os.getpgid(parent_pid)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    leads_group = pgid == parent_pid
    seen: dict[int, float] = {}
    first = True
    while True:
        try:
            if not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE:
                break
            for p in parent.children(recursive=True):
                if p.pid != me:
                    with contextlib.suppress(psutil.Error):
                        seen[p.pid] = p.create_time()
        except psutil.NoSuchProcess:
            break
        if first:  # tell start_watchdog() that it is guarding (the only line it ever writes)
            first = False
            with contextlib.suppress(OSError):
                print("watching", flush=True)
        time.sleep(interval)
    for pid, created in seen.items():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() == created:
                p.kill()
    if leads_group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # not this watchdog: it leads its own session


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="swarm's process watchdog (started by start_watchdog())")
    ap.add_argument("--watch", type=int, required=True, help="pid to guard")
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    _watch(args.watch, args.interval)
