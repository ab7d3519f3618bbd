"""What the roles share: finding the experiment on the DHT, and waiting up to a deadline."""

from __future__ import annotations

import threading
import time

from swarm.apps.config import PeerConfig

EXPERIMENT_WAIT_S = 15.0  # how long a joiner looks for the experiment record before giving up


def find_experiment(config: PeerConfig, dht, stop: threading.Event):
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


def until(deadline: float | None, period: float) -> float:
    return period if deadline is None else max(0.0, min(period, deadline - time.monotonic()))
