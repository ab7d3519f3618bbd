"""One stage's averaging round, verified vs unverified: time and bytes per peer, at 1e5 and 1e6 parameters.

unverified: hivemind's butterfly all-reduce of int8 parameters (`StageAverager`, `--no-verify`), nothing checked.
verified: `VerifiedAverager`: Δ quantized and committed once, signed record on the DHT, all-gather of whole-chunk
parts over p2pd, every part checked against its sender's Merkle-sum root before it enters the exact mean.
N peers, each with its own DHT and p2pd on loopback, one flat parameter tensor per peer, R rounds per mode, both
modes in the same run; between rounds every peer takes a random "local step". Also measured in this process:
committing time per value (`zk.commit`) next to checking time per received value (`check_part` over every part of
one update), on the same update. `--quick` runs in under a minute (1e5 parameters, 2 rounds).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import torch
from hivemind.utils import get_dht_time

from swarm.network.dht import local_dhts
from swarm.rounds.averager import RoundResult, StageAverager
from swarm.rounds.clock import RoundClock
from swarm.rounds.parts import CommitRecord, check_part, make_parts, new_round_key
from swarm.rounds.verified import DEFAULT_PART_CHUNKS, RoundTiming, VerifiedAverager
from zk.circuit import DEFAULT_PARAMS
from zk.commit import commit_update
from zk.quantize import quantize_update

logger = logging.getLogger("bench_averaging")


class FlatStage(torch.nn.Module):
    def __init__(self, n: int, seed: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.02)


def local_step(modules, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in modules:
            m.w.add_(torch.randn(m.w.shape, generator=gen) * 1e-3)


def micro(n: int) -> dict:
    """Seconds per value: quantize+commit+sign one update of n values, and check every part of it."""
    commit_update(quantize_update(torch.randn(5000)), DEFAULT_PARAMS)  # warm-up: constants, native code, imports
    delta = torch.randn(n) * 1e-3
    t0 = time.perf_counter()
    commitment = commit_update(quantize_update(delta), DEFAULT_PARAMS)
    key, public = new_round_key()
    parts = make_parts(commitment, "QmBench", 0, 0, key, DEFAULT_PART_CHUNKS)
    commit_s = time.perf_counter() - t0
    record = CommitRecord(peer_id="QmBench", round=0, stage=0, root=commitment.root, norm_sq=commitment.norm_sq,
                          numel=n, num_chunks=commitment.num_chunks, part_key=public, anchor_round=-1,
                          anchor_digest=bytes(32))  # fmt: skip
    t0 = time.perf_counter()
    assert all(check_part(record, p, DEFAULT_PARAMS, DEFAULT_PART_CHUNKS) is None for p in parts)
    check_s = time.perf_counter() - t0
    return {"commit_us": commit_s / n * 1e6, "check_us": check_s / n * 1e6, "commit_s": commit_s, "check_s": check_s}


def run_unverified(dhts, modules, rounds: int, matchmaking: float) -> list[RoundResult]:
    experiment = f"bench{uuid.uuid4().hex[:6]}"
    avs = [StageAverager(d, experiment, 0, m, compression="int8", matchmaking_time=matchmaking)
           for d, m in zip(dhts, modules)]  # fmt: skip
    gen, results = torch.Generator().manual_seed(1), []
    try:
        with ThreadPoolExecutor(len(avs)) as pool:
            for r in range(rounds):
                local_step(modules, gen)
                results += pool.map(lambda a, r=r: a.step(r, timeout=60.0), avs)
    finally:
        for a in avs:
            a.shutdown()
    return results


def run_verified(dhts, modules, rounds: int, timing: RoundTiming) -> tuple[list[RoundResult], bool]:
    experiment = f"bench{uuid.uuid4().hex[:6]}"
    duration = timing.commit_s + timing.exchange_s + timing.agree_s + 1.0
    clock = RoundClock(0.0, duration)
    avs = [VerifiedAverager(d, experiment, 0, m, clock=clock, timing=timing) for d, m in zip(dhts, modules)]
    anchor = avs[0].anchor.clone()
    for a in avs:  # one shared starting point (a stage's peers have it after their first resync)
        a.anchor = anchor.clone()
    gen, results = torch.Generator().manual_seed(2), []
    identical = True
    try:
        with ThreadPoolExecutor(len(avs)) as pool:
            for r in range(rounds):
                local_step(modules, gen)
                clock = RoundClock(get_dht_time() - (r + 1) * duration + 0.1, duration)  # round r ends now
                for a in avs:
                    a.clock = clock
                results += pool.map(lambda a, r=r: a.step(r), avs)
                identical &= all(torch.equal(a.anchor, avs[0].anchor) for a in avs)
    finally:
        for a in avs:
            a.shutdown()
    return results, identical


def row(name: str, ok: list[RoundResult], work_s: float) -> str:
    sent = statistics.mean(x.bytes_sent for x in ok)
    received = statistics.mean(x.bytes_received for x in ok)
    return f"{name:10} {work_s:9.2f} {sent:14,.0f} {received:14,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1e5 parameters, 3 peers, 2 rounds: under a minute")
    parser.add_argument("--params", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--matchmaking", type=float, default=1.0, help="unverified: seconds of matchmaking")
    args = parser.parse_args()
    if args.quick:
        args.params, args.rounds = [100_000], 2
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    started = time.monotonic()
    summary = []
    for n in args.params:
        m = micro(n)
        # phases sized from the measured cost, with room for a loaded machine
        timing = RoundTiming(commit_s=1.0 + 3 * m["commit_s"],
                             exchange_s=1.5 + 3 * (args.peers - 1) * m["check_s"], agree_s=1.5)
        modules = [FlatStage(n, seed=0) for _ in range(args.peers)]
        # fresh DHTs per mode: hivemind's averager processes can leave a DHT process broken when they exit
        with local_dhts(args.peers) as dhts:
            verified, identical = run_verified(dhts, modules, args.rounds, timing)
        with local_dhts(args.peers) as dhts:
            plain = run_unverified(dhts, modules, args.rounds, args.matchmaking)
        plain_ok = [x for x in plain if x.averaged]
        ver_ok = [x for x in verified if x.averaged and len(x.included) == args.peers]
        if not plain_ok or not ver_ok:
            raise SystemExit(f"{n}: no round averaged ({len(plain_ok)} unverified, {len(ver_ok)} verified)")
        plain_s = statistics.median(max(x.seconds - args.matchmaking, 0.0) for x in plain_ok)
        ver_commit = statistics.median(x.commit_seconds for x in ver_ok)
        ver_check = statistics.median(x.check_seconds for x in ver_ok)
        print(f"\n{n:,} parameters, {args.peers} peers, {args.rounds} rounds per mode "
              f"(verified phases: commit {timing.commit_s:.1f} s, exchange {timing.exchange_s:.1f} s)")
        print(f"{'mode':10} {'work s':>9} {'sent B/peer':>14} {'recv B/peer':>14}")
        print(row("unverified", plain_ok, plain_s) + f"   all-reduce after {args.matchmaking:g} s matchmaking; "
              f"averaged {len(plain_ok)}/{len(plain)}")
        print(row("verified", ver_ok, ver_commit + ver_check) + f"   commit {ver_commit:.2f} s + exchange and "
              f"checks {ver_check:.2f} s; verified {len(ver_ok)}/{len(verified)}; anchors bit-identical: "
              f"{identical}")
        bytes_ratio = statistics.mean(x.bytes_received for x in ver_ok) / statistics.mean(
            x.bytes_received for x in plain_ok)
        print(f"verified/unverified bytes received: {bytes_ratio:.2f} (all-gather: each peer receives the other "
              f"{args.peers - 1} updates whole; butterfly: 2(N-1)/N of one)")
        print(f"commit {m['commit_us']:.2f} us/value, check {m['check_us']:.2f} us/received value "
              f"(one update of {n:,} in this process: {m['commit_s']:.2f} s vs {m['check_s']:.2f} s)")
        summary.append(f"{n:.0e}: bytes x{bytes_ratio:.2f}, work {ver_commit + ver_check:.2f} s vs "
                       f"{plain_s:.2f} s, commit {m['commit_us']:.2f} / check {m['check_us']:.2f} us/value")
    print(f"\n({time.monotonic() - started:.0f} s)")
    print(f"summary: verified vs unverified, {args.peers} peers: " + "; ".join(summary))


if __name__ == "__main__":
    main()
