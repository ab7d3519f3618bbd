"""Checkpoints of the swarm's model: every N rounds, one peer per stage saves its stage (safetensors + JSON).

The saving is a stage peer's round hook (`swarm-peer --round-hooks swarm.apps.experiment.checkpoint:on_round`),
configured by the environment (launch sets it for the stage peers it starts):

- SWARM_CHECKPOINT_DIR: the checkpoint folder; SWARM_CHECKPOINT_EVERY: save after rounds r with (r+1) % N == 0;
- SWARM_RESUME_FROM: a checkpoint folder whose stage parameters the peer loads at its first round hook;
- SWARM_ROUND_OFFSET: the round a resumed swarm started from (its rounds are numbered offset + local round).

Which peer saves a stage: the first of the stage's peers to finish the round's averaging in this folder takes the
stage's claim file (O_EXCL), the others skip. After averaging the peers of a stage hold the same parameters, so any
one of them will do. If that peer leaves, the next checkpoint's claim goes to whichever peer of the stage is left;
a stage nobody serves at a checkpoint round leaves that checkpoint incomplete (no manifest.json), and export uses
the newest complete one. The outer optimizer's kind is recorded; its state (nesterov's momentum) is not reachable
from a round hook, so it is not saved (see `outer_optimizer_info`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger("swarm.experiment.checkpoint")

ENV_DIR, ENV_EVERY, ENV_RESUME, ENV_OFFSET = (
    "SWARM_CHECKPOINT_DIR", "SWARM_CHECKPOINT_EVERY", "SWARM_RESUME_FROM", "SWARM_ROUND_OFFSET",
)  # fmt: skip
MANIFEST = "manifest.json"
ROUND_DIR = re.compile(r"^round-(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the model."""


def round_dir(root: Path, r: int) -> Path:
    return Path(root) / f"round-{r:06d}"


def save_stage(folder: Path, stage: int, module: torch.nn.Module, info: dict[str, Any], *, lock=None) -> bool:
    """Save `stage` into `folder` unless another peer claimed it; True if we saved it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / f"stage-{stage}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    if lock is not None:
        with lock:
            tensors = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    else:
        tensors = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    tmp = folder / f".stage-{stage}.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"stage": str(stage), "round": str(info.get("round"))})
    tmp.replace(folder / f"stage-{stage}.safetensors")
    meta = {**info, "stage": stage, "file": f"stage-{stage}.safetensors",
            "n_params": int(sum(t.numel() for t in tensors.values())), "saved_at": time.time()}  # fmt: skip
    _write_json(folder / f"stage-{stage}.json", meta)
    return True


def complete_manifest(folder: Path, n_stages: int, common: dict[str, Any]) -> bool:
    """Write manifest.json once every stage of `folder` is saved; True if this call wrote it."""
    stages = []
    for s in range(n_stages):
        meta_path = folder / f"stage-{s}.json"
        if not meta_path.exists():
            return False
        stages.append(json.loads(meta_path.read_text()))
    try:
        os.close(os.open(folder / ".manifest.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    _write_json(folder / MANIFEST, {**common, "n_stages": n_stages, "stages": stages, "complete_at": time.time()})
    return True


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {MANIFEST})")
    return json.loads(path.read_text())


def list_checkpoints(root: Path) -> list[tuple[int, Path, bool]]:
    """(round, folder, complete) of every checkpoint under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = ROUND_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p, (p / MANIFEST).exists()))
    return sorted(found)


def latest_complete(root: Path) -> Path | None:
    complete = [p for _, p, ok in list_checkpoints(root) if ok]
    return complete[-1] if complete else None


def load_stage(folder: Path, stage: int, module: torch.nn.Module) -> None:
    path = Path(folder) / f"stage-{stage}.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        module.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit stage {stage} of this model: {exc}") from None


def load_model(folder: Path) -> tuple[dict[str, Any], list[torch.nn.Module]]:
    """The manifest and every stage's module of a complete checkpoint."""
    from swarm.models import get_workload

    manifest = read_manifest(folder)
    workload = get_workload(manifest["workload"])
    stages = workload.build_stages(manifest["n_stages"], seed=manifest.get("seed", 0))
    for s, module in enumerate(stages):
        load_stage(folder, s, module)
    return manifest, stages


def evaluate(folder: Path) -> float:
    """Test loss of the checkpoint's whole model (the workload's own evaluation code)."""
    from swarm.models import get_workload

    manifest, stages = load_model(folder)
    return float(get_workload(manifest["workload"]).evaluate(stages))


def outer_optimizer_info() -> dict[str, Any]:
    """What the manifest says of the outer optimizer. Its state (nesterov's momentum) lives in the stage peer's
    averager, which round hooks cannot reach: it is not saved, and a resumed nesterov swarm restarts it at zero."""
    kind = os.environ.get("SWARM_OUTER_OPTIMIZER", "sgd")
    note = "sgd with lr 1 is plain averaging: no state" if kind == "sgd" else (
        "momentum not saved (not exposed to round hooks); restarts at zero on resume")
    return {"kind": kind, "state": None, "note": note}


class CheckpointHook:
    """The round hook: restores a resumed stage once, saves a stage every `every` rounds."""

    def __init__(self, root: Path | None, every: int, resume_from: Path | None = None, offset: int = 0) -> None:
        self.root, self.every, self.resume_from, self.offset = root, max(1, every), resume_from, offset
        self.restored: set[tuple[str, int]] = set()

    @classmethod
    def from_env(cls) -> CheckpointHook:
        root = os.environ.get(ENV_DIR)
        resume = os.environ.get(ENV_RESUME)
        return cls(
            Path(root) if root else None, int(os.environ.get(ENV_EVERY, "5")),
            Path(resume) if resume else None, int(os.environ.get(ENV_OFFSET, "0")),
        )  # fmt: skip

    def __call__(self, report) -> None:
        key = (report.experiment.name, report.stage)
        if self.resume_from is not None and key not in self.restored:
            self.restored.add(key)
            with report.params_lock:
                load_stage(self.resume_from, report.stage, report.module)
            logger.info("stage %d: parameters restored from %s", report.stage, self.resume_from)
            return  # this round's parameters were trained from the seed: do not checkpoint them
        if self.root is None:
            return
        r = self.offset + report.round
        if (r + 1) % self.every:
            return
        folder = round_dir(self.root, r)
        exp = report.experiment
        info = {"round": r, "peer_id": report.peer_id, "group_size": report.result.group_size}
        if save_stage(folder, report.stage, report.module, info, lock=report.params_lock):
            logger.info("round %d: saved stage %d to %s", r, report.stage, folder)
        complete_manifest(folder, exp.n_stages, {
            "experiment": exp.name, "workload": exp.workload, "round": r, "round_offset": self.offset,
            "seed": 0, "outer_optimizer": outer_optimizer_info(),
            "chain_experiment_id": exp.chain_experiment_id, "format": "safetensors",
        })  # fmt: skip


_hook: CheckpointHook | None = None


def on_round(report) -> None:
    """`--round-hooks swarm.apps.experiment.checkpoint:on_round` (configured by the SWARM_CHECKPOINT_* env)."""
    global _hook
    if _hook is None:
        _hook = CheckpointHook.from_env()
    _hook(report)
