"""Do honest updates pass the alignment rule through training, and does a noise rider fail it? (issue 13)

Each of N peers trains a copy of the workload's model (one stage, or its cut into 2 stages) from the group's shared
anchor for `--inner` local Adam steps per round on its own data order (its Adam state kept across rounds, as a stage
peer's is); one more peer ("noise") commits a Gaussian update of its honest update's norm. The round then runs the
verified round's own functions on the quantized updates (`zk.quantize`): the exact pairwise alignments
(`swarm.rounds.alignment`), the rule's drops (a peer aligned with fewer than half of the others), and the exact
mean of those kept, applied to the anchor by outer SGD. Printed: per workload, group size and local steps, the
cosines x sqrt(d) ("sigmas"; aligned from 4) between honest peers early (median over the first quarter of the
rounds) and late (last quarter, when the training loss is smallest), their 1st percentile and minimum over all
rounds, the noise peer's largest |sigmas| with anyone, and how many honest and noise checks ended in a drop.
`--long`: one digits group (3 honest peers and the rider, 10 steps, 2 stages) for 300 rounds, far into
overfitting, with the honest drops per band of training loss. `--quick` runs in under a minute; the last line is
a one-line summary.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from swarm.models import get_workload
from swarm.rounds.alignment import DEFAULT_MIN_ALIGNMENT, misaligned
from swarm.rounds.outer import OuterOptimizer, exact_mean
from swarm.rounds.verified import flat_parameters, load_flat_parameters
from zk.quantize import quantize_update


def stage_slices(workload, n_stages: int) -> list[slice]:
    sizes = [sum(p.numel() for p in stage.parameters()) for stage in workload.build_stages(n_stages, seed=0)]
    bounds = list(itertools.accumulate([0, *sizes]))
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


BANDS = (1.0, 0.1, 0.01, 0.001, 0.0)


def run(name: str, honest: int, rounds: int, inner: int, n_stages: int, lr: float, batch: int, k: float) -> dict:
    """One group's training run; every stage's rule is applied on its slice of the parameters."""
    workload = get_workload(name)
    models = [workload.build_full(seed=0) for _ in range(honest + 1)]  # the last one is the noise rider
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    data = [workload.batches(batch, seed=10 + i) for i in range(len(models))]
    anchor, outer = flat_parameters(models[0]), OuterOptimizer("sgd")
    slices = stage_slices(workload, n_stages)
    noise_gen = torch.Generator().manual_seed(7)
    honest_sig: list[list[float]] = []  # per round, every honest pair's sigmas (each stage)
    noise_sig, losses, honest_drops, noise_drops = [], [], 0, 0
    bands: dict[float, list[int]] = {}  # lower bound of the round's training loss -> [honest checks, drops]
    peers = [f"p{i}" for i in range(honest)] + ["noise"]
    for _ in range(rounds):
        deltas, round_loss = [], []
        for model, opt, batches in zip(models, opts, data):
            load_flat_parameters(model, anchor)
            for x, y in itertools.islice(batches, inner):
                opt.zero_grad()
                loss = workload.loss(model(x), y)
                loss.backward()
                opt.step()
                round_loss.append(loss.item())
            deltas.append(flat_parameters(model) - anchor)
        losses.append(statistics.mean(round_loss[: honest * inner]))
        new_anchor, sig = anchor.clone(), []
        for sl in slices:
            stage_deltas = [d[sl] for d in deltas]
            honest_norm = stage_deltas[-1].norm()
            noise = torch.randn(stage_deltas[-1].shape, generator=noise_gen)
            stage_deltas[-1] = noise * (honest_norm / noise.norm())
            updates = [quantize_update(d) for d in stage_deltas]
            dropped, found = misaligned(peers, updates, k)
            sig += [s for p in peers[:-1] for s in found[p][:-1]]  # honest-honest pairs (noise is last)
            noise_sig += found["noise"]
            honest_drops += sum(p in dropped for p in peers[:-1])
            band = bands.setdefault(next(b for b in BANDS if losses[-1] >= b), [0, 0])
            band[0] += honest
            band[1] += sum(p in dropped for p in peers[:-1])
            noise_drops += "noise" in dropped
            kept = [u for p, u in zip(peers, updates) if p not in dropped]
            if kept:
                new_anchor[sl] = outer.step(anchor[sl], exact_mean(kept))
        honest_sig.append(sig)
        anchor = new_anchor
    q = max(1, rounds // 4)
    early = [s for r in honest_sig[:q] for s in r]
    late = [s for r in honest_sig[-q:] for s in r]
    load_flat_parameters(models[0], anchor)
    every = sorted(s for r in honest_sig for s in r)
    return {
        "early": statistics.median(early), "late": statistics.median(late), "min": every[0],
        "p1": every[len(every) // 100], "noise_max": max(abs(s) for s in noise_sig), "loss_first": losses[0],
        "loss_late": statistics.mean(losses[-q:]), "test_loss": workload.evaluate(models[0]),
        "honest_drops": honest_drops, "honest_checks": rounds * len(slices) * honest,
        "noise_drops": noise_drops, "noise_checks": rounds * len(slices),
        "d": [sl.stop - sl.start for sl in slices], "bands": bands,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="digits only, fewer rounds: under a minute")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sigmas", type=float, default=DEFAULT_MIN_ALIGNMENT)
    parser.add_argument("--long", action="store_true", help="one digits group for 300 rounds, drops per loss band")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.monotonic()
    # (workload, honest peers, local steps per round, stages)
    cases = [("digits", 3, 10, 1), ("digits", 3, 1, 1), ("digits", 7, 10, 1), ("digits", 3, 10, 2),
             ("digits", 3, 1, 2), ("tinylm", 3, 10, 1), ("tinylm", 3, 1, 2)]
    rounds = {"digits": args.rounds, "tinylm": max(8, args.rounds // 3)}
    if args.quick:
        cases, rounds = [("digits", 3, 10, 1), ("digits", 3, 1, 2)], {"digits": 20}
    if args.long:
        cases, rounds = [("digits", 3, 10, 2)], {"digits": 300}
    print(f"rule: drop a peer aligned (cos >= {args.sigmas:g}/sqrt(d)) with fewer than half of the others; figures "
          "are honest pairs' cos x sqrt(d) ('sigmas'); honest peers + 1 noise")
    print(f"{'workload':8} {'peers':>5} {'steps':>5} {'stages':>6} {'d':>16} {'rounds':>6} {'loss':>15} "
          f"{'early':>7} {'late':>7} {'p1':>7} {'min':>7} {'noise|max|':>10} {'honest dropped':>15} "
          f"{'noise dropped':>14}")
    worst, noise_worst, drops = float("inf"), 0.0, 0
    for name, honest, inner, stages in cases:
        r = run(name, honest, rounds[name], inner, stages, args.lr, args.batch, args.sigmas)
        worst, noise_worst = min(worst, r["min"]), max(noise_worst, r["noise_max"])
        drops += r["honest_drops"]
        print(f"{name:8} {honest:5} {inner:5} {stages:6} {'/'.join(map(str, r['d'])):>16} {rounds[name]:6} "
              f"{r['loss_first']:6.3f}->{r['loss_late']:7.4f} {r['early']:7.1f} {r['late']:7.1f} {r['p1']:7.1f} "
              f"{r['min']:7.1f} "
              f"{r['noise_max']:10.2f} {r['honest_drops']:>7}/{r['honest_checks']:<7} "
              f"{r['noise_drops']:>6}/{r['noise_checks']:<7}", flush=True)
        if args.long:
            for b, (checks, dropped) in sorted(r["bands"].items(), reverse=True):
                print(f"  rounds with training loss >= {b:<6g}: {dropped} honest drops of {checks} checks "
                      f"({100 * dropped / checks:.1f} %)")
        print(f"  test loss of the anchor at the end: {r['test_loss']:.4f}")
    print(f"({time.monotonic() - started:.0f} s)")
    print(f"summary: honest pairs' alignment >= {worst:.1f} sigmas (rule: {args.sigmas:g}), {drops} honest drops in "
          f"all; the noise rider within {noise_worst:.2f} sigmas of 0 with everyone")


if __name__ == "__main__":
    main()
