"""Pipeline throughput: samples/s through S stages served by peer processes on loopback vs one process.

Both sides run the same training loop (`swarm.pipeline.trainer.run_training`) over the same stage modules; the baseline
calls them in-process, the swarm over hivemind P2P. Also prints each peer's peak RSS (process + DHT + p2pd).
`--quick` runs in under a minute.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from local_swarm import local_swarm

from swarm.models import get_workload
from swarm.network.dht import create_dht
from swarm.pipeline.baseline import LocalStages
from swarm.pipeline.trainer import Trainer, run_training

LR = 1e-3


def baseline_sps(workload, n_stages: int, batch_size: int, steps: int, warmup: int) -> float:
    stages = LocalStages(workload, n_stages, lr=LR)
    batches = workload.batches(batch_size, seed=0)
    run_training(stages, workload, batches, steps=warmup)
    return run_training(stages, workload, batches, steps=steps).samples_per_second


def swarm_sps(workload_name, options, n_stages, batch_size, steps, warmup, concurrencies) -> tuple[dict, list]:
    workload = get_workload(workload_name, **options)
    results = {}
    with local_swarm(workload_name, n_stages, lr=LR, options=options) as swarm:
        dht = create_dht(swarm.initial_peers)
        try:
            for c in concurrencies:
                with Trainer(dht, swarm.experiment, workload, n_stages=n_stages, batch_size=batch_size,
                             concurrency=c) as trainer:  # fmt: skip
                    trainer.run(warmup)
                    results[c] = trainer.run(steps).samples_per_second
        finally:
            dht.shutdown()
    return results, swarm.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one small configuration, under a minute")
    parser.add_argument("--workload", default="tinylm")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (peers and baseline)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    all_threads = torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the stage peers
    torch.set_num_threads(args.threads)

    options = {"n_layer": 4, "n_embd": 128, "block_size": 64} if args.workload == "tinylm" else {}
    stage_counts, steps, warmup, concurrencies = ([2], 20, 3, [1, 2]) if args.quick else ([2, 3], 60, 5, [1, 2, 4])
    workload = get_workload(args.workload, **options)
    print(f"workload {args.workload} {options}, batch {args.batch_size}, {steps} steps per figure, "
          f"{args.threads} torch thread(s) per process, {os.cpu_count()} cores")
    print(f"{'stages':>6} {'in flight':>9} {'one process':>12} {'swarm':>10} {'ratio':>6}")
    summary = []
    for n_stages in stage_counts:
        # the machine is shared: measure the baseline before and after the swarm and take the mean
        before = baseline_sps(workload, n_stages, args.batch_size, steps, warmup)
        swarm, stats = swarm_sps(args.workload, options, n_stages, args.batch_size, steps, warmup, concurrencies)
        after = baseline_sps(workload, n_stages, args.batch_size, steps, warmup)
        base = (before + after) / 2
        print(f"{n_stages:>6} {'-':>9} {base:>10.1f}/s {'':>10} {'':>6}  (one process: {before:.1f} before, "
              f"{after:.1f} after the swarm)")  # fmt: skip
        for c, sps in swarm.items():
            print(f"{n_stages:>6} {c:>9} {base:>10.1f}/s {sps:>8.1f}/s {sps / base:>6.2f}")
        best = max(swarm, key=swarm.get)
        summary.append(f"S={n_stages}: {swarm[best]:.0f} vs {base:.0f} samples/s ({swarm[best] / base:.2f}x, {best} in flight)")
        for s in sorted(stats, key=lambda s: s["stage"]):
            print(f"  stage {s['stage']} peer: peak RSS {s['peak_rss_mb']:.0f} MB (python {s['peak_self_rss_mb']:.0f} MB "
                  f"+ DHT + p2pd), {s['steps']} steps, {s['bytes_received'] / 2**20:.1f} MiB in")  # fmt: skip
    torch.set_num_threads(all_threads)
    wide = baseline_sps(workload, stage_counts[-1], args.batch_size, steps, warmup)
    print(f"  for reference: one process with all {all_threads} torch threads: {wide:.1f}/s")
    trainer_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  trainer process (also ran the baseline): peak RSS {trainer_mb:.0f} MB")
    peak = max(s["peak_rss_mb"] for s in stats) if stats else float("nan")
    print(f"pipeline: {'; '.join(summary)}; peak stage-peer RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
