"""`swarm-peer` / `python -m swarm.peer`: run one peer of a swarm (bootstrap, stage or trainer) until Ctrl-C.

Errors a volunteer can fix end in one line and an exit code: 2 for a bad setting, 3 when the swarm cannot be joined,
4 when it was lost after joining, 130 when a second Ctrl-C forced the peer out. The roles are in `roles/`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from swarm.apps.config import ConfigError, PeerConfig, load_config
from swarm.apps.events import EventWriter, Failed
from swarm.errors import SwarmError
from swarm.rounds.attacks import ATTACKS

logger = logging.getLogger("swarm.peer")

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_JOIN, EXIT_LOST, EXIT_FORCED = 0, 1, 2, 3, 4, 130

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
  from another terminal: what the peers running on this machine do; claim what a wallet is owed:
    swarm-peer status
    swarm-peer claim --chain-rpc URL --escrow 0x... --chain-experiment ID --wallet-key-file ~/.swarm/wallet.key

in a terminal the peer shows a live panel of itself (plain lines when stdout is not a terminal) and prints a
summary when it leaves.

settings: every flag is also an environment variable SWARM_<FLAG> (e.g. SWARM_INITIAL_PEERS="a b") and a key of
a profile file; flags win over the environment, the environment over the profile.
wallet: the L2 key that receives rewards is read from --wallet-key-file (must be chmod 600) or SWARM_WALLET_KEY;
it is never a flag, never logged and never put on the DHT.
Ctrl-C, SIGTERM or SIGHUP leaves cleanly (stops serving, averaging and the DHT); a second one forces the exit.
exit codes: 0 left cleanly, 2 bad setting, 3 could not join the swarm, 4 lost the swarm after joining
(e.g. a stage with no reachable peer for 60 s), 130 forced out by a second Ctrl-C, 1 anything else.
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
    opt("workload", metavar="NAME")
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
    p.add_argument("--no-verify", dest="verify", action="store_false", help=fields["verify"].description)
    opt("outer_optimizer", choices=["sgd", "nesterov"])
    opt("aggregation", choices=["mean", "centered_clip"])
    opt("norm_bound", type=float, metavar="L2")
    opt("byzantine", action="store_true")
    opt("min_alignment", type=float, metavar="SIGMAS")
    opt("attack", choices=ATTACKS)
    opt("device", metavar="DEVICE")
    opt("optimizer", choices=["adam", "adam8bit", "sgd"])
    opt("memory_limit", type=float, metavar="GIB")
    opt("relay", choices=["auto", "serve", "off"])
    opt("matchmaking_time", type=float, metavar="SECONDS")
    opt("identity_path", type=Path, metavar="PATH")
    opt("wallet_key_file", type=Path, metavar="PATH")
    opt("data_dir", type=Path, metavar="PATH")
    opt("prover_workers", type=int, metavar="N")
    opt("prover_backend", choices=["zokrates", "groth16py"])
    opt("prover_key_dir", type=Path, metavar="DIR")
    opt("strict_proofs", action="store_true")
    opt("chain_rpc", metavar="URL")
    opt("escrow", metavar="ADDRESS")
    opt("chain_experiment", type=int, metavar="ID")
    opt("resume_from", type=Path, metavar="CHECKPOINT")
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
    from swarm.apps.view.monitor import start_view

    view, events = start_view(config)  # live panel, plain lines or (--events) JSON; status file; exit summary
    try:
        with view:
            return run_peer(config, events)
    except SwarmError as exc:  # ConfigError (2), JoinError (3), LostSwarmError (4), ...: one line each
        return _fail(events, f"swarm-peer: {exc.summary}{exc}", exc.exit_code)
    except KeyboardInterrupt:  # the second Ctrl-C: clean-up already ran through the ExitStack
        print("swarm-peer: forced out (second Ctrl-C)", file=sys.stderr)
        return EXIT_FORCED
    except Exception as exc:  # a bug or an unforeseen failure: the traceback goes to the log, once
        logger.exception("the peer stopped on an unexpected error")
        return _fail(events, f"swarm-peer: stopped on an unexpected error: {type(exc).__name__}: {exc}", EXIT_ERROR)


def _fail(events: EventWriter, message: str, code: int) -> int:
    print(message, file=sys.stderr)
    events.emit(Failed(message=message))
    return code


def run_peer(config: PeerConfig, events: EventWriter) -> int:
    """Run the configured role until Ctrl-C/SIGTERM or `config.duration`; every part is shut down on the way out."""
    with _stop_handlers() as stop:
        return _run_role(config, events, stop)


def _run_role(config: PeerConfig, events: EventWriter, stop: threading.Event) -> int:
    from runtime.procs import start_watchdog
    from swarm.apps.roles.bootstrap import run_bootstrap
    from swarm.apps.roles.common import find_experiment
    from swarm.apps.roles.stage import load_wallet, run_stage
    from swarm.apps.roles.trainer import run_trainer
    from swarm.apps.view.monitor import view_of
    from swarm.models import get_workload

    deadline = None if config.duration is None else time.monotonic() + config.duration
    wallet = load_wallet(config)  # once, first: a bad key file stops us before anything starts
    with ExitStack() as cleanup:
        watchdog = start_watchdog()  # kills our DHT process and p2pd if we are killed without cleaning up
        cleanup.callback(watchdog.stop)
        t0 = time.monotonic()
        dht, reach = _reachability().join_swarm(_dht_starter(config), stop, config.role, config.initial_peers,
                                                relay=config.relay, log=logger)  # fmt: skip
        if dht is None:
            return EXIT_OK  # Ctrl-C while retrying to reach the swarm
        cleanup.callback(dht.shutdown)
        view_of(events).joined(dht, config, reach, wallet)
        peer_id = dht.peer_id.to_base58()
        logger.info("on the DHT as %s (%.1f s)", peer_id, time.monotonic() - t0)
        events.peer = events.peer or peer_id[-8:]
        if config.role == "bootstrap":
            gc.freeze()  # what startup made lives until exit: keep it out of every collection (a slow exit otherwise)
            run_bootstrap(config, dht, events, stop, deadline)
            return EXIT_OK
        record = find_experiment(config, dht, stop)  # None: stopped while waiting for it
        if record is not None:
            logger.info("found experiment %r (%.1f s)", record.name, time.monotonic() - t0)
            view_of(events).found_experiment(record)
            workload = get_workload(record.workload)
            _import_role(config.role)
            gc.freeze()  # what startup made lives until exit: keep it out of every collection (a slow exit otherwise)
            if config.role == "trainer":
                run_trainer(config, dht, record, workload, events, stop, deadline)
            else:
                run_stage(config, dht, record, workload, events, stop, deadline, wallet)
    return EXIT_OK


def _import_role(role: str) -> None:
    """Import the role's modules (torch, hivemind's averager) before the heap is frozen."""
    importlib.import_module("swarm.apps.stage_peer" if role == "stage" else "swarm.pipeline.trainer")


def _dht_starter(config: PeerConfig):
    """How to start our DHT (`join_swarm` retries it, checks reachability, and behind a NAT restarts it relayed).
    Its process ignores SIGINT (hivemind sets that first thing, before p2pd starts), so a terminal's Ctrl-C reaches
    only us, and we stop the DHT ourselves. A trainer is a DHT client: it only connects out, so it works behind a
    NAT."""
    from swarm.network.dht import create_dht

    def start(**options):
        options = {"client_mode": config.role == "trainer", **options}
        return create_dht(config.initial_peers, host=config.host, port=config.port,
                          identity_path=config.identity_path, **options)  # fmt: skip

    return start


def _reachability():
    from swarm.network import reachability

    return reachability


_fork_hook_registered = False


@contextlib.contextmanager
def _stop_handlers() -> Iterator[threading.Event]:
    """First Ctrl-C (or SIGTERM) asks to leave cleanly; a second one forces out with KeyboardInterrupt. The
    previous handlers come back on the way out, so `main` can be called in-process (tests, embedding)."""
    global _fork_hook_registered
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info(
            "leaving (%s): stopping cleanly; press Ctrl-C again to force", signal.Signals(signum).name
        )
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, _on_signal)
    if not _fork_hook_registered:  # os.register_at_fork has no unregister: once per process
        os.register_at_fork(after_in_child=_default_termination_signals)
        _fork_hook_registered = True
    try:
        yield stop
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


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
