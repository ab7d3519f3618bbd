"""The state directory of a launched experiment: what runs (pids), where (URLs, addresses), never a key.

    <state dir>/state.json     status, supervisor pid, child pids, join command, dashboard URL, chain addresses
    <state dir>/events.jsonl   events of the peers launch started on this machine (one JSON line each)
    <state dir>/history.json   the monitor's record of the run (rounds, losses, rewards as the chain says)
    <state dir>/logs/          one log per process;  keys/ (0700): wallet key files of local paid peers
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil

STATE, EVENTS, HISTORY = "state.json", "events.jsonl", "history.json"


class StateError(RuntimeError):
    """No experiment was launched in that state directory, or it cannot be read."""


def read_state(state_dir: Path) -> dict[str, Any]:
    path = Path(state_dir) / STATE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StateError(f"no experiment was launched with state directory {state_dir} (no {STATE})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise StateError(f"{path} cannot be read: {exc}") from None


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    path = Path(state_dir) / STATE
    tmp = path.with_name(f".{STATE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


def update_state(state_dir: Path, **changes: Any) -> dict[str, Any]:
    try:
        state = read_state(state_dir)
    except StateError:
        state = {}
    state.update(changes, updated_at=time.time())
    write_state(state_dir, state)
    return state


def pid_alive(pid: int | None, started: float | None = None) -> bool:
    """Whether `pid` runs and (if `started` is given) is the process that started then (not a reused pid)."""
    if not pid:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(p.create_time() - started) < 1.0
    except psutil.Error:
        return False


def process_started(pid: int) -> float | None:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).create_time()
    return None


def supervisor_alive(state: dict[str, Any]) -> bool:
    return pid_alive(state.get("supervisor_pid"), state.get("supervisor_started"))


def stop_supervisor(state_dir: Path, timeout: float = 60.0) -> bool:
    """SIGTERM the supervisor (it stops every process it started) and wait; True if it was running."""
    state = read_state(state_dir)
    if not supervisor_alive(state):
        return False
    pid = state["supervisor_pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid, state.get("supervisor_started")) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid, state.get("supervisor_started")):  # it did not stop in time: its group goes
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return True
