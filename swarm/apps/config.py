"""A peer's configuration, validated once at the edge: command-line flags > env SWARM_* > profile file > defaults.

Profiles are TOML files (see peers/); the wallet key is never a flag: it comes from a 0600 file or SWARM_WALLET_KEY.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from swarm.errors import SwarmError
from swarm.rounds.alignment import DEFAULT_MIN_ALIGNMENT
from swarm.rounds.attacks import PeerAttack, attacks_help

Role = Literal["bootstrap", "stage", "trainer"]


class ConfigError(SwarmError, ValueError):
    """The peer's configuration is invalid; the message says which setting and how to fix it."""

    exit_code = 2


class PeerConfig(BaseSettings):
    """Everything a peer needs to know; each field is also env SWARM_<NAME> and a key of a profile file."""

    model_config = SettingsConfigDict(env_prefix="SWARM_", extra="forbid", validate_default=True)

    role: Role = Field("stage", description="bootstrap: only helps others find the swarm; stage: serves a "
                       "pipeline stage and averages it every round; trainer: pushes batches through the stages")
    join: bool = Field(False, description="join an existing swarm through initial_peers (required for stage "
                       "and trainer peers)")
    initial_peers: Annotated[list[str], NoDecode] = Field(default_factory=list, description="multiaddrs of peers already in the "
                                     "swarm, e.g. /ip4/1.2.3.4/tcp/31337/p2p/Qm...")
    host: str = Field("0.0.0.0", description="address to listen on (127.0.0.1: this machine only)")
    port: int = Field(0, ge=0, le=65535, description="TCP port to listen on (0: any free port)")
    experiment: str = Field("swarm", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="name of the run to join")
    workload: str = Field("digits", description="model and data, one of swarm.models.WORKLOADS: digits, tinylm "
                          "(bootstrap publishes it)")
    n_stages: int = Field(2, ge=1, le=64, description="pipeline stages the model is cut into (bootstrap)")
    round_duration: float = Field(10.0, gt=0, le=3600, description="seconds per averaging round (bootstrap)")
    stage: int | None = Field(None, ge=0, description="serve this stage instead of choosing one")
    lr: float = Field(1e-3, gt=0, description="learning rate of the stage's local optimizer")
    seed: int = Field(0, ge=0, lt=1 << 63, description="bootstrap: seed of the initial parameters, published in the "
                      "experiment record so every peer starts an empty stage alike; trainer: mixed into its data order")
    compression: Literal["int8", "none"] = Field("int8", description="what averaging puts on the wire")
    batch_size: int = Field(32, ge=1, le=65536, description="trainer: samples per micro-batch")
    concurrency: int = Field(1, ge=1, le=64, description="trainer: micro-batches in flight at once")
    steps: int | None = Field(None, ge=1, description="trainer: leave after this many micro-batches")
    duration: float | None = Field(None, gt=0, description="leave after this many seconds (a trainer: of "
                                   "training; default: run until Ctrl-C)")
    rebalance: bool = Field(True, description="stage: move to a slower stage when the balance shifts")
    verify: bool = Field(True, description="stage: verified rounds: peers average only the updates they committed "
                         "to, each part checked before it enters the sum; off (--no-verify): hivemind's unchecked "
                         "all-reduce of the parameters, the benchmarks' baseline")
    outer_optimizer: Literal["sgd", "nesterov"] = Field("sgd", description="stage: how the group's averaged update "
                                                        "moves the shared anchor: sgd (lr 1, plain averaging) or "
                                                        "nesterov (DiLoCo's outer momentum: lr 0.7, momentum 0.9)")
    aggregation: Literal["mean", "centered_clip"] = Field("mean", description="stage: mean of the verified updates, "
                                                         "or CenteredClip (BTARD), robust to a bounded minority")
    norm_bound: float | None = Field(None, gt=0, description="stage: drop an update whose L2 norm is above this "
                                     "(always: above 10x the group's median norm)")
    min_alignment: float = Field(DEFAULT_MIN_ALIGNMENT, ge=0, le=1e6, description="stage: in a verified round of 3 "
                                 "or more kept peers, drop an update whose cosine with the sum of the others' is below "
                                 "this many 1/sqrt(d) (d: the stage's parameters; a random update's spread), so a "
                                 "free rider's random update is neither averaged nor certified (paid); 0: off. Every "
                                 "peer of a stage must use the same value (docs/protocol.md)")
    byzantine: bool = Field(False, description="stage, tests and experiments only: cheat every round as --attack says")
    attack: PeerAttack = Field("poison", description=f"with --byzantine: {attacks_help()}")
    device: str = Field("cpu", description="stage: where the stage computes: cpu, cuda, cuda:N (the N-th GPU) or "
                        "auto (the GPU if torch sees one, else the CPU)")
    optimizer: Literal["adam", "adam8bit", "sgd"] = Field("adam", description="stage: the stage's local optimizer "
                                                          "(adam8bit: bitsandbytes' 8-bit Adam, ~4x less state)")
    memory_limit: float | None = Field(None, gt=0, le=1 << 20, description="stage: GiB of the device's memory this "
                                       "peer may use (default: what is free); the memory preflight sizes the "
                                       "micro-batches it accepts to it and refuses a stage that does not fit")
    relay: Literal["auto", "serve", "off"] = Field("auto", description="libp2p circuit relay: auto (a bootstrap "
                                                   "relays for peers behind a NAT; a stage peer behind a NAT serves "
                                                   "through its initial peer's relay), serve (this peer relays too: "
                                                   "give it to reachable stage peers), off (neither)")
    matchmaking_time: float | None = Field(None, gt=0, le=600, description="stage with --no-verify: seconds "
                                           "hivemind's matchmaking gathers a group each round (default: 3 s)")
    identity_path: Path | None = Field(None, description="file holding this peer's libp2p key (created, mode 0600, "
                                       "on first use), so its /p2p/ address survives restarts (for a bootstrap peer)")
    prover_workers: int = Field(1, ge=1, le=64, description="paid stage: processes proving in parallel (one core each)")
    prover_backend: Literal["zokrates", "groth16py"] = Field("groth16py", description="paid stage: the Groth16 "
                                                            "prover (groth16py: native arkworks, ~4x fewer CPU-seconds "
                                                            "per proof, with zokrates-js's dev keys, those of the "
                                                            "committed verifiers, or --prover-key-dir's; zokrates: "
                                                            "the WASM fallback)")
    prover_key_dir: Path | None = Field(None, description="paid stage: the folder of the circuit keys the experiment's "
                                        "verifier was made from (groth16py; e.g. a ceremony's output)")
    strict_proofs: bool = Field(False, description="paid stage: prove every chunk of every update, not only the "
                                "contributed and audited ones (at low priority; each round's tally is logged)")
    wallet_key_file: Path | None = Field(None, description="file (mode 0600) holding the L2 wallet's private key")
    data_dir: Path | None = Field(None, description="paid stage: where the peer keeps what must outlive a crash (its "
                                  "settlement journal, data_dir/settlement/; docs/protocol.md); default ~/.swarm")
    wallet_key: SecretStr | None = Field(None, description="the L2 wallet's private key: env SWARM_WALLET_KEY "
                                         "only, never a flag or a profile")
    chain_rpc: str | None = Field(None, pattern=r"^(https?|wss?)://", description="L2 RPC URL; with a wallet and "
                                  "an escrow, a stage peer proves and contributes every round and claims rewards")
    escrow: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$", description="address of the SwarmEscrow "
                               "contract on that L2")
    chain_experiment: int | None = Field(None, ge=0, description="bootstrap: the escrow's experiment id; the round "
                                         "clock is then read from the chain so peers and contract agree")
    resume_from: Path | None = Field(None, description="stage: a complete checkpoint folder (.../round-000009, "
                                     "written by swarm-experiment's checkpoint hook); a stage that no peer serves "
                                     "when this peer joins starts from it (parameters, anchor, outer momentum, "
                                     "local optimizer state) instead of the seed")
    round_hooks: Annotated[list[str], NoDecode] = Field(default_factory=list, description="'module:function' called after each "
                                   "averaging round of a stage peer with its RoundReport")
    events: bool = Field(False, description="write one JSON line per event on stdout (for swarm-demo)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="how much the peer logs "
                                                                    "on stderr")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ProfileSource(settings_cls)

    @field_validator("initial_peers", "round_hooks", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        if isinstance(v, str):  # SWARM_INITIAL_PEERS="a b" or "a,b"
            return [p for p in v.replace(",", " ").split() if p]
        return v

    @field_validator("initial_peers")
    @classmethod
    def _check_multiaddrs(cls, peers: list[str]) -> list[str]:
        for p in peers:
            if not p.startswith("/") or "/p2p/" not in p:
                raise ValueError(
                    f"{p!r} is not a peer multiaddr; expected something like /ip4/1.2.3.4/tcp/31337/p2p/Qm... "
                    "(a running peer prints its own)"
                )
        return peers

    @field_validator("workload")
    @classmethod
    def _known_workload(cls, name: str) -> str:
        from swarm.models import WORKLOADS  # the one list of workloads

        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}: choose one of {', '.join(sorted(WORKLOADS))}")
        return name

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", device):
            raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N (N: the GPU's index)")
        return device

    @field_validator("resume_from")
    @classmethod
    def _complete_checkpoint(cls, folder: Path | None) -> Path | None:
        if folder is not None and not (folder / "manifest.json").is_file():
            raise ValueError(f"{folder} is not a complete checkpoint (no manifest.json in it); complete ones are "
                             "the round-NNNNNN folders with a manifest.json under the experiment's checkpoint folder")
        return folder

    @field_validator("round_hooks")
    @classmethod
    def _check_hooks(cls, hooks: list[str]) -> list[str]:
        for h in hooks:
            module, _, func = h.partition(":")
            if not module or not func:
                raise ValueError(f"round hook {h!r} must be 'package.module:function'")
        return hooks

    @model_validator(mode="after")
    def _check_role(self) -> PeerConfig:
        if self.role in ("stage", "trainer") and not self.initial_peers:
            raise ValueError(
                f"a {self.role} peer joins an existing swarm: give --join --initial-peers <multiaddr> "
                "(start one with `swarm-peer --role bootstrap`)"
            )
        if self.join and not self.initial_peers:
            raise ValueError("--join needs --initial-peers <multiaddr> of a peer already in the swarm")
        if self.stage is not None and self.stage >= self.n_stages and self.role == "bootstrap":
            raise ValueError(f"stage {self.stage} does not exist with n_stages={self.n_stages}")
        if (self.chain_rpc is None) != (self.escrow is None):
            raise ValueError("--chain-rpc and --escrow go together: the RPC URL of the L2 and the escrow's address")
        if self.wallet_key_file is not None and self.wallet_key is not None:
            raise ValueError("give the wallet key either as --wallet-key-file or as SWARM_WALLET_KEY, not both")
        return self


_profile: ContextVar[Mapping[str, Any] | None] = ContextVar("swarm_profile", default=None)


class _ProfileSource(PydanticBaseSettingsSource):
    """Values of the profile file being loaded (lowest priority after the defaults)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_profile.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_profile.get() or {})


def read_profile(path: Path) -> dict[str, Any]:
    """A profile: a TOML file of PeerConfig keys (a [peer] table or top-level keys); never a wallet key."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"profile {path} does not exist (ready ones are in peers/)") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from exc
    values = data.get("peer", data)
    if not isinstance(values, dict):
        raise ConfigError(f"profile {path}: [peer] must be a table of settings")
    if "wallet_key" in values:
        raise ConfigError(f"profile {path} holds a wallet key: keep keys out of profiles (use wallet_key_file)")
    return dict(values)


def load_config(flags: Mapping[str, Any] | None = None, profile: Path | None = None) -> PeerConfig:
    """Merge flags > env SWARM_* > profile > defaults into a validated PeerConfig, or raise ConfigError."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    if "wallet_key" in flags:
        raise ConfigError("the wallet key is never passed as a flag (argv is visible to every user of the machine)")
    token = _profile.set(read_profile(profile) if profile is not None else None)
    try:
        return PeerConfig(**flags)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, profile)) from None
    finally:
        _profile.reset(token)


def describe_validation_error(exc: ValidationError, profile: Path | None = None) -> str:
    """One line per problem, naming the setting as a volunteer would write it (--flag / SWARM_NAME)."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err.get("loc") or ()
        msg = err["msg"].removeprefix("Value error, ")
        if loc and isinstance(loc[0], str):
            name = loc[0]
            where = f"--{name.replace('_', '-')} / SWARM_{name.upper()}" + (f" / {profile}" if profile else "")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            lines.append(f"{where}: {msg}")
        else:
            lines.append(msg)
    return "invalid configuration: " + "; ".join(lines)
