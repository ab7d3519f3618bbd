"""`swarm-demo` / `python -m swarm.demo`: a whole swarm on loopback as separate processes, with live progress.

A bootstrap peer, stage peers over the pipeline's stages and trainer peers, each a `python -m swarm.peer`
reporting JSON-line events; everything is stopped on every path (end, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field
from rich.console import Console
from rich.live import Live

from runtime.procs import ChildProcess, ChildSet, ShutdownRequested, raise_on_termination_signals
from swarm.apps.demo.economy import SUBMIT_WINDOW_S, DemoEconomy
from swarm.apps.display import SwarmView, join_lines, render, summary_lines
from swarm.apps.events import PeerEvent, Ready, parse_event
from swarm.chain.deploy import Deployment
from swarm.chain.errors import ChainError
from swarm.rounds.attacks import ATTACKS, PeerAttack, attacks_help

logger = logging.getLogger("swarm.demo")

START_TIMEOUT_S = 120.0  # a peer imports torch and hivemind and starts a DHT: slow on a busy 2-core machine


class DemoError(RuntimeError):
    """The demo swarm could not be started (a peer failed; its log is named)."""


class DemoConfig(BaseModel):
    workload: str = "digits"
    duration: float = Field(60.0, gt=0)
    n_stages: int = Field(2, ge=1)
    stage_peers: int = Field(3, ge=1)
    trainers: int = Field(1, ge=1)
    round_duration: float = Field(10.0, gt=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    out: Path | None = None
    round_hooks: list[str] = []
    chain: bool = True  # embedded anvil + escrow: stage peers prove every round and are paid
    byzantine: int = Field(0, ge=0)  # the last N stage peers cheat every round (swarm-peer --byzantine)
    attack: PeerAttack = "poison"
    min_alignment: float | None = Field(None, ge=0)  # the stage peers' alignment rule in sigmas (None: their default)
    submit_window: int = Field(SUBMIT_WINDOW_S, ge=1)  # seconds after a round for its proofs to reach the chain
    prover_backend: Literal["groth16py", "zokrates"] = "groth16py"  # native arkworks; zokrates: WASM fallback
    deployment: Path | None = None  # `python -m swarm.chain deploy`'s file: its chain and escrow, no embedded anvil
    funder_key_file: Path | None = None  # with `deployment`: the researcher's key (default: SWARM_WALLET_KEY)
    certificate: bool = True  # the experiment pays only records their group certified (docs/protocol.md)


class DemoSwarm:
    """Starts and owns the demo's peers; events from all of them arrive on one queue."""

    def __init__(self, config: DemoConfig, run_dir: Path, economy: DemoEconomy | None = None) -> None:
        self.config, self.run_dir, self.economy = config, run_dir, economy
        self.experiment = f"demo{uuid.uuid4().hex[:6]}"
        self.children = ChildSet()
        self.events: queue.Queue[PeerEvent] = queue.Queue()
        self.view = SwarmView(n_stages=config.n_stages)
        self.history: list[PeerEvent] = []  # every event applied to the view, in order
        self.bootstrap_maddrs: list[str] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.children.stop_all()

    def start_peer(self, name: str, args: list[str]) -> ChildProcess:
        log = open(self.run_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it; closed below
        try:
            argv = [sys.executable, "-m", "swarm.peer", "--events", "--host", "127.0.0.1",
                    "--experiment", self.experiment, *args]  # fmt: skip
            return self.children.start(argv, name=name, stderr=log, on_line=lambda line: self._on_line(name, line))
        finally:
            log.close()

    def _on_line(self, name: str, line: str) -> None:
        event = parse_event(line)
        if event is not None:
            event.peer = name
            self.events.put(event)

    def drain(self) -> None:
        """Apply every event received so far to the view; note peers that exited."""
        while True:
            try:
                self._apply(self.events.get_nowait())
            except queue.Empty:
                break
        for child in self.children:
            if not child.alive:
                self.view.mark_exited(child.name, child.returncode)

    def _apply(self, event: PeerEvent) -> None:
        self.history.append(event)
        self.view.apply(event)

    def child(self, name: str) -> ChildProcess:
        return next(c for c in self.children if c.name == name)

    def wait_for(self, name: str, predicate, timeout: float = START_TIMEOUT_S, since: int = 0) -> PeerEvent:
        """The first event of peer `name` matching `predicate`, from `history[since:]` on, waiting for it if needed."""
        for event in self.history[since:]:
            if event.peer == name and predicate(event):
                return event
        child = self.child(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                if not child.alive:
                    raise DemoError(f"{name} exited with code {child.returncode}; {self._log_tail(name)}") from None
                continue
            self._apply(event)
            if event.peer == name and predicate(event):
                return event
        raise DemoError(f"{name} did not get ready within {timeout:.0f} s; {self._log_tail(name)}")

    def _log_tail(self, name: str) -> str:
        path = self.run_dir / f"{name}.log"
        lines = path.read_text(errors="replace").strip().splitlines()[-3:] if path.exists() else []
        return f"see {path}" + (": " + " | ".join(lines) if lines else "")

    def start(self) -> None:
        """Bootstrap, then stage peers one by one (each sees the others' records when it picks a stage), trainers."""
        c = self.config
        chain = self.economy.bootstrap_args() if self.economy else []
        self.start_peer("bootstrap", ["--role", "bootstrap", "--workload", c.workload, "--n-stages", str(c.n_stages),
                                      "--round-duration", str(c.round_duration), *chain])  # fmt: skip
        ready = self.wait_for("bootstrap", lambda e: isinstance(e, Ready))
        self.bootstrap_maddrs = ready.maddrs
        join = self.join_args
        hooks = ["--round-hooks", *c.round_hooks] if c.round_hooks else []
        for i in range(c.stage_peers):
            name = f"stage-peer-{i}"
            paid = self.economy.peer_args(i) if self.economy else []
            cheat = ["--byzantine", "--attack", c.attack] if i >= c.stage_peers - c.byzantine else []
            rule = [] if c.min_alignment is None else ["--min-alignment", str(c.min_alignment)]
            self.start_peer(name, [*join, "--role", "stage", "--lr", str(c.lr), *hooks, *paid, *cheat, *rule])
            self.wait_for(name, lambda e: isinstance(e, Ready) and e.role == "stage")
        for i in range(c.trainers):
            name = f"trainer-{i}"
            self.start_peer(name, [*join, "--role", "trainer", "--batch-size", str(c.batch_size),
                                   "--duration", str(c.duration), "--seed", str(i)])  # fmt: skip

    @property
    def join_args(self) -> list[str]:
        return ["--join", "--initial-peers", *self.bootstrap_maddrs]

    def trainers_done(self) -> bool:
        return all(not c.alive for c in self.children if c.name.startswith("trainer"))

    def cheaters(self) -> list[str]:
        """Names of the stage peers started with --byzantine."""
        c = self.config
        return [f"stage-peer-{i}" for i in range(c.stage_peers) if i >= c.stage_peers - c.byzantine]

    def all_paid(self) -> bool:
        """Every live honest stage peer has claimed at least one round's reward, and with `--attack silent` every
        silent peer has been slashed at least once (by the others' watchers)."""
        cheaters = set(self.cheaters())
        stage = [p for p in self.view.peers.values()
                 if p.role == "stage" and p.name not in cheaters and self.child(p.name).alive]  # fmt: skip
        if not stage or not all(p.claimed > 0 for p in stage):
            return False
        if self.config.attack != "silent" or not cheaters or self.economy is None:
            return True
        slashed = {e.detail.get("peer") for e in self.history if getattr(e, "action", None) == "slashed"}
        return all(self.economy.address_of(name) in slashed for name in cheaters)


def run_demo(config: DemoConfig, console: Console) -> int:
    run_dir = config.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        economy = None
        if config.chain:
            with console.status("starting the dev chain, deploying the escrow, preparing circuit keys..."):
                economy = stack.enter_context(DemoEconomy(
                    run_dir, workload=config.workload, n_stages=config.n_stages, stage_peers=config.stage_peers,
                    round_duration=max(1, round(config.round_duration)), submit_window=config.submit_window,
                    prover_backend=config.prover_backend, deployment=config.deployment,
                    funder_key_file=config.funder_key_file, require_certificate=config.certificate,
                ))  # fmt: skip
        return _run_swarm(config, console, run_dir, economy, started)


def _run_swarm(config: DemoConfig, console: Console, run_dir: Path, economy: DemoEconomy | None,
               started: float) -> int:
    """Run the swarm until the trainers are done (and, with a chain, every stage peer was paid); print the summary.

    Exit code: 0 when it trained without failures, 1 otherwise, 130 when interrupted (Ctrl-C, SIGTERM, SIGHUP).
    """
    interrupted = False
    with DemoSwarm(config, run_dir, economy) as swarm:
        try:
            with console.status("starting the swarm (bootstrap, stage peers, trainers)..."):
                swarm.start()
            console.print("\n".join(join_lines(swarm.bootstrap_maddrs, swarm.experiment)), soft_wrap=True)
            trained_from = time.monotonic()
            with Live(render(swarm.view), console=console, refresh_per_second=4, transient=False) as live:

                def watch_until(done, seconds: float, title: str = "swarm demo") -> None:
                    limit = time.monotonic() + seconds
                    while not done() and time.monotonic() < limit:
                        time.sleep(0.25)
                        swarm.drain()
                        live.update(render(swarm.view, title=title))

                watch_until(swarm.trainers_done, config.duration + START_TIMEOUT_S)
                seconds = time.monotonic() - trained_from
                if economy is not None:  # rewards come after a round's submission and audit windows
                    watch_until(swarm.all_paid, economy.window_s + 3 * config.round_duration + 60,
                                "swarm demo: settling the last rounds on-chain")  # fmt: skip
            layout = swarm.view.peers_per_stage()
        except DemoError as exc:
            console.print(f"[red]swarm-demo: {exc}[/red]")
            return 1
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP (ShutdownRequested): the `with` stops every peer
            console.print("interrupted: stopping every peer...")
            interrupted, seconds, layout = True, time.monotonic() - started, swarm.view.peers_per_stage()
        swarm.drain()
    swarm.drain()
    lines = summary_lines(swarm.view, seconds, layout)
    if economy is not None:
        lines += economy.summary_lines()
    png = save_loss_plot(swarm.view.losses, run_dir / "loss.png")
    lines.append(f"logs and plot: {run_dir}" + ("" if png else " (no plot: no steps)"))
    console.print("\n".join(lines))
    if interrupted:
        return 130
    return 0 if swarm.view.losses and not swarm.view.failures else 1


def save_loss_plot(losses: list[float], path: Path) -> bool:
    if not losses:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, lw=0.8)
    ax.set_xlabel("trainer step")
    ax.set_ylabel("training loss")
    ax.set_title("swarm demo")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="swarm-demo",
        description="Start a whole swarm on this machine (loopback): a bootstrap peer, stage peers over the "
        "pipeline's stages and trainer peers, each a separate process; show live progress and a summary.",
        epilog="example: swarm-demo --workload tinylm --duration 120 --stage-peers 4",
    )
    d = DemoConfig()
    p.add_argument("--workload", default=d.workload, help="digits or tinylm (swarm.models.WORKLOADS)")
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of training (default: %(default)s)")
    p.add_argument("--n-stages", type=int, default=d.n_stages, help="pipeline stages (default: %(default)s)")
    p.add_argument("--stage-peers", type=int, default=d.stage_peers, help="stage peers (default: %(default)s)")
    p.add_argument("--trainers", type=int, default=d.trainers, help="trainer peers (default: %(default)s)")
    p.add_argument("--round-duration", type=float, default=d.round_duration, help="seconds per averaging round")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--out", type=Path, help="folder for logs and the loss plot (default: runs/demo-<time>)")
    p.add_argument("--no-chain", dest="chain", action="store_false",
                   help="train only: no dev chain, no proofs, no rewards")
    p.add_argument("--byzantine", type=int, default=0, metavar="N",
                   help="the last N stage peers cheat every round, as --attack says; the others check, drop them "
                   "and say so (N <= stage peers - stages, so every stage keeps an honest peer)")
    p.add_argument("--attack", choices=ATTACKS, default=d.attack,
                   help=f"with --byzantine: {attacks_help()} (default: %(default)s)")
    p.add_argument("--min-alignment", type=float, metavar="SIGMAS",
                   help="the stage peers' alignment rule (swarm-peer --min-alignment; 0: off, what a noise rider "
                   "earns without it; default: theirs)")
    p.add_argument("--prover-backend", choices=["groth16py", "zokrates"], default=d.prover_backend,
                   help="the stage peers' Groth16 prover (default: %(default)s, native; zokrates: WASM, ~4x slower)")
    p.add_argument("--submit-window", type=int, default=d.submit_window, metavar="SECONDS",
                   help="seconds after a round for its proofs to reach the chain (default: %(default)s)")
    p.add_argument("--deployment", type=Path, metavar="FILE",
                   help="run on the escrow stack FILE names (written by `python -m swarm.chain deploy`: any EVM L2 "
                   "or anvil) instead of an embedded dev chain: the researcher (--funder-key-file, else "
                   "SWARM_WALLET_KEY; it must own the stack's TestToken) creates and funds the experiment and sends "
                   "gas money to one new wallet per stage peer")
    p.add_argument("--funder-key-file", type=Path, metavar="FILE", help="with --deployment: the researcher's key "
                   "file (0600)")
    p.add_argument("--no-certificate", dest="certificate", action="store_false",
                   help="pay every proven contribution, not only those the stage's group certified as averaged "
                   "(what a free rider earns without certificates)")
    p.add_argument("--round-hooks", nargs="+", default=[], metavar="MODULE:FUNC",
                   help="passed to every stage peer: called after each averaging round")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = DemoConfig(**vars(args))
    from swarm.models import WORKLOADS

    if config.workload not in WORKLOADS:
        print(f"swarm-demo: unknown workload {config.workload!r}: choose one of {', '.join(sorted(WORKLOADS))}",
              file=sys.stderr)  # fmt: skip
        return 2
    if config.stage_peers < config.n_stages:
        print(f"swarm-demo: {config.stage_peers} stage peers cannot serve {config.n_stages} stages", file=sys.stderr)
        return 2
    if config.byzantine > config.stage_peers - config.n_stages:
        print(f"swarm-demo: --byzantine {config.byzantine} leaves a stage without an honest peer: at most "
              f"{config.stage_peers - config.n_stages} with {config.stage_peers} stage peers over {config.n_stages} "
              "stages (add --stage-peers)", file=sys.stderr)
        return 2
    if config.deployment is not None:
        if not config.chain:
            print("swarm-demo: --deployment needs the chain (leave out --no-chain)", file=sys.stderr)
            return 2
        try:
            Deployment.load(config.deployment)
        except ChainError as exc:
            print(f"swarm-demo: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even if our parent ignored it
    raise_on_termination_signals()
    try:
        return run_demo(config, Console())
    except ShutdownRequested:
        return 130
    except ChainError as exc:  # e.g. --deployment's RPC is down or its researcher has no gas money
        print(f"swarm-demo: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
