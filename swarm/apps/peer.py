"""`swarm-peer` / `python -m swarm.peer`: run one peer of a swarm (bootstrap, stage or trainer) until Ctrl-C.

Errors a volunteer can fix end in one line and an exit code: 2 for a bad setting, 3 when the swarm cannot be joined.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from swarm.apps.config import ConfigError, PeerConfig, load_config
from swarm.apps.events import EventWriter, Failed, Left, Ready, Step

logger = logging.getLogger("swarm.peer")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_JOIN = 0, 1, 2, 3
EXPERIMENT_WAIT_S = 15.0  # how long a joiner looks for the experiment record before giving up
REPUBLISH_PERIOD_S = 10.0
MIN_SENSIBLE_ROUND_S = 5.0
TRAINER_RETRY_S = 2.0
TRAINER_PATIENCE_S = 60.0  # a trainer gives up when some stage has had no reachable peer for this long

EPILOG = """\
examples:
  start a swarm (prints the address others join with):
    swarm-peer --role bootstrap --workload digits --n-stages 2 --host 127.0.0.1
  join it and serve whichever stage needs help most (downloads that stage's current parameters first):
    swarm-peer --join --initial-peers /ip4/127.0.0.1/tcp/41234/p2p/QmXyz...
  join as a trainer that pushes batches through the stages:
    swarm-peer --join --role trainer --initial-peers /ip4/127.0.0.1/tcp/41234/p2p/QmXyz...
  use a ready profile (peers/*.toml); flags override it:
    swarm-peer --profile peers/cpu-only.toml --join --initial-peers ...

settings: every flag is also an environment variable SWARM_<FLAG> (e.g. SWARM_INITIAL_PEERS="a b") and a key of
a profile file; flags win over the environment, the environment over the profile.
wallet: the L2 key that receives rewards is read from --wallet-key-file (must be chmod 600) or SWARM_WALLET_KEY;
it is never a flag, never logged and never put on the DHT.
Ctrl-C leaves cleanly (stops serving, averaging and the DHT); press it twice to force.
exit codes: 0 left cleanly, 2 bad setting, 3 could not join the swarm, 1 anything else.
"""


class UsageError(Exception):
    """A command-line error (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, not argparse's usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    fields = PeerConfig.model_fields
    p = _Parser(
        prog="swarm-peer", description="Run one peer of a swarm that trains a model together, with no scheduler.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )  # fmt: skip

    def opt(name: str, **kw: object) -> None:
        field = fields[name]
        shown = field.default not in (None, False) and field.default_factory is None
        default = f" (default: {field.default})" if shown else ""
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, help=f"{field.description or ''}{default}", **kw
        )

    opt("role", choices=["bootstrap", "stage", "trainer"])
    opt("join", action="store_true")
    opt("initial_peers", nargs="+", metavar="MULTIADDR")
    opt("experiment", metavar="NAME")
    opt("workload", choices=["digits", "tinylm"])
    opt("n_stages", type=int, metavar="N")
    opt("round_duration", type=float, metavar="SECONDS")
    opt("stage", type=int, metavar="S")
    opt("host")
    opt("port", type=int)
    opt("lr", type=float)
    opt("seed", type=int)
    opt("compression", choices=["int8", "none"])
    opt("batch_size", type=int, metavar="B")
    opt("concurrency", type=int, metavar="K")
    opt("steps", type=int, metavar="N")
    opt("duration", type=float, metavar="SECONDS")
    p.add_argument(
        "--no-rebalance", dest="rebalance", action="store_false", help="stay on the first stage chosen"
    )
    opt("wallet_key_file", type=Path, metavar="PATH")
    opt("chain_rpc", metavar="URL")
    opt("escrow", metavar="ADDRESS")
    opt("chain_experiment", type=int, metavar="ID")
    opt("round_hooks", nargs="+", metavar="MODULE:FUNC")
    opt("events", action="store_true")
    opt("log_level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--profile", type=Path, metavar="FILE", help="a TOML profile of settings (see peers/)")
    return p


def parse_config(argv: Sequence[str] | None = None) -> PeerConfig:
    """Flags > env SWARM_* > profile > defaults; raises UsageError or ConfigError with one clear sentence."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.split("=", 1)[0] in ("--wallet-key", "--private-key", "--key") for a in argv):
        raise UsageError(
            "a wallet key is never given on the command line (other users can read it): "
            "use --wallet-key-file PATH (chmod 600) or the environment variable SWARM_WALLET_KEY"
        )
    flags = vars(build_parser().parse_args(argv))
    profile = flags.pop("profile", None)
    return load_config(flags, profile)


def main(argv: Sequence[str] | None = None) -> int:
    from swarm.apps.commands import run_subcommand

    if (code := run_subcommand(sys.argv[1:] if argv is None else argv)) is not None:  # status, claim
        return code
    try:
        config = parse_config(argv)
    except (UsageError, ConfigError) as exc:
        print(f"swarm-peer: {exc}\n(see swarm-peer --help)", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(config.log_level)
    events = EventWriter(peer="", enabled=config.events)
    try:
        return run_peer(config, events)
    except ConfigError as exc:
        return _fail(events, f"swarm-peer: {exc}", EXIT_CONFIG)
    except _join_errors() as exc:
        return _fail(events, f"swarm-peer: cannot join the swarm: {exc}", EXIT_JOIN)
    except KeyboardInterrupt:  # the second Ctrl-C: clean-up already ran through the ExitStack
        return EXIT_OK
    except Exception as exc:  # a bug or an unforeseen failure: the traceback goes to the log, once
        logger.exception("the peer stopped on an unexpected error")
        return _fail(events, f"swarm-peer: stopped on an unexpected error: {type(exc).__name__}: {exc}", EXIT_ERROR)


def _fail(events: EventWriter, message: str, code: int) -> int:
    print(message, file=sys.stderr)
    events.emit(Failed(message=message))
    return code


def _join_errors() -> tuple[type[BaseException], ...]:
    from swarm.network.dht import JoinError
    from swarm.pipeline.routing import RoutingError

    return (JoinError, RoutingError)


def run_peer(config: PeerConfig, events: EventWriter) -> int:
    """Run the configured role until Ctrl-C/SIGTERM or `config.duration`; every part is shut down on the way out."""
    from runtime.procs import start_watchdog

    stop = _install_stop_handlers()
    deadline = None if config.duration is None else time.monotonic() + config.duration
    with ExitStack() as cleanup:
        watchdog = start_watchdog()  # kills our DHT process and p2pd if we are killed without cleaning up
        cleanup.callback(watchdog.stop)
        wallet = _wallet_address(config)
        t0 = time.monotonic()
        dht = _start_dht(config)
        cleanup.callback(dht.shutdown)
        peer_id = dht.peer_id.to_base58()
        logger.info("on the DHT as %s (%.1f s)", peer_id, time.monotonic() - t0)
        events.peer = events.peer or peer_id[-8:]
        if config.role == "bootstrap":
            return _run_bootstrap(config, dht, events, stop, deadline)
        record = _find_experiment(config, dht, stop)
        if record is None:
            return EXIT_OK  # stopped while waiting
        logger.info("found experiment %r (%.1f s)", record.name, time.monotonic() - t0)
        from swarm.models import get_workload

        workload = get_workload(record.workload)
        if config.role == "trainer":
            return _run_trainer(config, dht, record, workload, events, stop, deadline)
        return _run_stage(config, dht, record, workload, events, stop, deadline, wallet)
    return EXIT_OK


def _start_dht(config: PeerConfig):
    """Start our DHT. Its process ignores SIGINT (hivemind sets that first thing, before p2pd starts), so a
    terminal's Ctrl-C reaches only us, and we stop the DHT ourselves."""
    from swarm.network.dht import create_dht

    return create_dht(config.initial_peers, host=config.host, port=config.port)


def _find_experiment(config: PeerConfig, dht, stop: threading.Event):
    """The experiment record on the DHT (published by the bootstrap peer), waiting a little for it to appear."""
    from swarm.network.dht import JoinError
    from swarm.network.records import fetch_experiment

    deadline = time.monotonic() + EXPERIMENT_WAIT_S
    while not stop.is_set():
        record = fetch_experiment(dht, config.experiment)
        if record is not None:
            return record
        if time.monotonic() > deadline:
            raise JoinError(
                f"no experiment named {config.experiment!r} on the DHT after {EXPERIMENT_WAIT_S:.0f} s: check "
                "--experiment, or start one with `swarm-peer --role bootstrap`"
            )
        stop.wait(0.5)
    return None


def _run_bootstrap(config: PeerConfig, dht, events: EventWriter, stop: threading.Event, deadline) -> int:
    from hivemind.utils import get_dht_time

    from swarm.network.dht import visible_multiaddrs
    from swarm.network.records import ExperimentRecord, fetch_experiment, publish_experiment

    record = fetch_experiment(dht, config.experiment) if config.initial_peers else None
    if record is None:
        start, duration, chain_id = get_dht_time(), config.round_duration, None
        if config.chain_experiment is not None:
            start, duration, chain_id = _chain_clock(config)
        record = ExperimentRecord(
            name=config.experiment, workload=config.workload, n_stages=config.n_stages,
            round_duration=duration, start_time=start, chain_experiment_id=chain_id,
        )  # fmt: skip
    if record.round_duration < MIN_SENSIBLE_ROUND_S:
        logger.warning(
            "%.1f s rounds leave little time for averaging (matchmaking alone takes ~3 s); rounds will be skipped",
            record.round_duration,
        )
    maddrs = [str(m) for m in visible_multiaddrs(dht)]
    events.emit(Ready(role="bootstrap", peer_id=dht.peer_id.to_base58(), maddrs=maddrs))
    logger.info(
        "experiment %r: %s in %d stages, %.0f s rounds; others join with:\n  swarm-peer --join --initial-peers %s",
        record.name, record.workload, record.n_stages, record.round_duration, " ".join(maddrs),
    )  # fmt: skip
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        if not publish_experiment(dht, record):
            logger.warning("could not store the experiment record on the DHT; retrying")
        stop.wait(_until(deadline, REPUBLISH_PERIOD_S))
    events.emit(Left(reason="stopped" if stop.is_set() else "duration"))
    return EXIT_OK


def _chain_clock(config: PeerConfig) -> tuple[float, float, int]:
    """(start, round duration, id) of the escrow's experiment: the DHT's round clock must be the contract's."""
    from swarm.chain.client import ChainClient
    from swarm.chain.errors import ChainError

    if config.chain_rpc is None:
        raise ConfigError("--chain-experiment needs --chain-rpc and --escrow to read the experiment from")
    try:
        state = ChainClient(config.chain_rpc, escrow=config.escrow).experiment(config.chain_experiment)
    except ChainError as exc:
        raise ConfigError(f"cannot read experiment {config.chain_experiment} from the escrow: {exc}") from None
    return float(state.start), float(state.round_duration), config.chain_experiment


def _round_settler(config: PeerConfig, record, events: EventWriter, dht, cleanup: ExitStack):
    """The round hook that proves and contributes each round on-chain, or None when the peer is not paid."""
    if config.chain_rpc is None or record.chain_experiment_id is None:
        return None
    if config.wallet_key_file is None and config.wallet_key is None:
        logger.warning("no wallet: this peer trains but is not paid (give --wallet-key-file to be paid)")
        return None
    from swarm.apps.events import Settled
    from swarm.chain.client import ChainClient
    from swarm.chain.wallet import Wallet
    from swarm.settlement.settler import RoundSettler

    wallet = Wallet.from_file(config.wallet_key_file) if config.wallet_key_file else Wallet(config.wallet_key)
    client = ChainClient(config.chain_rpc, wallet, escrow=config.escrow)

    def on_event(e) -> None:
        events.emit(Settled(action=e.kind, round=e.round, stage=e.stage, detail=e.detail))

    publish = None
    try:  # contributions and audit answers also go out on GossipSub (swarm/gossip), best effort
        from swarm.network.gossip.relay import GossipRelay

        relay = cleanup.enter_context(GossipRelay(dht, record.name))
        publish = relay.publish_contribution
    except Exception as exc:  # noqa: BLE001 -- gossip is optional; settlement works without it
        logger.warning("gossip unavailable, contributions go on-chain only: %s", exc)
    settler = RoundSettler(client, record.chain_experiment_id, on_event=on_event,
                           publish=lambda c, audit: publish and publish(c, audit=audit))
    return cleanup.enter_context(settler)


def _run_trainer(config, dht, record, workload, events: EventWriter, stop, deadline) -> int:
    from swarm.pipeline.trainer import Trainer

    seed = config.seed * 1_000_003 + (int.from_bytes(os.urandom(4), "big") % 1_000_000)  # own data order
    with Trainer(
        dht, record.name, workload, n_stages=record.n_stages, batch_size=config.batch_size, seed=seed,
        concurrency=config.concurrency,
    ) as trainer:  # fmt: skip
        events.emit(Ready(role="trainer", peer_id=dht.peer_id.to_base58()))
        if config.duration is not None:  # a trainer's duration is of training, not of starting up
            deadline = time.monotonic() + config.duration
        step_stop = threading.Event()
        started, done, samples = time.monotonic(), 0, 0  # across retries (each run() counts from 0)
        count_lock = threading.Lock()  # on_step runs in the micro-batch threads

        def on_step(s) -> None:
            nonlocal done, samples
            with count_lock:
                done, samples = done + 1, samples + config.batch_size
            rate = samples / max(time.monotonic() - started, 1e-9)
            events.emit(Step(step=done - 1, loss=s.loss, samples=samples, samples_per_second=rate))
            enough = config.steps is not None and done >= config.steps
            if enough or stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                step_stop.set()

        _train_until_stopped(trainer, on_step, step_stop)
        eval_loss = trainer.evaluate() if not stop.is_set() else None
    events.emit(Left(reason="stopped" if stop.is_set() else "done", eval_loss=eval_loss))
    return EXIT_OK


def _train_until_stopped(trainer, on_step, step_stop: threading.Event) -> None:
    """Train until `step_stop`; a stage with no reachable peer for a while (churn, a peer moving) is waited out."""
    from swarm.pipeline.routing import RoutingError

    last_progress = time.monotonic()

    def on_step_progress(record) -> None:
        nonlocal last_progress
        last_progress = time.monotonic()
        on_step(record)

    while not step_stop.is_set():
        try:
            trainer.run(steps=10**9, on_step=on_step_progress, stop=step_stop)
            return
        except RoutingError as exc:
            if time.monotonic() - last_progress > TRAINER_PATIENCE_S:
                raise
            logger.warning("%s; retrying in %.0f s", exc, TRAINER_RETRY_S)
            step_stop.wait(TRAINER_RETRY_S)


def _run_stage(config, dht, record, workload, events: EventWriter, stop, deadline, wallet) -> int:
    from swarm.apps.stage_peer import StagePeer, load_hook

    try:
        hooks = [load_hook(spec) for spec in config.round_hooks]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with ExitStack() as cleanup:  # settler first, gossip relay after it: stopped in reverse order
        settler = _round_settler(config, record, events, dht, cleanup)
        if settler is not None:
            hooks.append(settler)
        peer = StagePeer(config, dht, record, workload, events, wallet=wallet, hooks=hooks)
        peer.run(stop, deadline)
    events.emit(Left(reason="stopped" if stop.is_set() else "duration"))
    return EXIT_OK


def _wallet_address(config: PeerConfig) -> str | None:
    """The L2 address of the wallet (its key stays in this process, never logged); None without a wallet."""
    if config.wallet_key_file is None and config.wallet_key is None:
        return None
    from swarm.chain.wallet import Wallet, WalletError

    try:
        if config.wallet_key_file is not None:
            return Wallet.from_file(config.wallet_key_file).address
        return Wallet(config.wallet_key).address
    except WalletError as exc:
        raise ConfigError(str(exc)) from None


def _until(deadline: float | None, period: float) -> float:
    return period if deadline is None else max(0.0, min(period, deadline - time.monotonic()))


def _install_stop_handlers() -> threading.Event:
    """First Ctrl-C (or SIGTERM) asks to leave cleanly; a second one forces out with KeyboardInterrupt."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info(
            "leaving (%s): stopping cleanly; press Ctrl-C again to force", signal.Signals(signum).name
        )
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _on_signal)
        os.register_at_fork(after_in_child=_default_termination_signals)
    return stop


def _default_termination_signals() -> None:
    """In forked children (hivemind's DHT and averager processes) SIGTERM/SIGHUP kill again, as they should."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    if level != "DEBUG":
        logging.getLogger("hivemind").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
