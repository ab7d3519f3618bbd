"""What a verified round puts on the wire: a signed commitment record, parts of committed chunks, accusations.

A peer's round update is quantized and committed once (zk.quantize, zk.commit). Its `CommitRecord` (root, norm,
sizes, a one-round Ed25519 key, the anchor it trained from) goes to the DHT under the peer's signed subkey before
the commit deadline. After it, the peer serves `Part`s: aligned power-of-two ranges of whole chunks with their
codes, scales and Merkle-sum path, signed with the round key. `check_part` is what every receiver runs before a
part enters its sum; an `Accusation` (a signed part that fails `check_part`) convinces anyone who holds the record.

A paid peer's record also names its wallet and the escrow it contributes to, and each of its parts carries its
chunks' leaves (hash, norm) signed with that wallet (ECDSA, `evidence_digest`). A part whose signed leaves match
its data but, with its path, do not hash to the committed root is then evidence the chain can check on its own:
`PartFraudChecker` recomputes the root with Poseidon and `SwarmEscrow.slashMismatch` slashes (`part_evidence`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import msgpack
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field

from protocol.contribution import FIELD_MODULUS
from protocol.fixed_point import QMAX
from zk.circuit import NORM_BITS, CircuitParams
from zk.commit import EMPTY, Commitment, MerkleTree, node, root_of
from zk.leaves import Node, leaf_nodes

FIELD_BYTES = 32
EVIDENCE_TAG = keccak(text="swarm.part-evidence.v1")  # PartFraudChecker.PART_TAG
ADDRESS = r"^(0x[0-9a-fA-F]{40})?$"  # an EVM address, or empty


class PartError(ValueError):
    """A part, record or accusation is malformed (cannot be decoded): not evidence against anyone."""


def _to_bytes(x: int) -> bytes:
    return int(x).to_bytes(FIELD_BYTES, "big")


def _to_int(b: bytes) -> int:
    if not isinstance(b, bytes) or len(b) != FIELD_BYTES:
        raise PartError("a field element must be 32 bytes")
    return int.from_bytes(b, "big")


def _unpack(data: bytes, what: str) -> dict:
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise PartError(f"{what} is not msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise PartError(f"{what} must be a map")
    return obj


class CommitRecord(BaseModel):
    """One peer's commitment for one (round, stage): fixed on the DHT before anyone reveals data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peer_id: str = Field(min_length=1, max_length=128)
    round: int = Field(ge=0)
    stage: int = Field(ge=0)
    root: int = Field(ge=0, lt=1 << 256)
    norm_sq: int = Field(ge=0, lt=1 << NORM_BITS)
    numel: int = Field(ge=0)
    num_chunks: int = Field(ge=1)
    part_key: bytes = Field(min_length=32, max_length=32, description="Ed25519 key that signs this round's parts")
    anchor_round: int = Field(ge=-1, description="the round whose averaging produced the anchor (-1: the seed)")
    anchor_digest: bytes = Field(min_length=32, max_length=32)
    # a paid peer's evidence domain: the wallet that signs its parts' leaves, for this escrow's experiment
    wallet: str = Field(default="", pattern=ADDRESS, description="0x address, or empty: an unpaid peer")
    chain_id: int = Field(default=0, ge=0, lt=1 << 256)
    escrow: str = Field(default="", pattern=ADDRESS)
    chain_experiment: int = Field(default=0, ge=0, lt=1 << 256)
    # what the peer measured in its previous round (0: none), from which the group sets the next round's phases
    # (swarm.rounds.clock.adapt_timing)
    last_commit_ms: int = Field(default=0, ge=0, lt=1 << 32, description="its previous round's end -> record stored")
    last_exchange_ms: int = Field(default=0, ge=0, lt=1 << 32, description="commit deadline -> all parts held")
    last_pulled: int = Field(default=0, ge=0, lt=1 << 16, description="other peers' updates it pulled then")

    @property
    def domain(self) -> EvidenceDomain | None:
        """Where this peer's parts are evidence (None: an unpaid peer; its parts carry no wallet signature)."""
        if not self.wallet:
            return None
        return EvidenceDomain(chain_id=self.chain_id, escrow=self.escrow, experiment_id=self.chain_experiment)

    def to_wire(self) -> dict:
        d = self.model_dump()
        d["root"], d["norm_sq"] = _to_bytes(self.root), _to_bytes(self.norm_sq)
        return d

    @classmethod
    def from_wire(cls, d: object) -> CommitRecord:
        if not isinstance(d, dict):
            raise PartError("a commit record must be a map")
        try:
            return cls.model_validate({**d, "root": _to_int(d.get("root")), "norm_sq": _to_int(d.get("norm_sq"))})
        except ValueError as exc:
            raise PartError(f"malformed commit record: {exc}") from exc

    def verify_signature(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.part_key).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            return False


@dataclass(frozen=True)
class EvidenceDomain:
    """The chain, escrow and experiment a wallet signature on a part is good for (nowhere else: no replay)."""

    chain_id: int
    escrow: str
    experiment_id: int


@dataclass(frozen=True)
class WalletSigner:
    """A paid peer's wallet (its key stays in this process: eth_account's LocalAccount) and evidence domain."""

    account: object  # eth_account LocalAccount
    domain: EvidenceDomain

    @property
    def address(self) -> str:
        return self.account.address  # type: ignore[attr-defined]


def _flat(nodes: list[Node]) -> bytes:
    return b"".join(_to_bytes(h) + _to_bytes(n) for h, n in nodes)


def evidence_digest(domain: EvidenceDomain, round: int, stage: int, first_chunk: int, leaves: list[Node],
                    path: list[Node]) -> bytes:
    """What a sender's wallet signs for one part (PartFraudChecker.partDigest): chain, escrow, experiment, round,
    stage, first chunk, and keccak256 of the leaves and of the path (each node as 32-byte hash, 32-byte norm)."""
    return keccak(abi_encode(
        ["bytes32", "uint256", "address", "uint256", "uint256", "uint256", "uint256", "bytes32", "bytes32"],
        [EVIDENCE_TAG, domain.chain_id, domain.escrow, domain.experiment_id, round, stage, first_chunk,
         keccak(_flat(leaves)), keccak(_flat(path))]))  # fmt: skip


def sign_digest(account: object, digest: bytes) -> bytes:
    """The wallet's 65-byte EIP-191 signature of a 32-byte digest (what ecrecover in PartFraudChecker takes)."""
    return bytes(account.sign_message(encode_defunct(primitive=digest)).signature)  # type: ignore[attr-defined]


def digest_signer(digest: bytes, signature: bytes) -> str | None:
    """The address that signed `digest` (EIP-191), or None for a malformed signature."""
    try:
        return Account.recover_message(encode_defunct(primitive=digest), signature=signature)
    except Exception:  # noqa: BLE001 -- any malformed signature is simply not a signature
        return None


@dataclass(frozen=True)
class PartLayout:
    """How an update of `num_chunks` chunks is cut into parts of `part_chunks` (a power of two) chunks."""

    params: CircuitParams
    numel: int
    part_chunks: int

    def __post_init__(self) -> None:
        if self.part_chunks < 1 or self.part_chunks & (self.part_chunks - 1):
            raise ValueError(f"part_chunks must be a power of two, got {self.part_chunks}")
        if self.level > self.params.depth:
            raise ValueError(f"part_chunks {self.part_chunks} is above the tree's 2**{self.params.depth} chunks")

    @property
    def level(self) -> int:
        return self.part_chunks.bit_length() - 1

    @property
    def num_chunks(self) -> int:
        return self.params.num_chunks(self.numel)

    @property
    def num_parts(self) -> int:
        return math.ceil(self.num_chunks / self.part_chunks)

    def chunks(self, index: int) -> range:
        lo = index * self.part_chunks
        return range(lo, min(lo + self.part_chunks, self.num_chunks))

    def value_range(self, index: int) -> tuple[int, int]:
        """[lo, hi) of the update's values that part `index` carries (the last chunk's padding is not sent)."""
        c = self.chunks(index)
        return c.start * self.params.chunk, min(c.stop * self.params.chunk, self.numel)

    def scale_range(self, index: int) -> tuple[int, int]:
        lo, hi = self.value_range(index)
        return lo // self.params.block, math.ceil(hi / self.params.block)


class Part(BaseModel):
    """Chunks [index * part_chunks, ...) of `owner`'s committed update, with the path of their subtree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str
    round: int
    stage: int
    index: int
    values: bytes  # int8 codes
    scales: bytes  # little-endian uint32, one per block
    path: list[tuple[bytes, bytes]]  # (hash, norm) siblings from the part's subtree up to the root's children
    # a paid sender's: (hash, norm) of each of the part's part_chunks chunks (past the update's end: (0, 0)), and
    # its wallet's signature of evidence_digest over them and the path
    leaves: list[tuple[bytes, bytes]] = Field(default_factory=list)
    wallet_signature: bytes = b""
    signature: bytes = b""

    def signed_message(self) -> bytes:
        body = self.model_dump(exclude={"signature"})
        body["path"] = [list(p) for p in self.path]
        body["leaves"] = [list(p) for p in self.leaves]
        return b"swarm-part-v1" + hashlib.sha256(msgpack.packb(body, use_bin_type=True)).digest()

    def signed(self, key: Ed25519PrivateKey) -> Part:
        return self.model_copy(update={"signature": key.sign(self.signed_message())})

    def to_bytes(self) -> bytes:
        d = self.model_dump()
        d["path"] = [list(p) for p in self.path]
        d["leaves"] = [list(p) for p in self.leaves]
        return msgpack.packb(d, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Part:
        d = _unpack(data, "a part")
        try:
            d["path"] = [tuple(p) for p in d.get("path", [])]
            d["leaves"] = [tuple(p) for p in d.get("leaves", [])]
            return cls.model_validate(d)
        except (ValueError, TypeError) as exc:
            raise PartError(f"malformed part: {exc}") from exc

    def path_nodes(self) -> list[Node]:
        return [(_to_int(h), _to_int(n)) for h, n in self.path]

    def leaf_nodes(self) -> list[Node]:
        return [(_to_int(h), _to_int(n)) for h, n in self.leaves]

    def first_chunk(self, part_chunks: int) -> int:
        return self.index * part_chunks

    def wallet_signed(self, wallet: WalletSigner, leaves: list[Node], part_chunks: int) -> Part:
        """This part with `leaves` (padded with (0, 0) to part_chunks) signed by `wallet` (the round key's
        signature is made after: call .signed(key))."""
        leaves = list(leaves) + [(0, 0)] * (part_chunks - len(leaves))
        digest = evidence_digest(wallet.domain, self.round, self.stage, self.first_chunk(part_chunks), leaves,
                                 self.path_nodes())
        return self.model_copy(update={"leaves": [(_to_bytes(h), _to_bytes(n)) for h, n in leaves],
                                       "wallet_signature": sign_digest(wallet.account, digest)})


def make_parts(commitment: Commitment, owner: str, round: int, stage: int, key: Ed25519PrivateKey,
               part_chunks: int, wallet: WalletSigner | None = None) -> list[Part]:
    """All parts of a committed update, signed with the round key (and their leaves with `wallet`, if paid)."""
    q, tree = commitment.update, commitment.tree
    layout = PartLayout(commitment.params, q.numel, part_chunks)
    values = q.values.numpy().astype(np.int8, copy=False)
    scales = q.scales.numpy().astype("<u4")
    parts = []
    for i in range(layout.num_parts):
        lo, hi = layout.value_range(i)
        s_lo, s_hi = layout.scale_range(i)
        path = [(_to_bytes(h), _to_bytes(n)) for h, n in subtree_path(tree, layout.level, i)]
        part = Part(owner=owner, round=round, stage=stage, index=i, values=values[lo:hi].tobytes(),
                    scales=scales[s_lo:s_hi].tobytes(), path=path)
        if wallet is not None:
            part = part.wallet_signed(wallet, tree.levels[0][layout.chunks(i).start : layout.chunks(i).stop],
                                      part_chunks)
        parts.append(part.signed(key))
    return parts


def subtree_path(tree: MerkleTree, level: int, index: int) -> list[Node]:
    """Siblings on the way from node `index` of `level` to the top."""
    out = []
    for lvl in range(level, tree.depth):
        row = tree.levels[lvl]
        sib = index ^ 1
        out.append(row[sib] if sib < len(row) else tree.empty[lvl])
        index >>= 1
    return out


def check_part(record: CommitRecord, part: Part, params: CircuitParams, part_chunks: int) -> str | None:
    """None if `part` is exactly data committed under `record` (ranges, leaf hashes, path, norms); else why not.

    The signature is checked by the caller (`part_signed_by`): an unsigned part is no evidence, only noise.
    """
    if (part.owner, part.round, part.stage) != (record.peer_id, record.round, record.stage):
        return "part names another peer, round or stage"
    layout = PartLayout(params, record.numel, part_chunks)
    if layout.num_chunks != record.num_chunks:
        return f"record says {record.num_chunks} chunks, its size gives {layout.num_chunks}"
    if not 0 <= part.index < layout.num_parts:
        return f"part index {part.index} is out of range"
    lo, hi = layout.value_range(part.index)
    s_lo, s_hi = layout.scale_range(part.index)
    if len(part.values) != hi - lo or len(part.scales) != 4 * (s_hi - s_lo):
        return "part has the wrong number of values or scales for its range"
    if len(part.path) != params.depth - layout.level:
        return "path has the wrong length"
    values = np.frombuffer(part.values, dtype=np.int8)
    scales = np.frombuffer(part.scales, dtype="<u4").astype(np.int64)
    if values.size and int(values.min()) < -QMAX:
        return "a code is -128, outside [-127, 127]"
    if scales.size and int(scales.max()) > params.scale_max:
        return "a scale is above the circuit's maximum"
    try:
        path = [(_to_int(h), _to_int(n)) for h, n in part.path]
    except PartError as exc:
        return str(exc)
    if any(not 0 <= n < 1 << NORM_BITS for _, n in path):
        return "a path norm is out of range"
    leaves = data_leaves(values, scales.tolist(), layout, part.index)
    if record.wallet:  # a paid sender: its wallet signed the leaves, and they must be the data's
        if len(part.leaves) != part_chunks:
            return "part carries the wrong number of signed leaves"
        try:
            signed = part.leaf_nodes()
        except PartError as exc:
            return str(exc)
        digest = evidence_digest(record.domain, part.round, part.stage, part.first_chunk(part_chunks), signed, path)
        if (digest_signer(digest, part.wallet_signature) or "").lower() != record.wallet.lower():
            return "the leaves are not signed by the wallet the record names"
        if signed != leaves + [EMPTY] * (part_chunks - len(leaves)):
            return "the signed leaves are not the data's"
    cur = MerkleTree.build(leaves, layout.level).top
    index = part.index
    for sib in path:
        cur = node(sib, cur) if index & 1 else node(cur, sib)
        index >>= 1
    if cur[1] != record.norm_sq:
        return "the subtree norms do not add up to the committed norm"
    if root_of(cur) != record.root:
        return "the chunks and path do not hash to the committed root"
    return None


def data_leaves(values: np.ndarray, scales: list[int], layout: PartLayout, index: int) -> list[Node]:
    """(hash, norm) of each chunk of part `index`, from its values (padded like zk.commit) and scales."""
    p = layout.params
    n = len(layout.chunks(index))
    padded = np.zeros(n * p.chunk, dtype=np.int8)
    padded[: len(values)] = values
    scales = list(scales) + [0] * (n * p.scales_per_chunk - len(scales))
    return leaf_nodes(padded, scales, p.chunk, p.block)


def subtree_node(values: np.ndarray, scales: list[int], layout: PartLayout, index: int) -> Node:
    """(hash, norm) of part `index`'s subtree, from its values (padded like zk.commit) and scales."""
    return MerkleTree.build(data_leaves(values, scales, layout, index), layout.level).top


def evidence_root(first_chunk: int, leaves: list[Node], path: list[Node]) -> tuple[int, int, bool]:
    """(root, norm, well formed) of signed leaves and path, as PartFraudChecker.partRoot computes them."""
    n = len(leaves)
    if n == 0 or n & (n - 1) or first_chunk % n or len(path) > 32:
        raise PartError("malformed evidence: leaves not a power of two, unaligned first chunk or path too long")
    ok = all(h < FIELD_MODULUS and w < 1 << NORM_BITS for h, w in [*leaves, *path])
    cur = MerkleTree.build([(h % FIELD_MODULUS, w) for h, w in leaves], n.bit_length() - 1).top
    index = first_chunk // n
    for sib in path:
        cur = node(sib, cur) if index & 1 else node(cur, sib)
        index >>= 1
    return root_of(cur), cur[1], ok and index == 0


def part_evidence(record: CommitRecord, part: Part, part_chunks: int) -> tuple | None:
    """The on-chain evidence (PartEvidence: first chunk, flat leaves, flat path, wallet signature) that `part`'s
    sender lied, or None: its wallet (the record's) signed leaves and a path that do not hash to the committed
    root and norm. The data does not enter: the chain checks what the wallet signed, nothing else."""
    if not record.wallet or not part.leaves or (part.owner, part.round, part.stage) != (
            record.peer_id, record.round, record.stage):
        return None
    try:
        leaves, path = part.leaf_nodes(), part.path_nodes()
        first = part.first_chunk(part_chunks)
        root, norm, ok = evidence_root(first, leaves, path)
    except PartError:
        return None
    digest = evidence_digest(record.domain, part.round, part.stage, first, leaves, path)
    if (digest_signer(digest, part.wallet_signature) or "").lower() != record.wallet.lower():
        return None
    if ok and (root, norm) == (record.root, record.norm_sq):
        return None
    return (first, [x for leaf in leaves for x in leaf], [x for sib in path for x in sib], part.wallet_signature)


def part_signed_by(record: CommitRecord, part: Part) -> bool:
    return record.verify_signature(part.signed_message(), part.signature)


class Accusation(BaseModel):
    """`accused` signed a part of round `round` that does not match its committed root: anyone can check it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuser: str
    accused: str
    round: int
    stage: int
    chunk: int  # the first chunk of the failing part (the one a targeted audit names)
    reason: str
    record: dict  # the accused's CommitRecord (wire form)
    part: bytes  # the accused's signed Part (wire form)

    def to_bytes(self) -> bytes:
        return msgpack.packb(self.model_dump(), use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Accusation:
        try:
            return cls.model_validate(_unpack(data, "an accusation"))
        except ValueError as exc:
            raise PartError(f"malformed accusation: {exc}") from exc


def accusation_holds(acc: Accusation, known: CommitRecord, params: CircuitParams, part_chunks: int) -> bool:
    """Does `acc` prove that the peer of `known` (the record this checker took at the deadline) cheated?"""
    try:
        record = CommitRecord.from_wire(acc.record)
        part = Part.from_bytes(acc.part)
    except PartError:
        return False
    if record != known or (acc.accused, acc.round, acc.stage) != (known.peer_id, known.round, known.stage):
        return False
    return part_signed_by(record, part) and check_part(record, part, params, part_chunks) is not None


def new_round_key() -> tuple[Ed25519PrivateKey, bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
