"""The one record that ties DHT, gossip, prover and contract together: a peer's claim for one stage in one round.

Its msgpack form travels between peers; its ABI form goes to the escrow contract; its public inputs go to the
Groth16 verifier. All three are derived here and nowhere else (see docs/protocol.md for the packing).
"""

from __future__ import annotations

from typing import Annotated

import msgpack
from pydantic import BaseModel, ConfigDict, Field, field_validator

# BN254 scalar field: every public input of the circuit lives below it.
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617

ROUND_BITS, STAGE_BITS, CHUNK_BITS, ADDRESS_BITS = 48, 16, 24, 160
MAX_ROUND, MAX_STAGE, MAX_CHUNK = (1 << ROUND_BITS) - 1, (1 << STAGE_BITS) - 1, (1 << CHUNK_BITS) - 1
MAX_NORM_SQ = (1 << 128) - 1

FieldInt = Annotated[int, Field(ge=0, lt=FIELD_MODULUS)]


class ContributionError(ValueError):
    """A contribution record (or its wire form) is malformed."""


class Groth16Proof(BaseModel):
    """A Groth16 proof on bn128 in the shape zokrates-js produces and the exported verifier takes."""

    model_config = ConfigDict(frozen=True)

    a: tuple[int, int]
    b: tuple[tuple[int, int], tuple[int, int]]
    c: tuple[int, int]

    @classmethod
    def from_zokrates(cls, proof: dict) -> Groth16Proof:
        """Build from zokrates-js's `{"a": [hex, hex], "b": [[hex, hex], [hex, hex]], "c": [hex, hex]}`."""
        try:
            a = tuple(int(x, 16) for x in proof["a"])
            b = tuple(tuple(int(x, 16) for x in pair) for pair in proof["b"])
            c = tuple(int(x, 16) for x in proof["c"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ContributionError(f"not a zokrates-js Groth16 proof: {exc}") from exc
        return cls(a=a, b=b, c=c)

    def to_zokrates(self) -> dict:
        """The zokrates-js form (hex strings), e.g. for `verify(vk, proof)` in the Node worker."""
        h = lambda x: f"0x{x:064x}"
        return {"a": [h(x) for x in self.a], "b": [[h(x) for x in p] for p in self.b], "c": [h(x) for x in self.c]}

    def abi_tuple(self) -> tuple:
        """The `Proof` struct of the ZoKrates-exported Solidity verifier: ((ax, ay), ((bx0, bx1), (by0, by1)), (cx, cy))."""
        return (tuple(self.a), tuple(tuple(p) for p in self.b), tuple(self.c))


class Contribution(BaseModel):
    """What one peer claims for one stage in one round of one experiment.

    `root` commits to the peer's quantized update (Poseidon Merkle tree over chunks whose nodes also carry
    squared norms); `norm_sq` is the update's squared L2 norm in fixed point (zk/README.md); `chunk` is the
    index of the chunk that `proof` opens. The proof is bound to (peer, round, stage, chunk) through
    `context()`, so it cannot be replayed for another round, stage, chunk or address.
    """

    model_config = ConfigDict(frozen=True)

    experiment: int = Field(ge=0, lt=1 << 64)
    round: int = Field(ge=0, le=MAX_ROUND)
    stage: int = Field(ge=0, le=MAX_STAGE)
    peer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="the peer's L2 address")
    root: FieldInt
    norm_sq: int = Field(ge=0, le=MAX_NORM_SQ)
    chunk: int = Field(default=0, ge=0, le=MAX_CHUNK)
    proof: Groth16Proof | None = None

    @field_validator("peer")
    @classmethod
    def _lower_address(cls, v: str) -> str:
        return v.lower()

    def context(self) -> int:
        """Pack (peer, round, stage, chunk) into one field element: peer<<88 | round<<40 | stage<<24 | chunk.

        160 + 48 + 16 + 24 = 248 bits < 254, so the packing is injective in the field. The contract computes
        the same value from msg.sender (EscrowContract._context), the circuit unpacks it (zk/circuits).
        """
        return (
            (int(self.peer, 16) << (ROUND_BITS + STAGE_BITS + CHUNK_BITS))
            | (self.round << (STAGE_BITS + CHUNK_BITS))
            | (self.stage << CHUNK_BITS)
            | self.chunk
        )

    def public_inputs(self, norm_bound: int) -> list[int]:
        """The circuit's public inputs, in order: [context, root, norm_sq, norm_bound]."""
        return [self.context(), self.root, self.norm_sq, norm_bound]

    def to_msgpack(self) -> bytes:
        """Wire form (ints above 64 bits are sent as big-endian bytes)."""
        d = self.model_dump()
        d["root"] = self.root.to_bytes(32, "big")
        d["norm_sq"] = self.norm_sq.to_bytes(16, "big")
        if self.proof is not None:
            d["proof"] = [x.to_bytes(32, "big") for x in _flatten_proof(self.proof)]
        return msgpack.packb(d, use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> Contribution:
        """Parse the wire form; anything malformed raises ContributionError, never a bare exception."""
        try:
            d = msgpack.unpackb(data, raw=False, strict_map_key=True)
            if not isinstance(d, dict):
                raise ContributionError("contribution must be a msgpack map")
            d = dict(d)
            d["root"] = _int_from_bytes(d.get("root"), 32, "root")
            d["norm_sq"] = _int_from_bytes(d.get("norm_sq"), 16, "norm_sq")
            if d.get("proof") is not None:
                flat = d["proof"]
                if not isinstance(flat, list) or len(flat) != 8:
                    raise ContributionError("proof must be 8 field elements")
                xs = [_int_from_bytes(x, 32, "proof") for x in flat]
                d["proof"] = Groth16Proof(a=(xs[0], xs[1]), b=((xs[2], xs[3]), (xs[4], xs[5])), c=(xs[6], xs[7]))
            return cls.model_validate(d)
        except ContributionError:
            raise
        except Exception as exc:  # msgpack errors, pydantic ValidationError, ...
            raise ContributionError(f"malformed contribution: {exc}") from exc


def _flatten_proof(p: Groth16Proof) -> list[int]:
    return [*p.a, *p.b[0], *p.b[1], *p.c]


def _int_from_bytes(v: object, size: int, name: str) -> int:
    if not isinstance(v, bytes) or len(v) != size:
        raise ContributionError(f"{name} must be {size} bytes")
    return int.from_bytes(v, "big")
