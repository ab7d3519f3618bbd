"""Python client of the ZoKrates Node worker (zk/worker.mjs): one long-lived subprocess, JSON lines, timeouts.

The worker is a runtime.procs.ChildProcess: its own process group, SIGKILL when this process dies
(PR_SET_PDEATHSIG), stopped with its whole group; it also exits on its own when its stdin closes or its
parent changes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Self

from runtime.procs import ChildProcess, ProcessError

logger = logging.getLogger(__name__)

WORKER_PATH = Path(__file__).with_name("worker.mjs")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 120.0
START_TIMEOUT = 60.0


class ProofError(RuntimeError):
    """The ZoKrates worker could not do what was asked (statement false, timeout, worker gone)."""



def find_node() -> str:
    node = os.environ.get("SWARM_NODE") or shutil.which("node")
    if not node:
        raise ProofError("Node.js is not on PATH; install Node 20 and run `./dev.sh install` (npm install)")
    return node


class ZkWorker:
    """Owns one zk/worker.mjs process. Use as a context manager, or call start() and shutdown()."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._proc: ChildProcess | None = None
        self._answers: queue.Queue[dict | None] = queue.Queue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.alive

    def start(self) -> Self:
        if self.alive:
            return self
        if not (REPO_ROOT / "node_modules" / "zokrates-js").is_dir():
            raise ProofError(f"zokrates-js is not installed under {REPO_ROOT}; run `./dev.sh install`")
        self._answers = queue.Queue()
        self._proc = ChildProcess([find_node(), str(WORKER_PATH)], name="zk-worker", cwd=REPO_ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            self._proc.start()
        except ProcessError as exc:
            self._proc = None
            raise ProofError(f"the ZoKrates worker could not start: {exc}") from exc
        threading.Thread(target=self._read_answers, args=(self._proc,), daemon=True, name="zk-worker-out").start()
        threading.Thread(target=self._log_stderr, args=(self._proc,), daemon=True, name="zk-worker-err").start()
        try:
            ready = self._answers.get(timeout=START_TIMEOUT)
        except queue.Empty:
            ready = None
        if not ready or ready.get("id") != "ready":
            self.shutdown()
            raise ProofError("the ZoKrates worker did not start; check that `node zk/worker.mjs` runs")
        logger.debug("zk worker started (pid %d)", self._proc.pid)
        return self

    def shutdown(self) -> None:
        """Close stdin (the worker exits), wait briefly, then stop its whole process group. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        proc.wait(timeout=2)
        proc.stop(interrupt_grace=1.0, terminate_grace=1.0)  # ends the group, closes the pipes

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> Any:
        """Send one request and wait for its answer; a worker error or timeout raises ProofError."""
        with self._lock:
            proc = self._proc
            if proc is None or not proc.alive:
                raise ProofError("the ZoKrates worker is not running; start() it (it may have crashed earlier)")
            req_id = next(self._ids)
            line = json.dumps({"id": req_id, "op": op, **fields}) + "\n"
            try:
                proc.stdin.write(line.encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise ProofError(f"the ZoKrates worker went away: {exc}") from exc
            limit = self.timeout if timeout is None else timeout
            try:
                msg = self._answers.get(timeout=limit)
            except queue.Empty:
                self.shutdown()
                raise ProofError(f"the ZoKrates worker did not answer `{op}` within {limit:.0f} s; it was "
                                 f"stopped, start() a new one (or raise the timeout for larger circuits)") from None
            if msg is None:
                self.shutdown()
                raise ProofError(f"the ZoKrates worker exited while doing `{op}` (out of memory?)")
            if msg.get("id") != req_id:
                raise ProofError(f"the ZoKrates worker answered request {msg.get('id')} instead of {req_id}")
            if not msg.get("ok"):
                raise ProofError(f"ZoKrates `{op}` failed: {msg.get('error')}")
            return msg.get("result")

    def _read_answers(self, proc: ChildProcess) -> None:
        with contextlib.suppress(ValueError, OSError):  # shutdown() closed the pipe under us
            for raw in proc.stdout:
                try:
                    self._answers.put(json.loads(raw))
                except json.JSONDecodeError:
                    logger.warning("zk worker wrote a non-JSON line: %r", raw[:200])
        self._answers.put(None)

    @staticmethod
    def _log_stderr(proc: ChildProcess) -> None:
        with contextlib.suppress(ValueError, OSError):
            for raw in proc.stderr:
                logger.debug("zk worker: %s", raw.decode(errors="replace").rstrip())
