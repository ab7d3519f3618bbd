"""Child processes started through runtime.procs never outlive their owner, whatever path the owner takes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from runtime.procs import ChildProcess, ChildSet, ProcessError, group_alive

pytestmark = pytest.mark.integration

PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(60)"]
# a child that starts a grandchild (plain Popen, no precautions) and prints its pid, then sleeps
PARENT_OF_SLEEPER = [
    PY, "-c",
    (
        "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print(p.pid, flush=True); time.sleep(60)"
    ),
]  # fmt: skip


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def wait_for_line(lines: list[str], timeout: float = 30.0) -> str:
    """The first line a child printed (its readiness signal), waiting up to `timeout` s for it."""
    deadline = time.monotonic() + timeout
    while not lines:
        assert time.monotonic() < deadline, "the child printed nothing"
        time.sleep(0.02)
    return lines[0]


def read_pid_line(child: ChildProcess, lines: list[str], timeout: float = 30.0) -> int:
    return int(wait_for_line(lines, timeout))


def test_child_leads_its_own_process_group_and_stop_kills_the_group():
    lines: list[str] = []
    with ChildProcess(PARENT_OF_SLEEPER, name="parent", on_line=lines.append) as child:
        grandchild = read_pid_line(child, lines)
        assert os.getpgid(child.pid) == child.pid
        assert os.getpgid(grandchild) == child.pid
    assert not child.alive
    assert wait_gone(grandchild, 1.0)
    assert not group_alive(child.pid)


def test_child_that_ignores_sigint_is_terminated():
    src = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('ignoring', flush=True); time.sleep(60)"
    ignore_sigint = [PY, "-c", src]
    lines: list[str] = []
    child = ChildProcess(ignore_sigint, name="stubborn", on_line=lines.append).start()
    assert wait_for_line(lines) == "ignoring"  # the handler is installed: SIGINT cannot kill it now
    child.stop(interrupt_grace=0.5, terminate_grace=2.0)
    assert child.returncode == -signal.SIGTERM


def test_child_set_stops_every_child_once():
    with ChildSet() as procs:
        a = procs.start(SLEEP, name="a")
        b = procs.start(SLEEP, name="b")
        assert a.alive and b.alive
    assert not a.alive and not b.alive
    procs.stop_all()  # idempotent


def test_missing_executable_is_a_clear_error():
    with pytest.raises(ProcessError, match="cannot start ghost"):
        ChildProcess(["/nonexistent/binary"], name="ghost").start()


def test_children_die_with_their_parent(tmp_path: Path):
    """The owner is SIGKILLed without any clean-up: its child gets SIGKILL from the kernel (PDEATHSIG)."""
    owner_src = textwrap.dedent(
        f"""
        import sys, time
        from runtime.procs import ChildProcess
        c = ChildProcess({SLEEP!r}, name="sleeper").start()
        print(c.pid, flush=True)
        time.sleep(60)
        """
    )
    lines: list[str] = []
    owner = ChildProcess([PY, "-c", owner_src], name="owner", on_line=lines.append).start()
    try:
        child_pid = read_pid_line(owner, lines)
        os.kill(owner.pid, signal.SIGKILL)
        assert wait_gone(child_pid), "the child outlived its SIGKILLed owner"
    finally:
        owner.stop()


def test_a_child_run_to_completion_dies_with_its_killed_owner():
    """`procs.run` (a test runs a peer to its end with it) leaves no orphan when its owner is SIGKILLed mid-run, as
    a plain subprocess.run did when CI's pytest was killed (a trainer peer outlived it)."""
    owner_src = textwrap.dedent(
        f"""
        import threading, time
        from runtime import procs
        threading.Thread(target=procs.run, args=({PARENT_OF_SLEEPER!r},), daemon=True).start()
        time.sleep(60)
        """
    )
    owner = ChildProcess([PY, "-c", owner_src], name="owner").start()
    try:
        deadline = time.monotonic() + 30
        while not (kids := psutil.Process(owner.pid).children()):
            assert time.monotonic() < deadline, "the owner never started its child"
            time.sleep(0.05)
        (child,) = kids
        os.kill(owner.pid, signal.SIGKILL)
        assert wait_gone(child.pid), "the child outlived its SIGKILLed owner"
    finally:
        owner.stop()


def test_watchdog_kills_descendants_of_a_killed_owner():
    """A grandchild started with no precautions (as hivemind starts p2pd) is killed by the owner's watchdog."""
    owner_src = textwrap.dedent(
        """
        import subprocess, sys, time
        from runtime.procs import start_watchdog
        p = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(60)"])
        start_watchdog(interval=0.1)  # returns after its first poll: it has seen p
        print(p.pid, flush=True)
        time.sleep(60)
        """
    )
    lines: list[str] = []
    owner = ChildProcess([PY, "-c", owner_src], name="owner", on_line=lines.append).start()
    try:
        orphan = read_pid_line(owner, lines)
        assert os.getpgid(orphan) != owner.pid  # out of the owner's group: only the watchdog can find it
        os.kill(owner.pid, signal.SIGKILL)
        assert wait_gone(orphan), "the watchdog did not kill the orphaned descendant"
    finally:
        owner.stop()


def test_sigterm_runs_cleanup_like_ctrl_c(tmp_path: Path):
    marker = tmp_path / "cleaned"
    src = textwrap.dedent(
        f"""
        import time
        from runtime.procs import raise_on_termination_signals
        raise_on_termination_signals()
        try:
            print("ready", flush=True)
            time.sleep(60)
        finally:
            open({str(marker)!r}, "w").write("yes")
        """
    )
    lines: list[str] = []
    child = ChildProcess([PY, "-c", src], name="cleaner", on_line=lines.append, interrupt_signal=signal.SIGTERM)
    with child:
        assert wait_for_line(lines) == "ready"  # the handlers are installed before SIGTERM comes
    assert marker.read_text() == "yes"


def test_leak_check_fails_a_test_that_leaves_a_process(tmp_path: Path):
    """The autouse check in tests/conftest.py is honest: a leaking test fails, and the leftover is killed."""
    shutil.copy(Path(__file__).parents[1] / "conftest.py", tmp_path / "conftest.py")
    pid_file = tmp_path / "pid"
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            f"""
            import subprocess, sys
            def test_leaks():
                p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
                open({str(pid_file)!r}, "w").write(str(p.pid))

            def test_clean():
                subprocess.run([sys.executable, "-c", "pass"], check=True)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "SWARM_TEST_SESSION"} | {"SWARM_LEAK_GRACE": "1"}
    result = subprocess.run(
        [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 passed, 1 error" in result.stdout  # the leak fails the test's teardown
    assert "test_leaks left 1 process(es) running (now killed)" in result.stdout
    assert wait_gone(int(pid_file.read_text()), 5.0)
