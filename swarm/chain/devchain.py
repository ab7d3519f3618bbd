"""The embedded dev chain: `anvil --network optimism` from node_modules on a free loopback port.

Anvil runs as a `runtime.procs.ChildProcess`: its own process group, killed with the parent (PR_SET_PDEATHSIG);
`stop()` (or leaving the `with` block, exception included) ends the whole group. The dev accounts' keys never reach argv or logs.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, SecretStr

from runtime.procs import ChildProcess, ProcessError
from swarm.chain.errors import DevChainError
from swarm.chain.paths import ANVIL_BINARY, ANVIL_WRAPPER

logger = logging.getLogger("swarm.chain.devchain")

_START_ATTEMPTS = 3
_STOP_GRACE_S = 5.0


class DevAccount(BaseModel):
    """A funded dev account of the local chain (the key is a SecretStr: it never shows in repr or logs)."""

    model_config = ConfigDict(frozen=True)

    address: str
    private_key: SecretStr


def anvil_command() -> list[str]:
    """The command that runs anvil: the platform binary from node_modules, else the npm wrapper via node."""
    if ANVIL_BINARY.is_file() and os.access(ANVIL_BINARY, os.X_OK):
        return [str(ANVIL_BINARY)]
    node = shutil.which("node")
    if ANVIL_WRAPPER.is_file() and node:
        return [node, str(ANVIL_WRAPPER)]
    raise DevChainError(
        f"anvil not found at {ANVIL_BINARY} (nor the npm wrapper {ANVIL_WRAPPER}); run `./dev.sh install` "
        "(npm install) in the project root"
    )


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevChain:
    """A local OP-Stack-flavoured L2 dev chain (anvil) for the demo and the tests.

    >>> with DevChain() as chain:
    ...     print(chain.rpc_url, chain.accounts[0].address)
    """

    def __init__(
        self,
        *,
        accounts: int = 10,
        balance_eth: int = 10_000,
        chain_id: int = 31337,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if accounts < 1:
            raise DevChainError("a dev chain needs at least one account")
        self.chain_id = chain_id
        self._n_accounts = accounts
        self._balance_eth = balance_eth
        self._startup_timeout = startup_timeout
        self._extra_args = list(extra_args)
        self._proc: ChildProcess | None = None
        self._workdir: Path | None = None
        self._lock = threading.Lock()
        self.port: int | None = None
        self.accounts: list[DevAccount] = []

    @property
    def rpc_url(self) -> str:
        if self.port is None:
            raise DevChainError("the dev chain is not running; call start() or use it as a context manager")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.alive

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Start anvil and wait until its RPC answers; raises DevChainError with the reason if not."""
        with self._lock:
            if self._proc is not None:
                raise DevChainError("this dev chain is already running")
            self._workdir = Path(tempfile.mkdtemp(prefix="swarm-devchain-"))  # mode 0700
            atexit.register(self.stop)
            last_error = ""
            try:
                for _ in range(_START_ATTEMPTS):
                    last_error = self._try_start(free_loopback_port())
                    if not last_error:
                        logger.info("dev chain (anvil, optimism) at %s, pid %d", self.rpc_url, self._proc.pid)
                        return self
            except BaseException:
                self._stop_locked()
                raise
            self._stop_locked()
            raise DevChainError(f"anvil did not start after {_START_ATTEMPTS} attempts: {last_error}")

    def _try_start(self, port: int) -> str:
        """One start attempt on `port`: '' on success, else the reason (the process is stopped)."""
        assert self._workdir is not None
        config_out = self._workdir / "anvil.json"
        config_out.unlink(missing_ok=True)
        stderr_path = self._workdir / "anvil.stderr"
        cmd = [
            *anvil_command(), "--network", "optimism", "--host", "127.0.0.1", "--port", str(port),
            "--chain-id", str(self.chain_id), "--accounts", str(self._n_accounts),
            "--balance", str(self._balance_eth), "--quiet", "--config-out", str(config_out),
            *self._extra_args,
        ]  # fmt: skip
        with open(stderr_path, "wb") as stderr:
            self._proc = ChildProcess(cmd, name="anvil", stderr=stderr, interrupt_signal=signal.SIGTERM)
            try:
                self._proc.start()
            except ProcessError as exc:
                self._proc = None
                return str(exc)
        self.port = port
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if not self._proc.alive:
                code = self._proc.returncode
                self._kill_proc()
                reason = stderr_path.read_text(errors="replace").strip()[-500:]
                return f"anvil exited with code {code}: {reason or 'no output'}"
            if config_out.exists() and self._rpc_answers():
                self.accounts = self._read_accounts(config_out)
                config_out.unlink(missing_ok=True)
                return ""
            time.sleep(0.05)
        self._kill_proc()
        return f"its RPC did not answer within {self._startup_timeout:.0f} s"

    def _read_accounts(self, config_out: Path) -> list[DevAccount]:
        for _ in range(20):  # anvil may still be writing the file
            try:
                cfg = json.loads(config_out.read_text())
                pairs = zip(cfg["available_accounts"], cfg["private_keys"], strict=True)
                return [DevAccount(address=a, private_key=SecretStr(k)) for a, k in pairs]
            except (json.JSONDecodeError, KeyError, ValueError):
                time.sleep(0.05)
        raise DevChainError(f"could not read anvil's account list from {config_out}")

    def _rpc_answers(self) -> bool:
        try:
            return int(self.rpc("eth_chainId", [], timeout=1.0), 16) == self.chain_id
        except (DevChainError, ValueError):
            return False

    def rpc(self, method: str, params: list[Any], *, timeout: float = 10.0) -> Any:
        """One raw JSON-RPC call (for dev-only methods such as evm_increaseTime, evm_mine, evm_snapshot)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        req = urllib.request.Request(self.rpc_url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                reply = json.loads(resp.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise DevChainError(f"dev chain RPC {method} at {self.rpc_url} failed: {exc}") from exc
        if "error" in reply:
            message = reply["error"].get("message", reply["error"])
            raise DevChainError(f"dev chain RPC {method} failed: {message}")
        return reply.get("result")

    def increase_time(self, seconds: int) -> None:
        """Move the chain's clock forward by `seconds` and mine a block, so block.timestamp reflects it."""
        self.rpc("evm_increaseTime", [int(seconds)])
        self.rpc("evm_mine", [])

    def set_next_timestamp(self, timestamp: int) -> None:
        """Make the next block's timestamp exactly `timestamp` and mine it."""
        self.rpc("evm_setNextBlockTimestamp", [int(timestamp)])
        self.rpc("evm_mine", [])

    def latest_timestamp(self) -> int:
        return int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def stop(self) -> None:
        """Kill anvil's process group and remove its working folder; safe to call twice."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        self._kill_proc()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.port = None
        atexit.unregister(self.stop)

    def _kill_proc(self) -> None:
        if self._proc is not None:
            self._proc.stop(interrupt_grace=_STOP_GRACE_S, terminate_grace=_STOP_GRACE_S)
            logger.debug("dev chain pid %d stopped", self._proc.pid)
            self._proc = None
