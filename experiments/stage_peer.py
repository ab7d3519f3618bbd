"""One stage peer for the experiments: joins the DHT, serves one stage, reports its peak memory when stopped.

Run by `local_swarm.py` as a child process (one per peer, so each peer's memory is its own); prints
`READY <peer id>` once serving and, after SIGINT, `STATS <json>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import threading
import time

import psutil

from swarm.dht import create_dht
from swarm.models import get_workload
from swarm.serving import StageServer


class PeakRSS:
    """Samples the RSS of this process plus its children (DHT process, p2pd) and keeps the largest sum."""

    def __init__(self, period: float = 0.2) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self._period):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--initial-peers", nargs="+", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--options", default="{}", help="workload options as JSON")
    parser.add_argument("--n-stages", type=int, required=True)
    parser.add_argument("--stage", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rss = PeakRSS()
    workload = get_workload(args.workload, **json.loads(args.options))
    module = workload.build_stage(args.n_stages, args.stage, seed=args.seed)
    dht = create_dht(args.initial_peers)
    server = StageServer(dht, args.experiment, workload, args.stage, module, lr=args.lr, announce_period=2.0)
    try:
        server.start()
        print(f"READY {server.peer_id}", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stats = {
            "stage": args.stage,
            "steps": server.worker.steps,
            "bytes_received": server.bytes_received,
            "bytes_sent": server.bytes_sent,
            "peak_rss_mb": rss.stop() / 2**20,
            "peak_self_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        server.shutdown()
        dht.shutdown()
        print(f"STATS {json.dumps(stats)}", flush=True)


if __name__ == "__main__":
    main()
