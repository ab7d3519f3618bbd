"""Typed records of the escrow's configuration and state, as the chain client reads and writes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ExperimentSpec(BaseModel):
    """What a researcher declares for an experiment (mirrors ISwarmEscrow.ExperimentParams)."""

    model_config = ConfigDict(frozen=True)

    verifier: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    start: int = Field(ge=0, lt=1 << 64)
    round_duration: int = Field(gt=0, lt=1 << 32)
    submit_window: int = Field(ge=0, lt=1 << 32)
    audit_window: int = Field(ge=0, lt=1 << 32)
    audits_per_peer: int = Field(ge=0, le=16)
    num_rounds: int = Field(gt=0, lt=1 << 48)
    chunk_size: int = Field(gt=0, lt=1 << 32)
    reward_per_round: int = Field(ge=0, lt=1 << 128)
    norm_bound: int = Field(ge=0, lt=1 << 128)
    min_norm_log2: int = Field(default=0, ge=0, lt=128)  # normSq >= 2**min_norm_log2: a zero update is refused
    stage_params: list[int] = Field(min_length=1, max_length=(1 << 16) - 1)
    # pay only records their (round, stage) group certified as averaged (SwarmCertifier.certify)
    require_certificate: bool = False

    def abi_tuple(self) -> tuple:
        return (
            self.verifier, self.start, self.round_duration, self.submit_window, self.audit_window,
            self.audits_per_peer, self.num_rounds, self.chunk_size, self.reward_per_round, self.norm_bound,
            self.min_norm_log2, list(self.stage_params), self.require_certificate,
        )  # fmt: skip


class VerifierShape(BaseModel):
    """A verifier the escrow accepts (pinned by runtime code hash) and its circuit's shape (ISwarmEscrow)."""

    model_config = ConfigDict(frozen=True)

    code_hash: bytes = Field(min_length=32, max_length=32)
    chunk: int = Field(gt=0, lt=1 << 32)
    depth: int = Field(gt=0, le=24)
    proof_seconds: int = Field(gt=0, lt=1 << 32)
    batch: bool = False  # the verifier also has verifyBatch (zk/batch_verifier.py): contributeBatch uses it

    def abi_tuple(self) -> tuple:
        return (self.code_hash, self.chunk, self.depth, self.proof_seconds, self.batch)


class ExperimentState(BaseModel):
    """An experiment as stored on-chain."""

    funder: str
    start: int
    round_duration: int
    verifier: str
    submit_window: int
    audit_window: int
    audits_per_peer: int
    num_stages: int
    reward_per_round: int
    pool: int
    norm_bound: int
    num_rounds: int
    min_norm_log2: int
    pending_rounds: int
    require_certificate: bool = False  # only certified records are paid

    def round_at(self, timestamp: int) -> int:
        """round(t) = (t - start) // round_duration (docs/protocol.md); 0 before the start."""
        return max(0, timestamp - self.start) // self.round_duration

    def submission_end(self, round: int) -> int:
        return self.start + (round + 1) * self.round_duration + self.submit_window

    def audit_end(self, round: int) -> int:
        return self.submission_end(round) + self.audit_window


class RoundState(BaseModel):
    accumulator: bytes
    contributions: int
    unanswered: int  # records with an open, unanswered audit: they get no share
    finalized: bool
    share: int
    cert_required: bool = False  # fixed at finalize: a claim of an uncertified record pays 0 (share back to pool)


class RecordState(BaseModel):
    """One contribution's on-chain record; `commitment == 0` means there is none (its ring slot may hold another
    round's: SwarmEscrow.RECORD_RING)."""

    commitment: int
    round: int
    claimed: bool
    slashed: bool
    audits_opened: int
    audits_answered: int
    certified: bool = False  # its (round, stage) group certified its parts as averaged

    @property
    def exists(self) -> bool:
        return self.commitment != 0


class StakeState(BaseModel):
    active: int
    locked: int  # the part of `active` that backs contributions still liable (minStake each)
    unbonding: int
    unbonding_ready_at: int
    batch_experiment: int = 0  # the experiment others may submit this peer's contributions to (0: none)

    @property
    def free(self) -> int:
        return self.active - self.locked


class AuditState(BaseModel):
    opener: str
    chunk: int  # targeted audits only
    settled: bool


@dataclass
class BatchResult:
    """What ChainClient.contribute_batch did: the receipt (None when nothing was sent), the contributions
    recorded, those the escrow skipped on-chain and those left out before sending, each with its reason
    ("duplicate", "collateral", "invalid proof", "norm out of bounds"), and the fee paid to the submitter."""

    receipt: Any
    included: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    fee: int = 0
