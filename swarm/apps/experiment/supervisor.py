"""The launched experiment's owner process: chain, escrow experiment, bootstrap peer, monitor, local peers.

`swarm-experiment launch` starts it detached (its own session) and returns once it reports `running` in the
state directory; `swarm-experiment stop` sends it SIGTERM and it stops every process it started (each a
runtime.procs.ChildProcess, so none can outlive it) and the embedded chain. `launch --foreground` runs it in the
terminal (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from runtime.procs import ChildProcess, ChildSet, ShutdownRequested, raise_on_termination_signals
from swarm.apps.events import Ready, parse_event
from swarm.apps.experiment.checkpoint import ENV_DIR, ENV_EVERY, ENV_OFFSET, ENV_RESUME, read_manifest
from swarm.apps.experiment.config import ExperimentConfig, load_config
from swarm.apps.experiment.state import EVENTS, process_started, update_state

logger = logging.getLogger("swarm.experiment")

START_TIMEOUT_S = 120.0
CHECKPOINT_HOOK = "swarm.apps.experiment.checkpoint:on_round"


class LaunchError(RuntimeError):
    """Something the experiment needs could not be started; the message says what and where its log is."""


def free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def round_env(c: ExperimentConfig) -> dict[str, str]:
    """How the stage peers launch starts average (swarm-peer reads SWARM_<SETTING>; so does the checkpoint hook)."""
    return {"SWARM_OUTER_OPTIMIZER": c.experiment.outer_optimizer, "SWARM_AGGREGATION": c.experiment.aggregation}


def round_flags(c: ExperimentConfig) -> list[str]:
    """The same, as flags of the printed join command (only where they differ from swarm-peer's defaults)."""
    flags = []
    if c.experiment.outer_optimizer != "sgd":
        flags += ["--outer-optimizer", c.experiment.outer_optimizer]
    if c.experiment.aggregation != "mean":
        flags += ["--aggregation", c.experiment.aggregation]
    return flags


class _RpcTarget:
    """What deploy_demo needs of a chain (RPC URL, chain id, the funder's account), for any RPC."""

    def __init__(self, rpc_url: str, chain_id: int, accounts: list) -> None:
        self.rpc_url, self.chain_id, self.accounts = rpc_url, chain_id, accounts


class Economy:
    """The escrow side: an embedded anvil with everything deployed, or an RPC with the researcher's key file."""

    def __init__(self, cfg: ExperimentConfig, state_dir: Path, chain_rpc: str | None, key_file: Path | None):
        self.cfg, self.state_dir, self.chain_rpc, self.key_file = cfg, state_dir, chain_rpc, key_file
        self.info: dict[str, Any] | None = None
        self.peer_keys: list[Path] = []

    def start(self, stack: ExitStack) -> dict[str, Any] | None:
        eco = self.cfg.economy
        if eco.chain == "none" and self.chain_rpc is None:
            return None
        from swarm.apps.demo.economy import ensure_circuit_keys, stage_sizes

        sizes = stage_sizes(self.cfg.experiment.workload, self.cfg.experiment.n_stages)
        if self.cfg.local.stage_peers:  # paid local peers prove every round: the circuit's keys first (once)
            update_state(self.state_dir, step="circuit keys (first run only, about a minute)")
            # the committed dev keys and verifier, and the same keys converted for groth16py (the peers' default)
            ensure_circuit_keys("groth16py")
            update_state(self.state_dir, step="chain")
        if eco.chain == "embedded" and self.chain_rpc is None:
            self.info = self._embedded(stack, sizes)
        else:
            self.info = self._rpc(sizes)
        return self.info

    def _demo_config(self, sizes: tuple[int, ...]):
        from swarm.chain.deploy import TOKEN, DemoConfig

        e, c = self.cfg.economy, self.cfg
        windows = {k: v for k, v in (("submit_window", e.submit_window), ("audit_window", e.audit_window))
                   if v is not None}  # unset: the deployer's defaults, which meet the escrow's floors
        return DemoConfig(
            stage_params=sizes, chunk_size=e.chunk_size, round_duration=c.experiment.round_duration,
            audits_per_peer=e.audits_per_peer, num_rounds=e.num_rounds, norm_bound=e.norm_bound,
            reward_per_round=c.reward_wei(), pool=c.pool_wei(), verifier=e.verifier, peer_tokens=1_000 * TOKEN,
            require_certificate=e.require_certificate, **windows,
        )  # fmt: skip

    def _embedded(self, stack: ExitStack, sizes: tuple[int, ...]) -> dict[str, Any]:
        from swarm.chain.deploy import deploy_demo
        from swarm.chain.devchain import DevChain
        from swarm.chain.wallet import create_key_file

        n_paid = self.cfg.local.stage_peers
        chain = stack.enter_context(DevChain(accounts=1 + n_paid, extra_args=["--block-time", "1"]))
        dep = deploy_demo(chain, self._demo_config(sizes), stakers=range(1, 1 + n_paid))
        keys = self.state_dir / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        for i in range(n_paid):
            path = keys / f"stage-peer-{i}.key"
            path.unlink(missing_ok=True)
            create_key_file(path, chain.accounts[i + 1].private_key)
            self.peer_keys.append(path)
        return {"kind": "embedded", "rpc_url": dep.rpc_url, "escrow": dep.escrow, "token": dep.token,
                "verifier": dep.verifier_name, "experiment_id": dep.experiment_id, "funder": dep.funder,
                "anvil_pid": chain.pid}  # fmt: skip

    def _rpc(self, sizes: tuple[int, ...]) -> dict[str, Any]:
        """On any RPC with the researcher's key file: deploy everything as on the embedded chain (deploy_demo,
        with this one account and no stakers), or attach to `economy.escrow` and create + fund the experiment."""
        from pydantic import SecretStr

        from swarm.chain.client import ChainClient
        from swarm.chain.deploy import deploy_demo
        from swarm.chain.devchain import DevAccount
        from swarm.chain.models import ExperimentSpec
        from swarm.chain.wallet import Wallet

        if self.chain_rpc is None or self.key_file is None:
            raise LaunchError("economy.chain = 'rpc' needs --chain-rpc URL and --key-file PATH (chmod 600)")
        wallet = Wallet.from_file(self.key_file)  # refuses a key file others can read
        client = ChainClient(self.chain_rpc, wallet)
        e, d = self.cfg.economy, self._demo_config(sizes)
        if e.escrow is None:
            key = SecretStr(self.key_file.read_text().strip())
            target = _RpcTarget(self.chain_rpc, int(client.w3.eth.chain_id), [DevAccount(address=wallet.address,
                                                                                         private_key=key)])
            dep = deploy_demo(target, d, stakers=[])
            return {"kind": "rpc", "rpc_url": self.chain_rpc, "escrow": dep.escrow, "token": dep.token,
                    "verifier": dep.verifier_name, "experiment_id": dep.experiment_id, "funder": dep.funder}
        if e.verifier_address is None:
            raise LaunchError("economy.escrow needs economy.verifier_address: a verifier that escrow allows")
        client.attach(e.escrow)
        spec = ExperimentSpec(
            verifier=e.verifier_address, start=client.block_timestamp(), round_duration=d.round_duration,
            submit_window=d.submit_window, audit_window=d.audit_window, audits_per_peer=d.audits_per_peer,
            num_rounds=d.num_rounds, chunk_size=d.chunk_size, reward_per_round=d.reward_per_round,
            norm_bound=d.norm_bound, stage_params=list(sizes), require_certificate=d.require_certificate,
        )  # fmt: skip
        experiment_id = client.create_experiment(spec)
        client.fund(experiment_id, d.pool)
        return {"kind": "rpc", "rpc_url": self.chain_rpc, "escrow": client.escrow_address,
                "token": client.token.address, "verifier": e.verifier_address, "experiment_id": experiment_id,
                "funder": client.address}  # fmt: skip

    def chain_args(self) -> list[str]:
        return [] if self.info is None else ["--chain-rpc", self.info["rpc_url"], "--escrow", self.info["escrow"]]


class Supervisor:
    def __init__(self, cfg: ExperimentConfig, state_dir: Path, *, chain_rpc: str | None = None,
                 key_file: Path | None = None, resume_from: Path | None = None) -> None:  # fmt: skip
        self.cfg, self.state_dir = cfg, state_dir
        self.resume_from = resume_from or cfg.checkpoints.resume_from
        self.economy = Economy(cfg, state_dir, chain_rpc, key_file)
        self.children = ChildSet()
        self.logs = state_dir / "logs"
        self._events_lock = threading.Lock()
        self._events_file = None
        self._ready: dict[str, Ready] = {}
        self._ready_cv = threading.Condition()
        self.round_offset = 0

    @property
    def checkpoint_dir(self) -> Path:
        d = self.cfg.checkpoints.dir
        return d if d.is_absolute() else self.state_dir / d

    def _on_line(self, name: str, line: str) -> None:
        event = parse_event(line)
        if event is None:
            return
        event.peer = name
        with self._events_lock:
            if self._events_file is not None:
                data = event.model_dump(mode="json")
                self._events_file.write(json.dumps({"kind": data.pop("kind"), **data}) + "\n")
                self._events_file.flush()
        if isinstance(event, Ready):
            with self._ready_cv:
                self._ready[name] = event
                self._ready_cv.notify_all()

    def _wait_ready(self, child: ChildProcess, timeout: float = START_TIMEOUT_S) -> Ready:
        deadline = time.monotonic() + timeout
        with self._ready_cv:
            while child.name not in self._ready:
                if not child.alive:
                    raise LaunchError(f"{child.name} exited with code {child.returncode}; see "
                                      f"{self.logs / (child.name + '.log')}")  # fmt: skip
                if time.monotonic() > deadline:
                    raise LaunchError(f"{child.name} was not ready after {timeout:.0f} s; see its log in {self.logs}")
                self._ready_cv.wait(0.2)
            return self._ready[child.name]

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ChildProcess:
        with open(self.logs / f"{name}.log", "ab") as log:
            full_env = {**os.environ, **(env or {})}
            return self.children.start(argv, name=name, stderr=log, env=full_env,
                                       on_line=lambda line: self._on_line(name, line))  # fmt: skip

    def peer_argv(self) -> list[str]:
        c = self.cfg
        return [sys.executable, "-m", "swarm.peer", "--events", "--host", c.local.host,
                "--experiment", c.experiment.name]  # fmt: skip

    def run(self, stop: threading.Event) -> None:
        """Start everything, report `running`, wait for `stop` (or a signal); everything is stopped on the way out."""
        self.logs.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        if self.resume_from is not None:
            manifest = read_manifest(self.resume_from)
            self.round_offset = int(manifest["round"]) + 1
        with ExitStack() as stack:
            self._events_file = stack.enter_context(open(self.state_dir / EVENTS, "a"))
            update_state(self.state_dir, status="starting", step="chain")
            chain = self.economy.start(stack)
            stack.callback(self.children.stop_all)  # before the chain goes: the monitor's last reading sees it
            update_state(self.state_dir, chain=chain, step="bootstrap")
            boot_args = ["--role", "bootstrap", "--workload", c.experiment.workload,
                         "--n-stages", str(c.experiment.n_stages), "--round-duration", str(c.experiment.round_duration)]
            if chain is not None:
                boot_args += [*self.economy.chain_args(), "--chain-experiment", str(chain["experiment_id"])]
            boot = self._start("bootstrap", [*self.peer_argv(), *boot_args])
            maddrs = self._wait_ready(boot).maddrs
            join = ["swarm-peer", "--join", "--experiment", c.experiment.name, *round_flags(c),
                    "--initial-peers", *maddrs]  # fmt: skip
            update_state(self.state_dir, step="monitor", initial_peers=maddrs, join_command=" ".join(join))
            url = self._start_monitor(maddrs, chain)
            update_state(self.state_dir, dashboard_url=url, step="local peers")
            self._start_local_peers(maddrs)
            update_state(self.state_dir, status="running", step="", processes=self._pids(),
                         checkpoint_dir=str(self.checkpoint_dir), round_offset=self.round_offset)  # fmt: skip
            logger.info("experiment %r running; dashboard %s", c.experiment.name, url)
            while not stop.wait(1.0):
                update_state(self.state_dir, processes=self._pids())
            update_state(self.state_dir, status="stopping")
            self.children.stop_all()
            self._events_file = None

    def _pids(self) -> dict[str, dict[str, Any]]:
        out = {}
        for ch in self.children:
            out[ch.name] = {"pid": ch.pid, "alive": ch.alive, "started": process_started(ch.pid) if ch.alive else None,
                            "returncode": ch.returncode}  # fmt: skip
        return out

    def _start_monitor(self, maddrs: list[str], chain: dict[str, Any] | None) -> str:
        m = self.cfg.monitor
        port = m.port or free_port(m.host)
        argv = [sys.executable, "-m", "swarm.apps.experiment.monitor", "--state-dir", str(self.state_dir),
                "--experiment", self.cfg.experiment.name, "--initial-peers", *maddrs, "--host", m.host,
                "--port", str(port), "--poll-seconds", str(m.poll_seconds),
                "--checkpoint-dir", str(self.checkpoint_dir), "--round-offset", str(self.round_offset)]  # fmt: skip
        if chain is not None:
            argv += ["--chain-rpc", chain["rpc_url"], "--escrow", chain["escrow"],
                     "--chain-experiment", str(chain["experiment_id"])]  # fmt: skip
        child = self._start("monitor", argv)
        host = "127.0.0.1" if m.host in ("0.0.0.0", "") else m.host
        url = f"http://{host}:{port}/"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not child.alive:
                raise LaunchError(f"the monitor exited with code {child.returncode}; see {self.logs / 'monitor.log'}")
            try:
                with urllib.request.urlopen(url + "api/health", timeout=2) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(0.3)
        raise LaunchError(f"the monitor did not answer at {url} within {START_TIMEOUT_S:.0f} s")

    def _start_local_peers(self, maddrs: list[str]) -> None:
        c = self.cfg
        join = ["--join", "--initial-peers", *maddrs]
        env = {ENV_DIR: str(self.checkpoint_dir), ENV_EVERY: str(c.checkpoints.every_rounds),
               ENV_OFFSET: str(self.round_offset), **round_env(c)}  # fmt: skip
        if self.resume_from is not None:
            env[ENV_RESUME] = str(Path(self.resume_from).resolve())
        for i in range(c.local.stage_peers):
            paid = []
            if self.economy.peer_keys:
                paid = [*self.economy.chain_args(), "--wallet-key-file", str(self.economy.peer_keys[i])]
            child = self._start(f"stage-peer-{i}", [
                *self.peer_argv(), *join, "--role", "stage", "--lr", str(c.experiment.lr),
                "--seed", str(c.experiment.seed), "--round-hooks", CHECKPOINT_HOOK, *paid,
            ], env)  # fmt: skip
            self._wait_ready(child)
        for i in range(c.local.trainers):
            self._start(f"trainer-{i}", [*self.peer_argv(), *join, "--role", "trainer",
                                         "--batch-size", str(c.experiment.batch_size), "--seed", str(i)])


def run(config_path: Path, state_dir: Path, *, chain_rpc: str | None = None, key_file: Path | None = None,
        resume_from: Path | None = None) -> int:  # fmt: skip
    """The supervisor's body (detached by launch, or in the foreground); 0 after a clean stop."""
    state_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config_path)
    update_state(state_dir, status="starting", supervisor_pid=os.getpid(),
                 supervisor_started=process_started(os.getpid()), experiment=cfg.experiment.name,
                 config=str(Path(config_path).resolve()), config_data=cfg.model_dump(mode="json"), error=None,
                 dashboard_url=None, join_command=None, processes={})  # fmt: skip
    stop = threading.Event()
    sup = Supervisor(cfg, state_dir, chain_rpc=chain_rpc, key_file=key_file, resume_from=resume_from)
    try:
        sup.run(stop)
    except (KeyboardInterrupt, ShutdownRequested):
        update_state(state_dir, status="stopped", processes=sup._pids())
        return 0
    except Exception as exc:
        logger.exception("the experiment could not run")
        update_state(state_dir, status="failed", error=f"{type(exc).__name__}: {exc}", processes=sup._pids())
        return 1
    update_state(state_dir, status="stopped", processes=sup._pids())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m swarm.apps.experiment.supervisor",
                                description="the owner process of a launched experiment (started by launch)")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--chain-rpc")
    p.add_argument("--key-file", type=Path)
    p.add_argument("--resume-from", type=Path)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise_on_termination_signals()
    return run(a.config, a.state_dir, chain_rpc=a.chain_rpc, key_file=a.key_file, resume_from=a.resume_from)


if __name__ == "__main__":
    sys.exit(main())
