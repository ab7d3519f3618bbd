"""Time from `swarm-peer --join` to serving and to the first averaging round it contributes to; peak memory per peer.

Baseline, measured in the same run: a process that only imports swarm and joins the DHT (`create_dht`), i.e. the
part of joining that no protocol of ours can remove. Usage: python experiments/bench_join.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import psutil

from swarm.apps.demo import DemoConfig, DemoSwarm
from swarm.apps.events import Ready, RoundDone, Synced

BARE_JOIN = (
    "import sys, time; t = time.monotonic(); from swarm.network.dht import create_dht; "
    "d = create_dht(sys.argv[1:], host='127.0.0.1'); print(time.monotonic() - t, flush=True); d.shutdown()"
)


def tree_pss(pid: int) -> int:
    """Memory of a process and all its descendants (peer + DHT/averager processes + p2pd + watchdog), in bytes.

    PSS, not RSS: hivemind's DHT and averager processes are forks that share the peer's torch pages, and summing
    their RSS would count those pages several times.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


class RssSampler:
    """Samples each child's process-tree RSS every `period` s in a thread; keeps the peak per child."""

    def __init__(self, swarm: DemoSwarm, period: float = 0.5) -> None:
        self.swarm, self.period, self.peak = swarm, period, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for child in self.swarm.children:
                if child.alive:
                    self.peak[child.name] = max(self.peak.get(child.name, 0), tree_pss(child.pid))


def bare_join_seconds(maddrs: list[str]) -> float:
    """Seconds for a fresh process to import swarm and join the DHT (includes interpreter start)."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", BARE_JOIN, *maddrs], check=True, capture_output=True, timeout=120)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 joiner instead of 3 (under a minute)")
    ap.add_argument("--joiners", type=int, default=None)
    ap.add_argument("--round-duration", type=float, default=None)
    args = ap.parse_args()
    joiners = args.joiners or (1 if args.quick else 3)
    round_s = args.round_duration or 5.0  # hivemind matchmaking takes 3 s of each round

    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        swarm = DemoSwarm(DemoConfig(n_stages=2, round_duration=round_s, duration=600), Path(tmp))
        with swarm, RssSampler(swarm) as rss:
            swarm.start_peer("bootstrap", ["--role", "bootstrap", "--round-duration", str(round_s)])
            swarm.bootstrap_maddrs = swarm.wait_for("bootstrap", lambda e: isinstance(e, Ready)).maddrs
            for stage in (0, 1):
                swarm.start_peer(f"stage{stage}", [*swarm.join_args, "--stage", str(stage)])
                swarm.wait_for(f"stage{stage}", lambda e: isinstance(e, Ready) and e.role == "stage")
            swarm.start_peer("trainer", [*swarm.join_args, "--role", "trainer"])
            bare = bare_join_seconds(swarm.bootstrap_maddrs)

            to_serving, to_contribution, sync_s = [], [], []
            for i in range(joiners):
                name = f"joiner{i}"
                t0 = time.monotonic()
                swarm.start_peer(name, swarm.join_args)
                synced = swarm.wait_for(name, lambda e: isinstance(e, Synced))
                swarm.wait_for(name, lambda e: isinstance(e, Ready) and e.role == "stage")
                to_serving.append(time.monotonic() - t0)
                sync_s.append(synced.seconds)
                swarm.wait_for(name, lambda e: isinstance(e, RoundDone) and e.group_size >= 2, timeout=120)
                to_contribution.append(time.monotonic() - t0)
            peaks = dict(rss.peak)

    serving, contrib = statistics.median(to_serving), statistics.median(to_contribution)
    print(f"baseline: fresh process joins the DHT (import + p2pd + bootstrap): {bare:.2f} s")
    print(f"--join to serving its stage (after resync): median {serving:.2f} s over {joiners} joiner(s) "
          f"= {serving / bare:.2f}x baseline; parameter download {statistics.median(sync_s):.2f} s")
    print(f"--join to first averaging round with its stage's peers: median {contrib:.2f} s "
          f"= {contrib / bare:.2f}x baseline (rounds are {round_s:.0f} s windows)")
    for name, peak in sorted(peaks.items()):
        print(f"peak memory (PSS) {name:10s} (peer + its DHT/averager processes + p2pd + watchdog): "
              f"{peak / 2**20:.0f} MiB")
    stage_peak = max(v for k, v in peaks.items() if k.startswith(("stage", "joiner")))
    print(
        f"summary: join->serving {serving:.1f} s ({serving / bare:.1f}x bare DHT join {bare:.1f} s), "
        f"join->first round {contrib:.1f} s, peak PSS stage peer {stage_peak / 2**20:.0f} MiB, "
        f"trainer {peaks.get('trainer', 0) / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
