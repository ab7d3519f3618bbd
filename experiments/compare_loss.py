"""Learning is real: the swarm's loss vs the single-process baseline on the same model, data and samples.

Both start from the same seed and see the same batches in the same order; the baseline trains the stage modules
in-process, the swarm through stage peers (child processes) over hivemind P2P. Writes a PNG of loss vs samples
to experiments/results/ and prints both final losses; `--quick` runs in under a minute.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from local_swarm import local_swarm

from swarm.models import get_workload
from swarm.network.dht import create_dht
from swarm.pipeline.baseline import train_baseline
from swarm.pipeline.trainer import Trainer, TrainReport

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.05


def run_swarm(
    workload_name, options, *, n_stages, peers_per_stage, concurrency, round_duration, matchmaking_time, steps,
    batch_size, lr, seed, codec="int8",
) -> tuple[TrainReport, list[dict]]:
    workload = get_workload(workload_name, **options)
    with local_swarm(workload_name, n_stages, peers_per_stage=peers_per_stage, lr=lr, seed=seed,
                     options=options, round_duration=round_duration,
                     matchmaking_time=matchmaking_time) as swarm:  # fmt: skip
        dht = create_dht(swarm.initial_peers)
        try:
            with Trainer(dht, swarm.experiment, workload, n_stages=n_stages, batch_size=batch_size,
                         seed=seed, concurrency=concurrency, codec=codec) as trainer:  # fmt: skip
                report = trainer.run(steps)
                report.eval_loss = trainer.evaluate()
        finally:
            dht.shutdown()
    return report, swarm.stats


def smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot(runs: list[tuple[TrainReport, str]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(1, len(runs[0][0].steps) // 20)
    fig, ax = plt.subplots(figsize=(7, 4))
    for report, label in runs:
        w = max(1, window * len(report.steps) // len(runs[0][0].steps))
        ax.plot([s.samples for s in report.steps], smooth([s.loss for s in report.steps], w), label=label)
    ax.set_xlabel("samples")
    ax.set_ylabel(f"training loss (moving mean over {window * runs[0][0].samples // len(runs[0][0].steps)} samples)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run, under a minute")
    parser.add_argument("--workload", default="tinylm", choices=["tinylm", "digits"])
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--peers-per-stage", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2, help="micro-batches the swarm trainer keeps in flight")
    parser.add_argument("--round-duration", type=float, default=2.0, help="seconds per averaging round")
    parser.add_argument("--matchmaking-time", type=float, default=None,
                        help="seconds the stage peers wait for each other per round (StageAverager's default if unset)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outer", nargs="+", choices=["sgd", "nesterov"], default=["sgd"],
                        help="with several peers per stage: the verified rounds' outer optimizer(s), one swarm each")
    parser.add_argument("--no-verify", action="store_true", help="stage peers average with hivemind's all-reduce")
    parser.add_argument("--codecs", nargs="+", choices=["int8", "none"], default=["int8"],
                        help="activations/gradients between stages: one swarm each (int8, the default, vs none: "
                             "the loss effect of compressing them)")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ["OMP_NUM_THREADS"] = "1"  # 2 cores shared by peers, trainer and baseline: no oversubscription
    torch.set_num_threads(1)

    options = {"n_layer": 2, "n_embd": 64, "block_size": 32} if args.workload == "tinylm" else {}
    steps = args.steps or (60 if args.quick else 400)
    workload = get_workload(args.workload, **options)
    common = {"n_stages": args.stages, "steps": steps, "batch_size": args.batch_size, "lr": args.lr,
              "seed": args.seed}  # fmt: skip
    base, _ = train_baseline(workload, **common)
    runs = [(base, "single process")]
    p = args.peers_per_stage
    if p > 1:  # what data parallelism over p replicas would do: p times the batch, 1/p of the steps, same samples
        wide, _ = train_baseline(workload, **{**common, "steps": steps // p, "batch_size": args.batch_size * p})
        runs.append((wide, f"single process, batch x{p}"))
    swarms = []
    for outer in args.outer if p > 1 else ["sgd"]:
        for codec in args.codecs:
            os.environ["SWARM_LOOP_OUTER"] = outer  # read by experiments/stage_peer_loop.py in every stage peer
            os.environ["SWARM_LOOP_VERIFY"] = "0" if args.no_verify else "1"
            swarm, stats = run_swarm(
                args.workload, options, peers_per_stage=args.peers_per_stage, concurrency=args.concurrency,
                round_duration=args.round_duration if args.peers_per_stage > 1 else None,
                matchmaking_time=args.matchmaking_time, codec=codec, **common,
            )  # fmt: skip
            label = "swarm" if p == 1 else ("swarm, hivemind all-reduce" if args.no_verify else f"swarm, outer {outer}")
            if len(args.codecs) > 1:
                label += f", {'fp32' if codec == 'none' else codec}"
            swarms.append((swarm, stats, label))
    swarm, stats, _ = swarms[0]

    rounds = f", rounds of {args.round_duration:g} s" if args.peers_per_stage > 1 else ""
    title = (f"{args.workload}: {args.stages} stages x {args.peers_per_stage} peer(s){rounds}, {args.concurrency} in flight, "
             f"{steps} steps x {args.batch_size} samples")  # fmt: skip
    quick = "_quick" if args.quick else ""  # a quick run does not overwrite the recorded plot
    outers = "" if p == 1 else "_" + ("hivemind" if args.no_verify else "-".join(args.outer))
    outers += "" if args.codecs == ["int8"] else "_" + "-".join(args.codecs)
    png = RESULTS / f"compare_loss_{args.workload}_{args.stages}x{p}_c{args.concurrency}{outers}{quick}.png"
    runs += [(report, label) for report, _, label in swarms]
    plot(runs, title, png)
    gap = swarm.final_loss / base.final_loss - 1
    eval_gap = swarm.eval_loss / base.eval_loss - 1
    print(title)
    print(f"{'':30} {'first loss':>10} {'final loss':>10} {'test loss':>10} {'samples':>8} {'samples/s':>9}")
    for r, name in runs:
        print(f"{name:30} {r.steps[0].loss:>10.4f} {r.final_loss:>10.4f} {r.eval_loss:>10.4f} {r.samples:>8} "
              f"{r.samples_per_second:>9.1f}")  # fmt: skip
    for _, peer_stats, label in swarms if p > 1 else []:
        for st in sorted(peer_stats, key=lambda st: st["stage"]):
            print(f"  {label}: stage {st['stage']} peer: {st['steps']} optimizer steps, averaged in "
                  f"{st['rounds_averaged']} of {st['rounds']} rounds ({st.get('rounds_verified', 0)} verified), "
                  f"{st['bytes_averaged'] / 2**20:.2f} MiB averaged")  # fmt: skip
    print(f"plot: {png.relative_to(Path.cwd()) if png.is_relative_to(Path.cwd()) else png}")
    ok = abs(gap) <= TOLERANCE and abs(eval_gap) <= TOLERANCE
    codecs = ""
    if len(args.codecs) > 1:  # the loss effect of compressing activations and gradients, at equal samples
        by = {label.rsplit(", ", 1)[1]: r for r, _, label in swarms[: len(args.codecs)]}
        if {"int8", "fp32"} <= by.keys():
            codecs = (f"; int8 vs fp32 swarm: final {by['int8'].final_loss / by['fp32'].final_loss - 1:+.1%}, test "
                      f"{by['int8'].eval_loss / by['fp32'].eval_loss - 1:+.1%}")  # fmt: skip
    print(f"learning: swarm final loss {swarm.final_loss:.4f} vs baseline {base.final_loss:.4f} ({gap:+.1%}), "
          f"test {swarm.eval_loss:.4f} vs {base.eval_loss:.4f} ({eval_gap:+.1%}): "
          f"{'within' if ok else 'NOT within'} {TOLERANCE:.0%}"
          + (f"; vs batch x{p}: {swarm.final_loss / runs[1][0].final_loss - 1:+.1%}" if p > 1 else "")
          + "".join(f"; {label}: final {r.final_loss:.4f}, test {r.eval_loss:.4f}" for r, _, label in swarms[1:])
          + codecs)  # fmt: skip


if __name__ == "__main__":
    main()
