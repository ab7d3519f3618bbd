"""Many peers on one stage: DHT lookups and averaging rounds for 2 ... 32 stage peers on loopback.

Every peer has its own hivemind DHT (a process) and p2pd, announces itself as a stage peer (a signed DHT record),
and averages a tiny module with the stage's other peers each round through the current averaging of
`swarm.rounds` (verified rounds: commit, all-gather of checked parts, agree, apply; `VerifiedAverager`). Between
rounds each peer changes its parameters (a stand-in for local steps). The averagers run in this process, one
thread per peer, so what is measured is the protocol's cost on this machine's cores, not a cluster's.

Measured per group size: how many of the announced peers a fresh lookup sees, the fraction of (peer, round) pairs
in which the peer averaged with the full group, the group size it saw, and round time (commit -> applied).
`--quick`: 2 and 4 peers, 2 rounds (under a minute on a quiet machine). Writes experiments/results/bench_scale.png
(quick: bench_scale_quick.png).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from hivemind.utils import get_dht_time

from swarm.network.dht import local_dhts
from swarm.network.records import StageAnnouncement, announce_stage, fetch_stage_announcements
from swarm.rounds.clock import RoundClock
from swarm.rounds.verified import RoundTiming, VerifiedAverager
from zk.circuit import SMALL_PARAMS

RESULTS = Path(__file__).with_name("results")


def timing_for(n: int) -> RoundTiming:
    """Phase lengths for a group of `n` on a 2-core machine: the all-gather grows with n (n - 1 updates each)."""
    return RoundTiming(commit_s=2.0 + 0.05 * n, exchange_s=2.0 + 0.15 * n, agree_s=1.0 + 0.05 * n)


def make_module() -> torch.nn.Module:
    torch.manual_seed(0)  # the same starting point on every peer
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))


def perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


def run_group(n: int, rounds: int) -> dict:
    """`n` peers of one stage for `rounds` rounds: lookup coverage, full-group fraction, group sizes, round times."""
    experiment = f"scale{uuid.uuid4().hex[:8]}"
    timing = timing_for(n)
    round_s = timing.commit_s + timing.exchange_s + timing.agree_s + 1.0
    t0 = time.monotonic()
    with local_dhts(n) as dhts:
        join_s = time.monotonic() - t0
        for d in dhts:
            ann = StageAnnouncement(peer_id=d.peer_id.to_base58(), stage=0, throughput=1.0, load=0,
                                    params_version=0, wallet=None)  # fmt: skip
            announce_stage(d, experiment, ann, ttl=600)
        t1 = time.monotonic()
        seen = [len(fetch_stage_announcements(d, experiment).get(0, [])) for d in (dhts[0], dhts[-1])]
        lookup_s = (time.monotonic() - t1) / 2
        modules = [make_module() for _ in range(n)]
        clock = RoundClock(get_dht_time(), round_s)
        avs = [VerifiedAverager(d, experiment, 0, m, clock=clock, params=SMALL_PARAMS, part_chunks=8, timing=timing)
               for d, m in zip(dhts, modules, strict=True)]  # fmt: skip
        results = []
        try:
            for r in range(rounds):
                for i, m in enumerate(modules):
                    perturb(m, 1000 * r + i)
                clock = RoundClock(get_dht_time() - (r + 1) * round_s + 0.2, round_s)  # round r ends now
                for a in avs:
                    a.clock = clock
                with ThreadPoolExecutor(n) as pool:
                    results.append(list(pool.map(lambda a, r=r: a.step(r), avs)))
        finally:
            for a in avs:
                a.shutdown()
    flat = [res for rnd in results for res in rnd]
    return {
        "n": n,
        "seen": min(seen),
        "join_s": join_s,
        "lookup_s": lookup_s,
        "full": sum(len(res.included) == n for res in flat) / len(flat),
        "mean_group": statistics.mean(len(res.included) for res in flat),
        "round_s": statistics.mean(res.seconds for res in flat),
        "check_s": statistics.mean(res.check_seconds for res in flat),
        "phases_s": timing.commit_s + timing.exchange_s + timing.agree_s,
        "received_kib": statistics.mean(res.bytes_received for res in flat) / 1024,
    }


def plot(rows: list[dict], name: str = "bench_scale.png") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    RESULTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ns = [r["n"] for r in rows]
    ax.plot(ns, [r["full"] for r in rows], "o-", label="rounds with the full group")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("peers per stage")
    ax.set_ylabel("fraction")
    ax2 = ax.twinx()
    ax2.plot(ns, [r["round_s"] for r in rows], "s--", color="tab:red", label="round time (s)")
    ax2.set_ylabel("seconds")
    fig.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(RESULTS / name, dpi=120)
    print(f"plot: {RESULTS / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 and 4 peers, 2 rounds")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="peers per stage (default 2 4 8 16 32)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per group size (default 4; quick: 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    sizes = args.sizes or ([2, 4] if args.quick else [2, 4, 8, 16, 32])
    rounds = args.rounds or (2 if args.quick else 4)
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min load average), {os.cpu_count()} cores; {rounds} rounds per "
          "size; module of 2,632 parameters; verified rounds (swarm.rounds.verified)")  # fmt: skip
    print(f"{'peers':>5} {'seen':>5} {'join s':>7} {'lookup s':>8} {'full group':>10} {'mean group':>10} "
          f"{'round s':>8} {'phases s':>8} {'exchange s':>10} {'KiB in':>7}")  # fmt: skip
    rows = []
    for n in sizes:
        row = run_group(n, rounds)
        rows.append(row)
        print(f"{n:>5} {row['seen']:>5} {row['join_s']:>7.1f} {row['lookup_s']:>8.2f} {100 * row['full']:>9.0f}% "
              f"{row['mean_group']:>10.1f} {row['round_s']:>8.1f} {row['phases_s']:>8.1f} {row['check_s']:>10.1f} "
              f"{row['received_kib']:>7.0f}", flush=True)  # fmt: skip
    plot(rows, "bench_scale_quick.png" if args.quick else "bench_scale.png")  # quick: keep the full run's plot
    print(f"load after: {os.getloadavg()[0]:.1f}")
    base = rows[0]
    print("scale: " + "; ".join(f"{r['n']} peers: {100 * r['full']:.0f}% full-group rounds, {r['round_s']:.1f} s/round "
                                f"({r['round_s'] / base['round_s']:.2f}x {base['n']} peers)" for r in rows))  # fmt: skip


if __name__ == "__main__":
    main()
