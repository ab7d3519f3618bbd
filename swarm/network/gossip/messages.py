"""Typed gossip messages: what peers tell each other about rounds (pydantic schema, msgpack wire form)."""

from __future__ import annotations

from enum import Enum

import msgpack
from pydantic import BaseModel, ConfigDict, Field

from protocol.contribution import Contribution


class MessageKind(str, Enum):
    CONTRIBUTION = "contribution"  # a Contribution record (commitment + on-chain proof)
    AUDIT_PROOF = "audit_proof"  # a Contribution for an audited chunk
    EVIDENCE = "evidence"  # a verified round's accusation (swarm.rounds.parts.Accusation), produced since issue 7
    CERTIFICATE = "certificate"  # a contributor's signature of its group's certificate (swarm/settlement/certificate.py)


class GossipMessage(BaseModel):
    """One message on a topic; `body` is kind-specific msgpack (a Contribution for contribution/audit_proof)."""

    model_config = ConfigDict(frozen=True)

    kind: MessageKind
    experiment: str = Field(min_length=1, max_length=64)
    round: int = Field(ge=0)
    stage: int = Field(ge=0)
    body: bytes = Field(max_length=1 << 20)

    def to_msgpack(self) -> bytes:
        return msgpack.packb(self.model_dump(mode="python") | {"kind": self.kind.value}, use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> GossipMessage:
        """Raises ValueError (pydantic's ValidationError or msgpack's errors wrapped) on anything malformed."""
        try:
            obj = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise ValueError(f"gossip message is not msgpack: {exc}") from exc
        return cls.model_validate(obj)

    @classmethod
    def for_contribution(cls, experiment: str, c: Contribution, *, audit: bool = False) -> GossipMessage:
        kind = MessageKind.AUDIT_PROOF if audit else MessageKind.CONTRIBUTION
        return cls(kind=kind, experiment=experiment, round=c.round, stage=c.stage, body=c.to_msgpack())

    @classmethod
    def for_evidence(cls, experiment: str, round: int, stage: int, accusation: bytes) -> GossipMessage:
        """A verified round's accusation (swarm.rounds.parts.Accusation: the accused's signed part that fails its
        signed root), which anyone holding the accused's commit record can check."""
        return cls(kind=MessageKind.EVIDENCE, experiment=experiment, round=round, stage=stage, body=accusation)

    @classmethod
    def for_certificate(cls, experiment: str, round: int, stage: int, signature: bytes) -> GossipMessage:
        """A contributor's signature of its (round, stage) group's certificate (CertificateSignature bytes)."""
        return cls(kind=MessageKind.CERTIFICATE, experiment=experiment, round=round, stage=stage, body=signature)

    def contribution(self) -> Contribution:
        return Contribution.from_msgpack(self.body)


def topic_for(experiment: str) -> str:
    return f"/swarm/{experiment}/rounds/1"
