"""A local pipeline swarm for the experiments: a bootstrap DHT here, stage peers as child processes.

`with local_swarm(...) as swarm:` yields once every stage peer serves; on the way out every child is stopped
(SIGINT, then its whole process group) and their STATS lines are collected in `swarm.stats`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hivemind.utils import get_dht_time

from runtime.procs import ChildSet
from swarm.network.dht import create_dht, visible_multiaddrs

STAGE_PEER = Path(__file__).with_name("stage_peer_loop.py")


@dataclass
class LocalSwarm:
    experiment: str
    initial_peers: list[str]
    dht: object  # the bootstrap DHT (trainers may join through it or use it directly)
    stats: list[dict] = field(default_factory=list)


@contextlib.contextmanager
def local_swarm(
    workload: str,
    n_stages: int,
    *,
    peers_per_stage: int = 1,
    lr: float,
    seed: int = 0,
    options: dict | None = None,
    round_duration: float | None = None,
    matchmaking_time: float | None = None,
    ready_timeout: float = 60.0,
) -> Iterator[LocalSwarm]:
    """Stage peers for `workload` cut into `n_stages`; with `round_duration`, each stage's peers average per round."""
    experiment = f"exp{uuid.uuid4().hex[:8]}"
    boot = create_dht()
    ready = threading.Semaphore(0)
    swarm = LocalSwarm(experiment, visible_multiaddrs(boot), boot)
    lock = threading.Lock()

    def on_line(line: str) -> None:
        if line.startswith("READY"):
            ready.release()
        elif line.startswith("STATS "):
            with lock:
                swarm.stats.append(json.loads(line[6:]))

    start_time = get_dht_time()  # round 0 starts now, the same for every peer
    try:
        with ChildSet() as children:
            for stage in range(n_stages):
                for i in range(peers_per_stage):
                    argv = [
                        sys.executable, str(STAGE_PEER), "--initial-peers", *swarm.initial_peers,
                        "--experiment", experiment, "--workload", workload, "--options", json.dumps(options or {}),
                        "--n-stages", str(n_stages), "--stage", str(stage), "--lr", str(lr), "--seed", str(seed),
                    ]  # fmt: skip
                    if round_duration:
                        argv += ["--round-duration", str(round_duration), "--start-time", str(start_time)]
                        if matchmaking_time is not None:
                            argv += ["--matchmaking-time", str(matchmaking_time)]
                    children.start(argv, name=f"stage{stage}-peer{i}", on_line=on_line)
            deadline = time.monotonic() + ready_timeout
            for _ in range(n_stages * peers_per_stage):
                if not ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(f"stage peers did not start within {ready_timeout:.0f} s")
            yield swarm
            children.stop_all()
            deadline = time.monotonic() + 5.0
            while len(swarm.stats) < n_stages * peers_per_stage and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        boot.shutdown()
