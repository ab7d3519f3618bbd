"""After a run: the report (`results`) and the model with its card (`export`), from the state directory alone.

Both read history.json (the monitor's record: rewards as the chain said them, throughput per stage, rounds),
events.jsonl (the local trainers' losses) and the checkpoints; neither needs the swarm or the chain to be running.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from swarm.apps.experiment import checkpoint as ckpt
from swarm.apps.experiment.state import EVENTS, HISTORY, StateError, read_state

MAX_BASELINE_STEPS = 3000


def _history(state_dir: Path) -> dict[str, Any]:
    path = state_dir / HISTORY
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _trainer_losses(state_dir: Path) -> list[tuple[float, int, float]]:
    """(wall seconds since the first step, samples of all local trainers so far, loss) per trainer step."""
    from swarm.apps.events import Step, parse_event

    path = state_dir / EVENTS
    if not path.exists():
        return []
    samples: dict[str, int] = {}
    out, t0 = [], None
    for line in path.read_text().splitlines():
        e = parse_event(line)
        if isinstance(e, Step):
            t0 = e.time if t0 is None else t0
            samples[e.peer] = e.samples
            out.append((e.time - t0, sum(samples.values()), e.loss))
    return out


def _smooth(values: list[float], k: int = 20) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def write_results(state_dir: Path, out: Path, *, baseline_steps: int | None = None) -> Path:
    """report.md + loss_vs_samples.png, loss_vs_time.png, throughput.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from swarm.models import get_workload
    from swarm.pipeline.baseline import train_baseline

    state = read_state(state_dir)
    cfg = state.get("config_data") or {}
    run = cfg.get("experiment", {})
    hist = _history(state_dir)
    losses = _trainer_losses(state_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch = int(run.get("batch_size", 32))
    steps = len(losses)
    cap = baseline_steps or MAX_BASELINE_STEPS
    n_base = max(1, min(steps or 200, cap))
    workload = get_workload(run.get("workload", "digits"))
    t0 = time.perf_counter()
    report, _ = train_baseline(workload, n_stages=int(run.get("n_stages", 2)), steps=n_base, batch_size=batch,
                               lr=float(run.get("lr", 1e-3)), seed=int(run.get("seed", 0)))  # fmt: skip
    base_s = time.perf_counter() - t0
    base = [(s.seconds, s.samples, s.loss) for s in report.steps]

    for name, xi, xlabel in (("loss_vs_samples.png", 1, "samples"), ("loss_vs_time.png", 0, "wall time (s)")):
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        if losses:
            ax.plot([p[xi] for p in losses], _smooth([p[2] for p in losses]), lw=1, label="swarm (local trainers)")
        ax.plot([p[xi] for p in base], _smooth([p[2] for p in base]), lw=1, label="single-process baseline")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss (20-step mean)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    thr = hist.get("throughput_all") or {}
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for stage, series in sorted(thr.items()):
        ax.plot(series, lw=1, label=f"stage {stage}")
    ax.set_xlabel("monitor poll")
    ax.set_ylabel("announced samples/s")
    if thr:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    def tail(xs: list[float]) -> float:
        t = xs[-max(1, len(xs) // 10):]
        return sum(t) / len(t) if t else math.nan

    swarm_final = tail([p[2] for p in losses])
    swarm_s = losses[-1][0] if losses else math.nan
    swarm_samples = losses[-1][1] if losses else 0
    chain = hist.get("chain") or {}
    lines = [
        f"# Results: {state.get('experiment')}", "",
        (f"{run.get('workload')} in {run.get('n_stages')} stages, {run.get('round_duration')} s rounds, "
        f"lr {run.get('lr')}, batch {batch}. Written {time.strftime('%Y-%m-%d %H:%M:%S')} from {state_dir}."), "",
        "| run | steps | samples | wall time (s) | samples/s | final loss (last 10%) | test loss |",
        "|---|---|---|---|---|---|---|",
        (f"| swarm (local trainers) | {steps} | {swarm_samples} | {swarm_s:.1f} | "
        f"{(swarm_samples / swarm_s) if steps and swarm_s > 0 else math.nan:.1f} | {swarm_final:.4f} | "
        f"{_last_test_loss(hist)} |"),
        (f"| single-process baseline (same data, batch, lr; swarm.pipeline.baseline) | {len(base)} | "
        f"{report.samples} | {base_s:.1f} | {report.samples_per_second:.1f} | {report.final_loss:.4f} | "
        f"{report.eval_loss:.4f} |"), "",
        "![loss vs samples](loss_vs_samples.png) ![loss vs wall time](loss_vs_time.png)", "",
        "## Throughput per stage (announced on the DHT, mean over the run)", "",
        "| stage | mean samples/s | peers at the end |", "|---|---|---|",
    ]  # fmt: skip
    stages_now = {str(s["stage"]): len(s["peers"]) for s in hist.get("stages", [])}
    for stage, series in sorted(thr.items()):
        mean = sum(series) / len(series) if series else 0.0
        lines.append(f"| {stage} | {mean:.1f} | {stages_now.get(stage, 0)} |")
    lines += ["", "![throughput](throughput.png)", "", "## Rewards (read from the chain by the monitor)", ""]
    if chain:
        lines += [(f"{chain.get('contributions', 0)} proofs verified on-chain, {chain.get('finalized_rounds', 0)} "
                  f"rounds finalized, {chain.get('slashes', 0)} slashes; paid {chain.get('paid', 0):.4f} SWT, "
                  f"pool left {chain.get('pool', 0):.4f} SWT."), "",
                  "| wallet | proofs | claims | claimed (SWT) | claimed (wei) |", "|---|---|---|---|---|"]  # fmt: skip
        for r in chain.get("rewards", []):
            lines.append(f"| {r['peer']} | {r['contributions']} | {r['claims']} | {int(r['claimed_wei']) / 1e18:.4f} "
                         f"| {r['claimed_wei']} |")  # fmt: skip
    else:
        lines.append("no chain (economy off, or the monitor never read it)")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out


def _last_test_loss(hist: dict[str, Any]) -> str:
    tl = hist.get("test_loss") or []
    return f"{tl[-1][1]:.4f} (checkpoint round {tl[-1][0]})" if tl else "–"


def export_model(state_dir: Path, out: Path, *, checkpoint: Path | None = None) -> Path:
    """model.safetensors (every stage, keys 'stage<S>.<name>'), manifest.json and MODEL_CARD.md in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from safetensors.torch import save_file

    state = read_state(state_dir)
    folder = checkpoint or ckpt.latest_complete(Path(state.get("checkpoint_dir") or state_dir / "checkpoints"))
    if folder is None:
        raise StateError(f"no complete checkpoint under {state.get('checkpoint_dir')}: checkpoints are saved every "
                         "[checkpoints] every_rounds rounds by the stage peers that run the checkpoint hook")
    manifest, stages = ckpt.load_model(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"stage{s}.{k}": v.contiguous() for s, m in enumerate(stages) for k, v in m.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"workload": manifest["workload"],
              "n_stages": str(manifest["n_stages"]), "round": str(manifest["round"])})  # fmt: skip
    test_loss = ckpt.evaluate(folder)
    (out / "manifest.json").write_text(json.dumps({**manifest, "test_loss": test_loss}, indent=2))
    hist = _history(state_dir)
    losses = _trainer_losses(state_dir)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    if losses:
        ax.plot([p[1] for p in losses], _smooth([p[2] for p in losses]), lw=1, label="training loss")
    tl = hist.get("test_loss") or []
    if tl and losses:
        ax2 = ax.twiny()
        ax2.plot([r for r, _ in tl], [v for _, v in tl], "o-", color="green", label="test loss (checkpoints)")
        ax2.set_xlabel("round")
    ax.set_xlabel("samples")
    ax.set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
    chain = hist.get("chain") or {}
    peers = sorted({p["peer_id"] for s in hist.get("stages", []) for p in s["peers"]})
    savers = sorted({s.get("peer_id", "?") for s in manifest["stages"]})
    n_params = sum(s.get("n_params", 0) for s in manifest["stages"])
    card = [
        f"# Model card: {manifest['experiment']} (round {manifest['round']})", "",
        f"- workload: {manifest['workload']}, {manifest['n_stages']} pipeline stages, {n_params:,} parameters",
        f"- checkpoint: {folder} (round {manifest['round']}, saved by {', '.join(savers)})",
        f"- outer optimizer: {manifest['outer_optimizer']['kind']} (state: {manifest['outer_optimizer']['state']})",
        f"- test loss of this model: {test_loss:.4f} (the workload's own test split)",
        f"- trained by {len(peers)} stage peers seen at the end: {', '.join(peers) or '–'}",
        f"- rounds: {hist.get('round', manifest['round'])} at the last monitor reading",
        "", "## On-chain settlement", "",
        (f"escrow experiment {manifest.get('chain_experiment_id')}: {chain.get('contributions', 0)} proofs verified, "
         f"{chain.get('finalized_rounds', 0)} rounds finalized, {chain.get('paid', 0):.4f} SWT paid to "
         f"{len(chain.get('rewards', []))} wallets, {chain.get('slashes', 0)} slashes, pool left "
         f"{chain.get('pool', 0):.4f} SWT") if chain else "no chain",
        "", "![loss](loss.png)", "",
        ("Load with `safetensors.torch.load_file('model.safetensors')`; keys are `stage<S>.<parameter>` of "
        "`swarm.models.get_workload(workload).build_stages(n_stages)`."),
    ]  # fmt: skip
    (out / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    return out
