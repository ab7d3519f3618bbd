"""The bootstrap role: publish the experiment record (its round clock, maybe read from the escrow) until stopped."""

from __future__ import annotations

import logging
import threading
import time

from swarm.apps.config import ConfigError, PeerConfig
from swarm.apps.events import EventWriter, Left, Ready
from swarm.apps.roles.common import until

logger = logging.getLogger("swarm.peer")

REPUBLISH_PERIOD_S = 10.0
MIN_SENSIBLE_ROUND_S = 5.0


def run_bootstrap(config: PeerConfig, dht, events: EventWriter, stop: threading.Event, deadline) -> None:
    from hivemind.utils import get_dht_time

    from swarm.network.dht import visible_multiaddrs
    from swarm.network.records import ExperimentRecord, fetch_experiment, publish_experiment

    record = fetch_experiment(dht, config.experiment) if config.initial_peers else None
    if record is None:
        start, duration, chain_id = get_dht_time(), config.round_duration, None
        if config.chain_experiment is not None:
            start, duration, chain_id = chain_clock(config)
        record = ExperimentRecord(
            name=config.experiment, workload=config.workload, n_stages=config.n_stages,
            round_duration=duration, start_time=start, chain_experiment_id=chain_id, seed=config.seed,
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
        stop.wait(until(deadline, REPUBLISH_PERIOD_S))
    events.emit(Left(reason="stopped" if stop.is_set() else "duration"))


def chain_clock(config: PeerConfig) -> tuple[float, float, int]:
    """(start, round duration, id) of the escrow's experiment: the DHT's round clock must be the contract's."""
    from swarm.chain.client import ChainClient
    from swarm.chain.errors import ChainError

    if config.chain_rpc is None:
        raise ConfigError("--chain-experiment needs --chain-rpc and --escrow to read the experiment from")
    try:
        state = ChainClient(config.chain_rpc, escrow=config.escrow).experiment(config.chain_experiment)
    except ChainError as exc:
        raise ConfigError(f"cannot read experiment {config.chain_experiment} from the escrow: {exc}") from None
    logger.info("round clock of experiment %d of escrow %s at %s: start %d, %d s rounds", config.chain_experiment,
                config.escrow, config.chain_rpc, state.start, state.round_duration)  # fmt: skip
    return float(state.start), float(state.round_duration), config.chain_experiment
