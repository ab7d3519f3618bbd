"""Checkpoints of the swarm's training state: every N rounds, one peer per stage saves its stage (safetensors + JSON).

A stage's checkpoint is its parameters (`stage-S.safetensors`, what export and evaluation read) and the rest of its
training state (`stage-S.state.safetensors`): the round's anchor (the parameters the stage's group agreed on), the
outer optimizer's momentum (nesterov) and the stage's local optimizer state (Adam's moments and step, SGD's momentum,
bitsandbytes' 8-bit state), with what is not a tensor (anchor round, optimizer kinds, integer steps) in
`stage-S.json`. The saving is a stage peer's round hook (`swarm-peer --round-hooks
swarm.apps.experiment.checkpoint:on_round`), configured by the environment (launch sets it for the stage peers):

- SWARM_CHECKPOINT_DIR: the checkpoint folder; SWARM_CHECKPOINT_EVERY: save after rounds r with (r+1) % N == 0;
- SWARM_ROUND_OFFSET: the round a resumed swarm started from (its rounds are numbered offset + local round);
- SWARM_RESUME_FROM (the stage peer's `resume_from` setting): a stage that no peer serves when the peer joins
  starts from that checkpoint (`restore_stage`) instead of the seed: parameters, anchor, outer momentum and, at the
  peer's first join, the local optimizer's state. A peer that finds the stage served downloads it from a peer.

Which peer saves a stage: the first of the stage's peers to finish the round's averaging in this folder takes the
stage's claim file (O_EXCL), the others skip. After averaging the peers of a stage share the anchor, so any one of
them will do (their local optimizer states differ: the saver's is kept, and every resumed peer of the stage starts
from it). If that peer leaves, the next checkpoint's claim goes to whichever peer of the stage is left; a stage
nobody serves at a checkpoint round leaves that checkpoint incomplete (no manifest.json), and export uses the newest
complete one. A stage averaged with `--no-verify` (hivemind's all-reduce) has no anchor to save: its parameters and
local optimizer state are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from swarm.errors import SwarmError

logger = logging.getLogger("swarm.experiment.checkpoint")

ENV_DIR, ENV_EVERY, ENV_RESUME, ENV_OFFSET = (
    "SWARM_CHECKPOINT_DIR", "SWARM_CHECKPOINT_EVERY", "SWARM_RESUME_FROM", "SWARM_ROUND_OFFSET",
)  # fmt: skip
MANIFEST = "manifest.json"
ROUND_DIR = re.compile(r"^round-(\d{6,})$")


class CheckpointError(SwarmError, ValueError):
    """A checkpoint is missing, incomplete or does not fit the model."""

    exit_code = 2  # swarm-peer: a setting (resume_from) to fix
    summary = "cannot resume: "


def round_dir(root: Path, r: int) -> Path:
    return Path(root) / f"round-{r:06d}"


def save_stage(folder: Path, stage: int, module: torch.nn.Module, info: dict[str, Any], *, lock=None,
               averager: Any = None, optimizer: Any = None) -> bool:
    """Save `stage` into `folder` unless another peer claimed it; True if we saved it.

    With `averager` (its anchor and outer optimizer) and `optimizer` (the stage's local one), their state is saved
    too, taken under `lock` with the parameters (the stage's compute thread steps the optimizer under it)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(folder / f"stage-{stage}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    with lock if lock is not None else contextlib.nullcontext():
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
        state, facts = training_state(averager, optimizer)
    meta = {**info, "stage": stage, "file": f"stage-{stage}.safetensors",
            "n_params": int(sum(t.numel() for t in tensors.values())), "saved_at": time.time()}  # fmt: skip
    if state or facts:
        _save_tensors(folder / f"stage-{stage}{STATE_SUFFIX}", state, stage, info)
        meta["training_state"] = {**facts, "file": f"stage-{stage}{STATE_SUFFIX}", "fingerprint": fingerprint(state)}
    _save_tensors(folder / f"stage-{stage}.safetensors", tensors, stage, info)
    _write_json(folder / f"stage-{stage}.json", meta)
    return True


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], stage: int, info: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"stage": str(stage), "round": str(info.get("round"))})
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ training state

STATE_SUFFIX = ".state.safetensors"


def optimizer_kind(optimizer: Any) -> str:
    """'adam', 'sgd' or 'adam8bit' (swarm.pipeline.memory.make_optimizer's names) of a live optimizer."""
    return type(optimizer).__name__.lower()


def training_state(averager: Any, optimizer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A stage's training state beyond its parameters, as safetensors tensors and JSON facts.

    Tensors: `anchor`, `outer.momentum` (nesterov, once it stepped), `optimizer/<param index>/<key>[/<key>...]`
    (the optimizer's state_dict, nested dicts flattened); facts: the anchor round, the outer optimizer's kind and
    hyperparameters, the local optimizer's kind and the non-tensor values of its state (e.g. bitsandbytes' step)."""
    tensors: dict[str, torch.Tensor] = {}
    facts: dict[str, Any] = {}
    outer = getattr(averager, "outer", None)
    if averager is not None and getattr(averager, "anchor", None) is not None and outer is not None:
        tensors["anchor"] = averager.anchor.detach().cpu().clone().contiguous()
        facts["anchor_round"] = int(averager.anchor_round)
        facts["outer"] = {"kind": outer.name, "lr": outer.lr, "momentum": outer.momentum_factor}
        if outer.momentum is not None:
            tensors["outer.momentum"] = outer.momentum.detach().cpu().clone().contiguous()
    if optimizer is not None:
        scalars: dict[str, Any] = {}
        _flatten(optimizer.state_dict()["state"], "optimizer", tensors, scalars)
        facts["optimizer"] = {"kind": optimizer_kind(optimizer), "scalars": scalars}
    return tensors, facts


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{path}/{k}", tensors, scalars)
    elif torch.is_tensor(value):
        tensors[path] = value.detach().cpu().clone().contiguous()
    else:
        scalars[path] = value


def _unflatten(items: dict[str, Any], prefix: str) -> dict[Any, Any]:
    """The nested dict of `_flatten`'s paths under `prefix` (integer keys back to int: torch's parameter indices)."""
    out: dict[Any, Any] = {}
    for path, v in items.items():
        if not path.startswith(prefix + "/"):
            continue
        *parents, leaf = path[len(prefix) + 1 :].split("/")
        node = out
        for k in parents:
            node = node.setdefault(int(k) if k.isdigit() else k, {})
        node[int(leaf) if leaf.isdigit() else leaf] = v
    return out


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors (names, dtypes, shapes and bytes): equal fingerprints, equal states."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def restore_stage(folder: Path, stage: int, *, module: torch.nn.Module, lock=None, averager: Any = None,
                  optimizer: Any = None, log: logging.Logger = logger) -> dict[str, Any]:
    """Start `stage` from checkpoint `folder`: its parameters, and when the checkpoint holds them its anchor, outer
    momentum and (when `optimizer` is given and is of the saved kind) the local optimizer's state.

    Returns what was restored (recorded in the stage's next checkpoints as `resumed_from`): the fingerprint is read
    back from the live averager and optimizer, so it equals the saved one only if they hold what was saved. An
    older checkpoint without training state restores the parameters, and the anchor becomes them."""
    folder = Path(folder)
    meta_path = folder / f"stage-{stage}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    with lock if lock is not None else contextlib.nullcontext():
        load_stage(folder, stage, module)
        params = torch.cat([p.detach().reshape(-1).float().cpu() for p in module.parameters()])
    facts = meta.get("training_state") or {}
    state = load_file(str(folder / facts["file"])) if facts.get("file") else {}
    restored: dict[str, Any] = {"from": str(folder), "round": meta.get("round"), "parts": ["parameters"]}
    if averager is not None and hasattr(averager, "restore"):
        if "anchor" in state:
            saved_kind = (facts.get("outer") or {}).get("kind")
            if saved_kind not in (None, averager.outer.name):
                log.warning("stage %d: the checkpoint's outer optimizer is %s, this peer's %s: its momentum starts "
                            "at zero", stage, saved_kind, averager.outer.name)
            averager.restore(state["anchor"], state.get("outer.momentum") if saved_kind == averager.outer.name else None)
            restored["parts"] += ["anchor"] + (["outer momentum"] if averager.outer.momentum is not None else [])
        else:
            averager.restore(params)
    if optimizer is not None and "optimizer" in facts:
        kind = facts["optimizer"]["kind"]
        if kind != optimizer_kind(optimizer):
            log.warning("stage %d: the checkpoint's optimizer is %s, this peer's %s: its state starts afresh", stage,
                        kind, optimizer_kind(optimizer))
        else:
            values = {**facts["optimizer"].get("scalars", {}),
                      **{k: v for k, v in state.items() if k.startswith("optimizer/")}}  # fmt: skip
            sd = optimizer.state_dict()
            sd["state"] = _unflatten(values, "optimizer")
            with lock if lock is not None else contextlib.nullcontext():
                try:
                    optimizer.load_state_dict(sd)
                except (ValueError, KeyError, RuntimeError) as exc:
                    raise CheckpointError(f"{folder}: stage {stage}'s optimizer state does not fit: {exc}") from None
            restored["parts"].append(f"{kind} state")
    live, _ = training_state(averager if hasattr(averager, "restore") else None, optimizer)
    restored["fingerprint"] = fingerprint(live)
    RESTORED[stage] = restored
    log.info("stage %d: resumed from %s (round %s): %s", stage, folder, meta.get("round"), ", ".join(restored["parts"]))
    return restored


RESTORED: dict[int, dict[str, Any]] = {}  # stage -> what restore_stage restored in this process


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
    """What the manifest says of the outer optimizer (its state is in each stage's state file)."""
    kind = os.environ.get("SWARM_OUTER_OPTIMIZER", "sgd")
    note = "sgd with lr 1 is plain averaging: no state" if kind == "sgd" else (
        "momentum saved per stage as outer.momentum in stage-S.state.safetensors")
    return {"kind": kind, "state": None if kind == "sgd" else "outer.momentum", "note": note}


class CheckpointHook:
    """The round hook: saves a stage's training state every `every` rounds (rounds numbered from `offset`)."""

    def __init__(self, root: Path | None, every: int, offset: int = 0) -> None:
        self.root, self.every, self.offset = root, max(1, every), offset

    @classmethod
    def from_env(cls) -> CheckpointHook:
        root = os.environ.get(ENV_DIR)
        return cls(Path(root) if root else None, int(os.environ.get(ENV_EVERY, "5")),
                   int(os.environ.get(ENV_OFFSET, "0")))  # fmt: skip

    def __call__(self, report) -> None:
        if self.root is None:
            return
        r = self.offset + report.round
        if (r + 1) % self.every:
            return
        folder = round_dir(self.root, r)
        exp = report.experiment
        info: dict[str, Any] = {"round": r, "peer_id": report.peer_id, "group_size": report.result.group_size}
        if report.stage in RESTORED:
            info["resumed_from"] = RESTORED[report.stage]
        saved = save_stage(folder, report.stage, report.module, info, lock=report.params_lock,
                           averager=getattr(report, "averager", None), optimizer=getattr(report, "optimizer", None))
        if saved:
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
