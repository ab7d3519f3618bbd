"""An experiment declared in one TOML file (see experiments/experiment.toml), validated once at the edge.

A wrong value is reported as `[section] field: what is wrong (allowed: ...; got ...)`, one line per problem.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TOKEN = 10**18  # the escrow's token has 18 decimals; the file speaks in whole tokens


class ExperimentConfigError(ValueError):
    """The experiment file is missing, not TOML, or holds a wrong value; the message names the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(_Section):
    """[experiment]: what is trained and on which clock."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                      description="name of the run on the DHT: 1-64 letters, digits, '_' or '-'")
    workload: Literal["digits", "tinylm"] = Field("digits", description="model and data: digits (MLP on "
                                                  "scikit-learn's digits) or tinylm (byte-level transformer)")
    n_stages: int = Field(2, ge=1, le=16, description="pipeline stages the model is cut into")
    round_duration: int = Field(10, ge=2, le=3600, description="seconds per averaging round (whole seconds: "
                                "the escrow counts rounds in block time)")
    lr: float = Field(1e-3, gt=0, le=1.0, description="learning rate of each stage's local optimizer (Adam)")
    lr_schedule: Literal["constant"] = Field("constant", description="learning-rate schedule; stage peers "
                                             "implement only 'constant' today")
    outer_optimizer: Literal["sgd", "nesterov"] = Field("sgd", description="how a round's averaged update moves "
                                                        "the stage: sgd (lr 1: plain averaging) or nesterov "
                                                        "(DiLoCo's outer momentum)")
    aggregation: Literal["mean", "centered_clip"] = Field("mean", description="mean of the verified updates, or "
                                                          "CenteredClip (robust to a bounded minority)")
    batch_size: int = Field(32, ge=1, le=65536, description="samples per micro-batch of the trainers "
                            "started by launch")
    seed: int = Field(0, ge=0, description="seed of the initial parameters (the same on every peer)")


class EconomySection(_Section):
    """[economy]: the escrow that pays for proven contributions."""

    chain: Literal["embedded", "rpc", "none"] = Field("embedded", description="embedded: start anvil here and "
                                                      "deploy everything; rpc: the L2 of --chain-rpc with "
                                                      "--key-file; none: train without rewards")
    escrow: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$", description="rpc only: an escrow already "
                               "deployed (default: deploy verifier, token and escrow)")
    verifier_address: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$", description="with escrow: "
                                         "the verifier contract (one that escrow allows) the experiment uses")
    reward_per_round: float = Field(10.0, ge=0, le=1e9, description="tokens shared by a round's contributors")
    pool: float = Field(10_000.0, gt=0, le=1e12, description="tokens put in escrow for the experiment")
    norm_bound: int = Field(1 << 100, gt=0, lt=1 << 128, description="largest ‖Δ‖² (fixed point) a proof may "
                            "claim")
    audits_per_peer: int = Field(2, ge=1, le=8, description="chunks anyone may ask a contributor to prove later")
    chunk_size: int = Field(1024, ge=16, le=1 << 20, description="parameters per proven chunk (must match the "
                            "circuit's keys: 1024 for the default circuit)")
    submit_window: int | None = Field(None, ge=1, le=86_400, description="seconds after a round for its proofs "
                                      "to arrive (default: the deployer's, above the escrow's floor)")
    audit_window: int | None = Field(None, ge=1, le=86_400, description="seconds after submission for audits "
                                     "(default: the deployer's; the escrow refuses one too short for k proofs)")
    num_rounds: int = Field(1000, ge=1, le=1 << 40, description="rounds the experiment pays for")
    require_certificate: bool = Field(False, description="pay only contributions their stage's group certified as "
                                      "averaged (docs/protocol.md, 'Certified participation'): free riders earn 0")
    verifier: Literal["auto", "FastChunkVerifier", "ChunkVerifier", "StandInChunkVerifier"] = Field(
        "auto", description="proof verifier contract to deploy (auto: the fastest one built)")

    @model_validator(mode="after")
    def _rpc_only(self) -> EconomySection:
        if self.escrow is not None and self.chain != "rpc":
            raise ValueError("escrow: only with chain = 'rpc' (the embedded chain deploys its own)")
        if self.pool < self.reward_per_round:
            raise ValueError(f"pool: must hold at least one round's reward (>= {self.reward_per_round}; "
                             f"got {self.pool})")
        return self


class CheckpointSection(_Section):
    """[checkpoints]: the model saved every N rounds by a peer of each stage."""

    every_rounds: int = Field(5, ge=1, le=100_000, description="save all stages every this many rounds")
    dir: Path = Field(Path("checkpoints"), description="where (relative paths: inside the state directory)")
    resume_from: Path | None = Field(None, description="a checkpoint folder (…/round-000009) to start from")


class MonitorSection(_Section):
    """[monitor]: the read-only monitor and its web dashboard."""

    host: str = Field("127.0.0.1", description="address the dashboard listens on (loopback by default)")
    port: int = Field(0, ge=0, le=65535, description="dashboard port (0: any free port)")
    poll_seconds: float = Field(2.0, ge=0.2, le=60, description="how often the monitor reads DHT and chain")


class LocalSection(_Section):
    """[local]: peers launch starts on this machine too (volunteers join with the printed command)."""

    stage_peers: int = Field(0, ge=0, le=32, description="stage peers started here (paid when a chain is used)")
    trainers: int = Field(0, ge=0, le=32, description="trainer peers started here")
    host: str = Field("127.0.0.1", description="address the bootstrap and local peers listen on")


class ExperimentConfig(_Section):
    experiment: RunSection = RunSection()
    economy: EconomySection = EconomySection()
    checkpoints: CheckpointSection = CheckpointSection()
    monitor: MonitorSection = MonitorSection()
    local: LocalSection = LocalSection()

    @model_validator(mode="after")
    def _enough_local_peers(self) -> ExperimentConfig:
        n, k = self.experiment.n_stages, self.local.stage_peers
        if 0 < k < n:
            raise ValueError(f"local.stage_peers: {k} peers cannot serve {n} stages (allowed: 0 or >= {n})")
        return self

    def reward_wei(self) -> int:
        return round(self.economy.reward_per_round * TOKEN)

    def pool_wei(self) -> int:
        return round(self.economy.pool * TOKEN)


def _describe(err: dict[str, Any]) -> str:
    loc = [str(x) for x in err.get("loc", ())]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and ":" in msg.split(" ", 1)[0]:
        head = f"[{loc[0]}] " if loc else ""
        return head + msg  # our own validators already name the field
    where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else (f"[{loc[0]}]" if loc else "file")
    if err["type"] == "extra_forbidden":
        known = ", ".join(ExperimentConfig.model_fields) if len(loc) == 1 else _known(loc[0])
        return f"{where}: unknown {'section' if len(loc) == 1 else 'field'} (allowed: {known})"
    allowed = []
    field = _field_of(loc)
    for m in field.metadata if field is not None else ():
        for key, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(m, key, None) is not None:
                allowed.append(f"{sign} {getattr(m, key)}")
    got = f"; got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    rng = f" (allowed: {' and '.join(allowed)}{got})" if allowed else (f" ({got[2:]})" if got else "")
    desc = f" — {field.description}" if field is not None and field.description else ""
    return f"{where}: {msg}{rng}{desc}"


def _known(section: str) -> str:
    info = ExperimentConfig.model_fields.get(section)
    return ", ".join(getattr(info.annotation, "model_fields", {})) if info is not None else ""


def _field_of(loc: list[str]):
    if len(loc) < 2 or loc[0] not in ExperimentConfig.model_fields:
        return None
    section = ExperimentConfig.model_fields[loc[0]].annotation
    return getattr(section, "model_fields", {}).get(loc[1])


def parse_config(data: dict[str, Any], source: str = "experiment file") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors(include_url=False)]
        raise ExperimentConfigError(f"{source}: " + "; ".join(lines)) from None


def load_config(path: Path) -> ExperimentConfig:
    """Read and validate `path`; raises ExperimentConfigError naming the file and every wrong field."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ExperimentConfigError(f"{path}: no such file (an example is experiments/experiment.toml)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ExperimentConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def describe_fields() -> str:
    """Every field of the file with its default and meaning (for --help and the docs)."""
    lines = []
    for section, info in ExperimentConfig.model_fields.items():
        lines.append(f"[{section}]")
        for name, f in info.annotation.model_fields.items():
            default = f.default if f.default is not None else "unset"
            lines.append(f"  {name} = {default!r}: {f.description}")
    return "\n".join(lines)
