"""Loss curves of a stage group under attack: honest; 1 poisoner of 3 with checks off / on; a bounded adversary of 4
with the plain mean / CenteredClip / the alignment rule; a noise rider of 4 with the alignment rule off / on.

Each peer trains a copy of the digits model (the whole model as one stage) on its own data order for `--inner`
local Adam steps per round, then the group runs the verified round's own functions in this process: Δ quantized and
committed (`zk.commit`), parts signed and, with checks on, checked against the sender's root (`check_part`), the
norm rule of `VerifiedAverager._admit`, the exact mean or CenteredClip, outer SGD from the shared anchor. The
network exchange of the same parts is what tests/integration/test_verified_rounds.py runs through real DHTs.
"poison" commits the honest update and sends its scales x1000; "scale" commits and sends -9x the honest update
(within the norm bound, so no check catches it); "noise" commits and sends a random update of its honest update's
norm (a free rider; only the alignment rule, swarm/rounds/alignment.py at 4 sigmas, drops it). The test loss is that
of the anchor, after every round.
Writes experiments/results/byzantine.png and prints a table; `--quick` runs in under a minute.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from swarm.models import get_workload
from swarm.rounds.alignment import DEFAULT_MIN_ALIGNMENT, misaligned
from swarm.rounds.outer import OuterOptimizer, aggregate
from swarm.rounds.parts import CommitRecord, check_part, make_parts, new_round_key
from swarm.rounds.verified import (
    DEFAULT_NORM_FACTOR,
    DEFAULT_PART_CHUNKS,
    attacked_update,
    corrupt_part,
    flat_parameters,
    load_flat_parameters,
)
from zk.circuit import DEFAULT_PARAMS
from zk.commit import commit_update
from zk.quantize import QuantizedUpdate, quantize_update

RESULTS = Path(__file__).parent / "results"
SCENARIOS = {  # name: (attacks of the peers, checks on, aggregation, alignment rule on)
    "honest (3)": ([None, None, None], True, "mean", False),
    "honest (3), alignment": ([None, None, None], True, "mean", True),
    "1 poisoner of 3, checks off": (["poison", None, None], False, "mean", False),
    "1 poisoner of 3, checks on": (["poison", None, None], True, "mean", False),
    "bounded adversary of 4, mean": (["scale", None, None, None], True, "mean", False),
    "bounded adversary of 4, CenteredClip": (["scale", None, None, None], True, "centered_clip", False),
    "bounded adversary of 4, alignment": (["scale", None, None, None], True, "mean", True),
    "noise rider of 4, alignment off": (["noise", None, None, None], True, "mean", False),
    "noise rider of 4, alignment on": (["noise", None, None, None], True, "mean", True),
}


def sent_update(parts, numel: int) -> QuantizedUpdate:
    values = np.frombuffer(b"".join(p.values for p in parts), dtype=np.int8).copy()
    scales = np.frombuffer(b"".join(p.scales for p in parts), dtype="<u4").astype(np.int64)
    return QuantizedUpdate(torch.from_numpy(values), torch.from_numpy(scales), numel, (numel,), DEFAULT_PARAMS.block)


def one_round(deltas: list[torch.Tensor], attacks, checks: bool, alignment: bool = False
              ) -> tuple[list[QuantizedUpdate], int]:  # fmt: skip
    """What enters the average: each peer's sent update, minus those the checks (and, with `alignment`, the
    alignment rule) refuse; returns (kept, dropped)."""
    kept, records, sent = [], [], []
    for i, (delta, attack) in enumerate(zip(deltas, attacks)):
        commitment = commit_update(quantize_update(attacked_update(delta, attack, DEFAULT_NORM_FACTOR)))
        key, public = new_round_key()
        parts = [corrupt_part(p, key, attack) for p in make_parts(commitment, f"p{i}", 0, 0, key, DEFAULT_PART_CHUNKS)]
        records.append(CommitRecord(peer_id=f"p{i}", round=0, stage=0, root=commitment.root, norm_sq=commitment.norm_sq,
                                    numel=delta.numel(), num_chunks=commitment.num_chunks, part_key=public,
                                    anchor_round=0, anchor_digest=bytes(32)))  # fmt: skip
        sent.append(parts)
    limit = statistics.median(r.norm_sq for r in records) * DEFAULT_NORM_FACTOR**2
    for record, parts in zip(records, sent):
        if checks and (record.norm_sq > limit or any(
                check_part(record, p, DEFAULT_PARAMS, DEFAULT_PART_CHUNKS) is not None for p in parts)):
            continue
        kept.append(sent_update(parts, record.numel))
    if alignment:
        dropped, _ = misaligned([str(i) for i in range(len(kept))], kept, DEFAULT_MIN_ALIGNMENT)
        kept = [q for i, q in enumerate(kept) if str(i) not in dropped]
    return kept, len(records) - len(kept)


def run(scenario: str, rounds: int, inner: int, lr: float, batch: int) -> tuple[list[float], int]:
    attacks, checks, how, alignment = SCENARIOS[scenario]
    workload = get_workload("digits")
    models = [workload.build_full(seed=0) for _ in attacks]
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in models]
    data = [workload.batches(batch, seed=10 + i) for i in range(len(attacks))]
    anchor, outer = flat_parameters(models[0]), OuterOptimizer("sgd")
    losses, dropped = [workload.evaluate(models[0])], 0
    for _ in range(rounds):
        deltas = []
        for model, opt, batches in zip(models, opts, data):
            load_flat_parameters(model, anchor)
            for x, y in itertools.islice(batches, inner):
                opt.zero_grad()
                workload.loss(model(x), y).backward()
                opt.step()
            deltas.append(flat_parameters(model) - anchor)
        kept, n_dropped = one_round(deltas, attacks, checks, alignment)
        dropped += n_dropped
        anchor = outer.step(anchor, aggregate(kept, how))
        load_flat_parameters(models[0], anchor)
        losses.append(workload.evaluate(models[0]) if torch.isfinite(anchor).all() else float("nan"))
    return losses, dropped


def plot(curves: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for name, losses in curves.items():
        ax.plot(range(len(losses)), [min(v, 10.0) if math.isfinite(v) else 10.0 for v in losses], label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("test loss of the anchor (capped at 10)")
    ax.set_title("digits, verified rounds under attack")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8 rounds of 5 local steps: under a minute")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--inner", type=int, default=10, help="local Adam steps per round")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.inner = 8, 5
    torch.set_num_threads(1)
    started = time.monotonic()
    curves, drops = {}, {}
    for name in SCENARIOS:
        curves[name], drops[name] = run(name, args.rounds, args.inner, args.lr, args.batch)
    path = RESULTS / "byzantine.png"
    plot(curves, path)
    marks = sorted({0, args.rounds // 4, args.rounds // 2, args.rounds})
    print(f"digits, {args.rounds} rounds x {args.inner} local steps; test loss of the anchor after round:")
    print(f"{'scenario':38} " + " ".join(f"{m:>8}" for m in marks) + f" {'dropped':>8}")
    for name, losses in curves.items():
        print(f"{name:38} " + " ".join(f"{losses[m]:8.4f}" for m in marks) + f" {drops[name]:8}")
    print(f"plot: {path} ({time.monotonic() - started:.0f} s)")
    final = {k: v[-1] for k, v in curves.items()}
    print(f"summary: final test loss honest {final['honest (3)']:.3f}; poisoner with checks off "
          f"{final['1 poisoner of 3, checks off']:.3g}, on {final['1 poisoner of 3, checks on']:.3f}; bounded "
          f"adversary mean {final['bounded adversary of 4, mean']:.3f}, CenteredClip "
          f"{final['bounded adversary of 4, CenteredClip']:.3f}, alignment "
          f"{final['bounded adversary of 4, alignment']:.3f}; noise rider alignment off "
          f"{final['noise rider of 4, alignment off']:.3f}, on {final['noise rider of 4, alignment on']:.3f}")


if __name__ == "__main__":
    main()
