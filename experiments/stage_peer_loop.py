"""One stage peer for the experiments: joins the DHT, serves one stage, reports its peak memory when stopped.

Run by `local_swarm.py` as a child process (one per peer, so each peer's memory is its own); prints
`READY <peer id>` once serving and, after SIGINT, `STATS <json>`. With `--round-duration`, peers of the same
stage average once per round: verified rounds (swarm.rounds.verified, the swarm-peer default) with the outer
optimizer of `--outer-optimizer`, or with `--no-verify` hivemind's all-reduce of int8 parameters
(swarm.rounds.averager). The env variables SWARM_LOOP_VERIFY=0 and SWARM_LOOP_OUTER=nesterov set the same for
callers that cannot pass flags (experiments/local_swarm.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import threading

import psutil

from swarm.models import get_workload
from swarm.network.dht import create_dht
from swarm.pipeline.serving import StageServer
from swarm.rounds.averager import StageAverager
from swarm.rounds.clock import RoundClock
from swarm.rounds.verified import VerifiedAverager


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
        procs, tick = [me], 0
        while not self._stop.wait(self._period):
            if tick % 25 == 0:  # children(recursive=True) reads every process's /proc stat: not 5 times a second
                procs = [me, *me.children(recursive=True)]
            tick += 1
            total = 0
            for p in procs:
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
    parser.add_argument("--round-duration", type=float, default=None, help="average with the stage's peers")
    parser.add_argument("--start-time", type=float, default=None, help="DHT time of round 0")
    parser.add_argument("--matchmaking-time", type=float, default=None, help="--no-verify: seconds to wait for a group")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        default=os.environ.get("SWARM_LOOP_VERIFY", "1") != "0", help="hivemind's unchecked all-reduce")
    parser.add_argument("--outer-optimizer", choices=["sgd", "nesterov"],
                        default=os.environ.get("SWARM_LOOP_OUTER", "sgd"), help="verified rounds' outer step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rss = PeakRSS()
    workload = get_workload(args.workload, **json.loads(args.options))
    module = workload.build_stage(args.n_stages, args.stage, seed=args.seed)
    dht = create_dht(args.initial_peers)
    server = StageServer(dht, args.experiment, workload, args.stage, module, lr=args.lr, announce_period=2.0)
    averager, rounds = None, []
    stop = threading.Event()
    try:
        server.start()
        clock = RoundClock(args.start_time or 0.0, args.round_duration or 1.0)
        if args.round_duration and args.verify:
            averager = VerifiedAverager(dht, args.experiment, args.stage, module, clock=clock, lock=server.params_lock,
                                        outer=args.outer_optimizer)
        elif args.round_duration:
            extra = {} if args.matchmaking_time is None else {"matchmaking_time": args.matchmaking_time}
            averager = StageAverager(dht, args.experiment, args.stage, module, lock=server.params_lock, **extra)
        # after the averager: hivemind's DecentralizedAverager.run_in_background sets SIGINT to SIG_IGN in its caller
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        print(f"READY {server.peer_id}", flush=True)
        while not stop.is_set():
            r = clock.current_round()
            if stop.wait(clock.seconds_to_next_round()) or averager is None:
                continue
            rounds.append(averager.step(r, timeout=0.8 * args.round_duration))
            server.params_version = r + 1
    finally:
        if averager is not None:
            averager.shutdown()
        stats = {
            "rounds": len(rounds),
            "rounds_averaged": sum(r.group_size > 1 for r in rounds),
            "rounds_verified": sum(r.verified and r.averaged for r in rounds),
            "bytes_averaged": sum(r.bytes_sent + r.bytes_received for r in rounds),
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
