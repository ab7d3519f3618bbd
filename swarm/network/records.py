"""Typed, signed DHT records of an experiment: which peer serves which stage, and the experiment's own settings.

Every record lives under a subkey that carries its writer's RSA public key, so only that peer can change it; its
value must match a schema (hivemind's SchemaValidator, installed per experiment on first use). Readers re-check
every entry and drop what is malformed, so a bad record costs a log line, never a crash.
"""

from __future__ import annotations

import logging
import math
import re
import weakref
from collections import Counter
from typing import Any, Optional

import hivemind
import pydantic.v1 as pv1
from hivemind.dht.schema import BytesWithPublicKey, SchemaValidator
from hivemind.p2p import PeerID
from hivemind.utils import get_dht_time
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swarm.errors import RecordError
from swarm.network.dht import initial_peer_ids, owner_subkey, peer_id_of_owner

logger = logging.getLogger(__name__)

EXPERIMENT_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # as PeerConfig.experiment
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
MAX_STAGES = 1 << 16
DEFAULT_EXPERIMENT_TTL = 600.0


class StageAnnouncement(BaseModel):
    """One peer's claim to serve one stage, re-stored every few seconds (it expires when the peer goes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peer_id: str = Field(min_length=1, max_length=128, description="hivemind PeerID, base58")
    stage: int = Field(ge=0, lt=MAX_STAGES)
    throughput: float = Field(ge=0.0, allow_inf_nan=False, description="samples/s this peer processes")
    load: int = Field(ge=0, description="micro-batches in flight")
    params_version: int = Field(ge=0, description="round of the parameters it serves")
    wallet: str | None = Field(default=None, pattern=ADDRESS, description="L2 address for rewards")
    max_batch: int | None = Field(default=None, ge=1, description="largest micro-batch (samples) its memory "
                                  "preflight allows; None: no cap")

    @field_validator("peer_id")
    @classmethod
    def _valid_peer_id(cls, v: str) -> str:
        try:
            PeerID.from_base58(v)
        except Exception as exc:
            raise ValueError(f"not a base58 peer id: {v!r}") from exc
        return v

    def to_wire(self) -> dict[str, Any]:
        d = self.model_dump()
        d["throughput"] = float(d["throughput"])
        return d


class ExperimentRecord(BaseModel):
    """What every peer of an experiment must agree on: workload, stage count, round clock, chain experiment, and
    the seed of the initial parameters (so that peers starting an empty stage start it alike)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=EXPERIMENT_NAME)
    workload: str = Field(min_length=1, max_length=64)
    n_stages: int = Field(ge=1, lt=MAX_STAGES)
    round_duration: float = Field(gt=0.0, allow_inf_nan=False, description="seconds per round")
    start_time: float = Field(ge=0.0, allow_inf_nan=False, description="DHT time (unix seconds) of round 0")
    chain_experiment_id: int | None = Field(default=None, ge=0, lt=1 << 64)
    seed: int = Field(default=0, ge=0, lt=1 << 63, description="seed of every stage's initial parameters")

    def to_wire(self) -> dict[str, Any]:
        d = self.model_dump()
        d["round_duration"], d["start_time"] = float(d["round_duration"]), float(d["start_time"])
        return d


class TrainerReport(BaseModel):
    """A trainer's progress, re-stored every few seconds, so anyone (the experiment's monitor) sees the swarm's loss."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peer_id: str = Field(min_length=1, max_length=128, description="hivemind PeerID, base58")
    steps: int = Field(ge=0, description="micro-batches trained so far")
    samples: int = Field(ge=0, description="samples trained so far")
    loss: float = Field(ge=0.0, allow_inf_nan=False, description="training loss, averaged over its recent steps")
    time: float = Field(ge=0.0, allow_inf_nan=False, description="wall-clock time of the report (unix seconds)")

    def to_wire(self) -> dict[str, Any]:
        d = self.model_dump()
        d["loss"], d["time"] = float(d["loss"]), float(d["time"])
        return d


# The same records as hivemind's SchemaValidator wants them (pydantic v1, strict types: no silent conversions).
class _StageWire(pv1.BaseModel):
    peer_id: pv1.StrictStr
    stage: pv1.conint(strict=True, ge=0, lt=MAX_STAGES)
    throughput: pv1.confloat(strict=True, ge=0.0)
    load: pv1.conint(strict=True, ge=0)
    params_version: pv1.conint(strict=True, ge=0)
    wallet: Optional[pv1.constr(strict=True, regex=ADDRESS)]  # noqa: UP045 - pydantic v1 needs Optional
    max_batch: Optional[pv1.conint(strict=True, ge=1)]  # noqa: UP045 - None: no memory cap

    class Config:
        extra = pv1.Extra.forbid


class _ExperimentWire(pv1.BaseModel):
    name: pv1.constr(strict=True, regex=EXPERIMENT_NAME)
    workload: pv1.constr(strict=True, min_length=1, max_length=64)
    n_stages: pv1.conint(strict=True, ge=1, lt=MAX_STAGES)
    round_duration: pv1.confloat(strict=True, gt=0.0)
    start_time: pv1.confloat(strict=True, ge=0.0)
    chain_experiment_id: Optional[pv1.conint(strict=True, ge=0, lt=1 << 64)]  # noqa: UP045
    seed: pv1.conint(strict=True, ge=0, lt=1 << 63)

    class Config:
        extra = pv1.Extra.forbid


class _TrainerWire(pv1.BaseModel):
    peer_id: pv1.StrictStr
    steps: pv1.conint(strict=True, ge=0)
    samples: pv1.conint(strict=True, ge=0)
    loss: pv1.confloat(strict=True, ge=0.0)
    time: pv1.confloat(strict=True, ge=0.0)

    class Config:
        extra = pv1.Extra.forbid


class ExperimentSchema(pv1.BaseModel):
    """The DHT keys of one experiment (prefixed '<experiment>_'): each subkey is a writer's signed public key."""

    stages: dict[BytesWithPublicKey, _StageWire]
    experiment: dict[BytesWithPublicKey, _ExperimentWire]
    trainers: dict[BytesWithPublicKey, _TrainerWire]


def trainers_key(experiment: str) -> str:
    return f"{experiment}_trainers"


def publish_trainer_report(dht: hivemind.DHT, experiment: str, report: TrainerReport, ttl: float = 30.0) -> None:
    """Store this trainer's report for `ttl` seconds without waiting for the DHT (it is called from training)."""
    install_record_schemas(dht, experiment)
    dht.store(trainers_key(experiment), report.to_wire(), get_dht_time() + ttl, subkey=owner_subkey(dht),
              return_future=True)  # fmt: skip


def fetch_trainer_reports(dht: hivemind.DHT, experiment: str) -> list[TrainerReport]:
    """Unexpired reports of the experiment's trainers (one per trainer, written by that trainer), by peer id."""
    reports = [r for w, r in _fetch_entries(dht, experiment, trainers_key(experiment), TrainerReport)
               if r.peer_id == w]  # fmt: skip
    return sorted(reports, key=lambda r: r.peer_id)


def stages_key(experiment: str) -> str:
    return f"{experiment}_stages"


def experiment_key(experiment: str) -> str:
    return f"{experiment}_experiment"


_installed: weakref.WeakKeyDictionary[hivemind.DHT, set[str]] = weakref.WeakKeyDictionary()


def install_record_schemas(dht: hivemind.DHT, experiment: str) -> None:
    """Make `dht` reject (on store and on lookup) records of `experiment` that do not match the schemas."""
    _check_name(experiment)
    done = _installed.setdefault(dht, set())
    if experiment not in done:
        dht.add_validators([SchemaValidator(ExperimentSchema, allow_extra_keys=True, prefix=experiment)])
        done.add(experiment)


def _check_name(experiment: str) -> None:
    if not isinstance(experiment, str) or not re.fullmatch(EXPERIMENT_NAME, experiment):
        raise RecordError(
            f"experiment name {experiment!r} is not allowed: use 1-64 letters, digits, '_' or '-'"
        )


def announce_stage(dht: hivemind.DHT, experiment: str, ann: StageAnnouncement, ttl: float = 30.0) -> bool:
    """Store (or refresh) this peer's stage announcement for `ttl` seconds; True if some DHT node stored it."""
    install_record_schemas(dht, experiment)
    return bool(
        dht.store(stages_key(experiment), ann.to_wire(), get_dht_time() + ttl, subkey=owner_subkey(dht))
    )


def fetch_stage_announcements(dht: hivemind.DHT, experiment: str) -> dict[int, list[StageAnnouncement]]:
    """Unexpired announcements of `experiment` by stage. Malformed ones, and ones naming a peer id other than their
    writer's (a DHT from `create_dht` signs with the key of its peer id), are dropped with a log line."""
    by_stage: dict[int, list[StageAnnouncement]] = {}
    for writer, ann in _fetch_entries(dht, experiment, stages_key(experiment), StageAnnouncement):
        if ann.peer_id != writer:
            logger.info(
                "dropping a stage record that names peer %s but was written by %s", ann.peer_id, writer
            )
            continue
        by_stage.setdefault(ann.stage, []).append(ann)
    for anns in by_stage.values():
        anns.sort(key=lambda a: a.peer_id)
    return by_stage


def publish_experiment(
    dht: hivemind.DHT, record: ExperimentRecord, ttl: float = DEFAULT_EXPERIMENT_TTL
) -> bool:
    """Store the experiment's record under this peer's signed subkey (re-publish before `ttl` runs out)."""
    install_record_schemas(dht, record.name)
    return bool(
        dht.store(
            experiment_key(record.name), record.to_wire(), get_dht_time() + ttl, subkey=owner_subkey(dht)
        )
    )


def fetch_experiment(dht: hivemind.DHT, experiment: str) -> ExperimentRecord | None:
    """The experiment's record, or None if nobody published it.

    A joiner believes the record its initial peers published, if any did; otherwise (or if those disagree) the
    version most publishers agree on wins, ties to the earliest start time, with a warning.
    """
    entries = [(w, r) for w, r in _fetch_entries(dht, experiment, experiment_key(experiment), ExperimentRecord)
               if r.name == experiment]  # fmt: skip
    trusted = initial_peer_ids(dht)
    records = [r for w, r in entries if w in trusted] or [r for _, r in entries]
    if not records:
        return None
    votes = Counter(records)
    if len(votes) > 1:
        logger.warning("experiment %r: %d publishers disagree on its record; taking the majority", experiment,
                       len(records))  # fmt: skip
    return min(votes, key=lambda r: (-votes[r], r.start_time))


def _fetch_entries(
    dht: hivemind.DHT, experiment: str, key: str, model: type[BaseModel]
) -> list[tuple[str, Any]]:
    """(writer's peer id, parsed value) of every unexpired, well-formed entry under a signed subkey of `key`."""
    install_record_schemas(dht, experiment)
    found = dht.get(key, latest=True)
    if found is None:
        return []
    if not isinstance(found.value, dict):
        logger.warning("DHT key %r holds a plain value, not per-peer records; ignoring it", key)
        return []
    now = get_dht_time()
    out = []
    for subkey, item in found.value.items():
        writer = peer_id_of_owner(subkey)
        if writer is None:
            logger.info(
                "dropping a %s record under %s: not a signed per-peer subkey", model.__name__, _short(subkey)
            )
            continue
        try:
            value, expiration = item.value, item.expiration_time
            if not math.isfinite(expiration) or expiration < now:
                continue
            out.append((writer, model.model_validate(value)))
        except (ValidationError, AttributeError, TypeError) as exc:
            logger.info("dropping a malformed %s record under %s: %s", model.__name__, _short(subkey), exc)
    return out


def _short(subkey: object) -> str:
    text = repr(subkey)
    return text if len(text) <= 40 else f"{text[:18]}...{text[-18:]}"
