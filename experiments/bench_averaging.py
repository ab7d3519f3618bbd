"""Averaging rounds of one stage: round time and bytes per round with int8 on the wire vs uncompressed fp32.

N peers (each with its own DHT and p2pd, on loopback) average a real stage module (tinylm's first stage by default)
for R rounds per mode, both modes in the same run; between rounds every peer takes a random "local step". Prints per
mode the round time, the all-reduce time (round minus the matchmaking wait), bytes sent/received per peer per round
and the error against the exact mean, then int8/none ratios. `--quick` runs in under a minute.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import torch

from swarm.models import get_workload
from swarm.network.dht import local_dhts
from swarm.rounds.averager import RoundResult, StageAverager

MODES = ("none", "int8")
logger = logging.getLogger("bench_averaging")


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def local_step(module: torch.nn.Module, gen: torch.Generator, scale: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def run_mode(dhts, mode: str, modules, rounds: int, matchmaking: float, seed: int) -> dict:
    experiment = f"bench{uuid.uuid4().hex[:6]}"
    avs = [StageAverager(d, experiment, 0, m, compression=mode, matchmaking_time=matchmaking) for d, m in
           zip(dhts, modules)]  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    results: list[RoundResult] = []
    errors: list[float] = []
    try:
        with ThreadPoolExecutor(len(avs)) as pool:
            for r in range(rounds):
                for m in modules:
                    local_step(m, gen, 1e-3)
                exact = torch.stack([flat(m) for m in modules]).mean(0)
                results += pool.map(lambda a, r=r: a.step(r, timeout=30.0), avs)
                scale = float(exact.abs().max())
                errors.append(max(float((flat(m) - exact).abs().max()) / scale for m in modules))
    finally:
        for a in avs:
            a.shutdown()
    ok = [x for x in results if x.averaged]
    if len(ok) != len(results):
        logger.warning("%s: %d of %d peer-rounds did not average", mode, len(results) - len(ok), len(results))
    if not ok:
        raise SystemExit(f"{mode}: no round averaged; is the machine overloaded?")
    return {
        "round_s": statistics.median(x.seconds for x in ok),
        "allreduce_s": statistics.median(max(x.seconds - matchmaking, 0.0) for x in ok),
        "sent": statistics.mean(x.bytes_sent for x in ok),
        "received": statistics.mean(x.bytes_received for x in ok),
        "rel_error": max(errors),
        "averaged": f"{len(ok)}/{len(results)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 peers, 2 rounds per mode: under a minute")
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", default="tinylm")
    parser.add_argument("--mbps", type=float, default=100.0, help="link speed for the projected wire time")
    parser.add_argument("--matchmaking", type=float, default=1.0, help="seconds of matchmaking per round")
    args = parser.parse_args()
    if args.quick:
        args.peers, args.rounds = 2, 2
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    workload = get_workload(args.workload)
    modules = [workload.build_stages(2, seed=i)[0] for i in range(args.peers)]
    n_params = sum(p.numel() for p in modules[0].parameters())
    fp32_per_peer = 2 * (args.peers - 1) / args.peers * 4 * n_params  # what ring/butterfly all-reduce sends
    print(
        f"stage 0 of {args.workload}: {n_params:,} parameters; {args.peers} peers, {args.rounds} rounds per mode"
    )

    started = time.monotonic()
    stats = {}
    with local_dhts(args.peers) as dhts:
        for i, mode in enumerate(MODES):
            stats[mode] = run_mode(dhts, mode, modules, args.rounds, args.matchmaking, seed=i)
    print(f"{'mode':6} {'round s':>8} {'allreduce s':>12} {'sent B/peer':>12} {'recv B/peer':>12} "
          f"{'vs fp32 theory':>15} {'max rel err':>12} {'averaged':>9}")  # fmt: skip
    for mode, s in stats.items():
        print(f"{mode:6} {s['round_s']:8.3f} {s['allreduce_s']:12.3f} {s['sent']:12,.0f} {s['received']:12,.0f} "
              f"{s['sent'] / fp32_per_peer:15.3f} {s['rel_error']:12.2e} {s['averaged']:>9}")  # fmt: skip
    n, q = stats["none"], stats["int8"]
    bytes_ratio = q["sent"] / n["sent"]
    time_ratio = q["allreduce_s"] / n["allreduce_s"] if n["allreduce_s"] > 0 else float("nan")
    print(f"int8/none: bytes sent {bytes_ratio:.3f}, bytes received {q['received'] / n['received']:.3f}, "
          f"all-reduce time {time_ratio:.2f}, round time {q['round_s'] / n['round_s']:.2f}")  # fmt: skip
    bits = 8 / (args.mbps * 1e6)
    print(f"projected at {args.mbps:g} Mbit/s per peer (bytes only, sent and received overlap): "
          f"none {n['sent'] * bits:.2f} s, int8 {q['sent'] * bits:.2f} s per round")  # fmt: skip
    print(f"({time.monotonic() - started:.0f} s)")
    print(
        f"summary: {args.peers} peers x {n_params:,} params: int8 sends {bytes_ratio:.2f}x the bytes of fp32 "
        f"({q['sent'] / 1e6:.2f} vs {n['sent'] / 1e6:.2f} MB/peer/round), all-reduce {q['allreduce_s']:.2f} s vs "
        f"{n['allreduce_s']:.2f} s ({time_ratio:.2f}x), max rel error {q['rel_error']:.1e}"
    )


if __name__ == "__main__":
    main()
