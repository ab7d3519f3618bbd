"""Many peers on one stage: DHT lookups and averaging rounds for 2 ... 32 stage peers on loopback.

Every peer has its own hivemind DHT (a process) and p2pd, announces itself as a stage peer (a signed DHT record),
and averages a tiny module with the stage's other peers each round through the current averaging of
`swarm.rounds` (verified rounds: commit, all-gather of checked parts, agree, apply; `VerifiedAverager`). Between
rounds each peer changes its parameters (a stand-in for local steps). The averagers run in this process, one
thread per peer, so what is measured is the protocol's cost on this machine's cores, not a cluster's.

Each group size runs its rounds twice on the same swarm: first with the fixed phase table `timing_for(n)`, then
with adaptive phases (`swarm.rounds.clock.adapt_timing`: each round's deadlines follow what the kept peers reported
in the previous round's commit records, never below FLOOR, at most 90 % of `--round-duration`). Adaptive rounds
start from the fixed rounds' reports, so they adapt from their first round.

Measured per group size and timing: how many of the announced peers a fresh lookup sees, the fraction of (peer,
round) pairs in which the peer averaged with the full group, the group size it saw, round time (commit -> applied),
the phases planned, how long the exchange took to hold every part, and overruns (a peer's exchange took longer than
its phase, or its round returned > 0.5 s after its agree deadline; "late": the latter alone).
`--quick`: 2 and 4 peers, 2 rounds of each timing (under a minute on a quiet machine). Writes
experiments/results/bench_scale.png (quick: bench_scale_quick.png).
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
from swarm.rounds.clock import RoundClock, RoundTiming
from swarm.rounds.verified import VerifiedAverager
from zk.circuit import SMALL_PARAMS

RESULTS = Path(__file__).with_name("results")
FLOOR = RoundTiming(commit_s=1.0, exchange_s=1.0, agree_s=0.5)  # adaptive phases are never shorter
LATE_S = 0.5  # a round that returns this long after its agree deadline overran


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


def run_rounds(avs: list[VerifiedAverager], modules: list[torch.nn.Module], first: int, rounds: int,
               round_s: float) -> list[tuple]:
    """Rounds first .. first + rounds - 1, back to back (each starts when the previous one returned); (result,
    phases) per peer and round."""
    out = []
    for r in range(first, first + rounds):
        for i, m in enumerate(modules):
            perturb(m, 1000 * r + i)
        clock = RoundClock(get_dht_time() - (r + 1) * round_s + 0.2, round_s)  # round r ends now
        for a in avs:
            a.clock = clock
        with ThreadPoolExecutor(len(avs)) as pool:
            results = list(pool.map(lambda a, r=r: a.step(r), avs))
        out.extend((res, a.last_phases) for res, a in zip(results, avs, strict=True))
    return out


def summarize(n: int, pairs: list[tuple]) -> dict:
    results = [res for res, _ in pairs]
    phases = [ph for _, ph in pairs]
    return {
        "full": sum(len(res.included) == n for res in results) / len(results),
        "mean_group": statistics.mean(len(res.included) for res in results),
        "round_s": statistics.mean(res.seconds for res in results),
        "phases_s": statistics.mean(ph.timing.total for ph in phases),
        "exchange_s": statistics.mean(ph.exchange_s for ph in phases),
        "overruns": sum(ph.exchange_overran or ph.late_s > LATE_S for ph in phases) / len(phases),
        "late": sum(ph.late_s > LATE_S for ph in phases) / len(phases),
        "received_kib": statistics.mean(res.bytes_received for res in results) / 1024,
        "last": phases[-1].timing,
    }


def run_group(n: int, rounds: int, round_s: float) -> dict:
    """`n` peers of one stage, `rounds` rounds with fixed phases then `rounds` adaptive: lookup coverage, and per
    timing the full-group fraction, group sizes, round and phase times, overruns."""
    experiment = f"scale{uuid.uuid4().hex[:8]}"
    timing = timing_for(n)
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
        avs = [VerifiedAverager(d, experiment, 0, m, clock=clock, params=SMALL_PARAMS, part_chunks=8, timing=timing,
                                adaptive=False, timing_floor=FLOOR) for d, m in zip(dhts, modules, strict=True)]  # fmt: skip
        try:
            fixed = run_rounds(avs, modules, 0, rounds, round_s)
            for a in avs:  # from here each round's phases follow the previous round's reports
                a.adaptive = True
            adaptive = run_rounds(avs, modules, rounds, rounds, round_s)
        finally:
            for a in avs:
                a.shutdown()
    return {"n": n, "seen": min(seen), "join_s": join_s, "lookup_s": lookup_s,
            "fixed": summarize(n, fixed), "adaptive": summarize(n, adaptive)}


def plot(rows: list[dict], name: str = "bench_scale.png") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    RESULTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ns = [r["n"] for r in rows]
    for mode, style in (("fixed", "o-"), ("adaptive", "^-")):
        ax.plot(ns, [r[mode]["full"] for r in rows], style, label=f"full-group rounds ({mode})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("peers per stage")
    ax.set_ylabel("fraction of rounds with the full group")
    ax2 = ax.twinx()
    for mode, style in (("fixed", "s--"), ("adaptive", "v--")):
        ax2.plot(ns, [r[mode]["round_s"] for r in rows], style, color="tab:red" if mode == "fixed" else "tab:purple",
                 label=f"round time, s ({mode})")
    ax2.set_ylabel("seconds per round")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(RESULTS / name, dpi=120)
    print(f"plot: {RESULTS / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 and 4 peers, 2 rounds of each timing")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="peers per stage (default 2 4 8 16 32)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per size and timing (default 4; quick: 2)")
    parser.add_argument("--round-duration", type=float, default=60.0,
                        help="the round duration adaptive phases must fit in (90 %% of it; default 60 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    sizes = args.sizes or ([2, 4] if args.quick else [2, 4, 8, 16, 32])
    rounds = args.rounds or (2 if args.quick else 4)
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min load average), {os.cpu_count()} cores; {rounds} rounds per "
          f"size and timing (fixed, then adaptive); rounds of {args.round_duration:.0f} s; module of 2,632 "
          "parameters; verified rounds (swarm.rounds.verified)")  # fmt: skip
    print(f"{'peers':>5} {'timing':>8} {'seen':>5} {'join s':>7} {'lookup s':>8} {'full group':>10} {'mean group':>10} "
          f"{'round s':>8} {'phases s':>8} {'exchange s':>10} {'overruns':>8} {'late':>5} {'KiB in':>7}  last phases (c/e/a s)")  # fmt: skip
    rows = []
    for n in sizes:
        row = run_group(n, rounds, args.round_duration)
        rows.append(row)
        for mode in ("fixed", "adaptive"):
            m = row[mode]
            t = m["last"]
            print(f"{n:>5} {mode:>8} {row['seen']:>5} {row['join_s']:>7.1f} {row['lookup_s']:>8.2f} "
                  f"{100 * m['full']:>9.0f}% {m['mean_group']:>10.1f} {m['round_s']:>8.1f} {m['phases_s']:>8.1f} "
                  f"{m['exchange_s']:>10.1f} {100 * m['overruns']:>7.0f}% {100 * m['late']:>4.0f}% {m['received_kib']:>7.0f}  "
                  f"{t.commit_s:.1f}/{t.exchange_s:.1f}/{t.agree_s:.1f}", flush=True)  # fmt: skip
    plot(rows, "bench_scale_quick.png" if args.quick else "bench_scale.png")  # quick: keep the full run's plot
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print("scale (fixed -> adaptive): " + "; ".join(
        f"{r['n']} peers: {100 * r['fixed']['full']:.0f} -> {100 * r['adaptive']['full']:.0f}% full-group rounds, "
        f"{r['fixed']['round_s']:.1f} -> {r['adaptive']['round_s']:.1f} s/round "
        f"({r['adaptive']['round_s'] / r['fixed']['round_s']:.2f}x), {100 * r['fixed']['overruns']:.0f} -> "
        f"{100 * r['adaptive']['overruns']:.0f}% overruns" for r in rows))  # fmt: skip


if __name__ == "__main__":
    main()
