"""Commitment to a quantized update: chunks, leaves (Poseidon hash, squared norm), a Merkle tree with norms.

Mirrors zk/circuits/chunk.zok exactly (docs/protocol.md); `opening(chunk)` is what a chunk proof, or a
receiver checking data against a commitment, needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict

from protocol.fixed_point import QMAX
from zk.circuit import DEFAULT_PARAMS, NORM_BITS, CircuitParams
from zk.leaves import Node, leaf_nodes
from zk.leaves import leaf_of as _leaf_of
from zk.poseidon import poseidon, poseidon_many
from zk.quantize import QuantizedUpdate

EMPTY: Node = (0, 0)


class CommitError(ValueError):
    """An update does not fit the circuit (too many chunks, wrong block size) or an opening is malformed."""


class ChunkOpening(BaseModel):
    """One chunk's data and Merkle path: the private inputs of its proof."""

    model_config = ConfigDict(frozen=True)

    chunk: int
    values: list[int]  # int8 codes in [-127, 127], zero-padded to the chunk size
    scales: list[int]  # one fixed-point scale per block of the chunk
    sibling_hashes: list[int]  # from the leaf's sibling up to the root's children
    sibling_norms: list[int]


def node(left: Node, right: Node) -> Node:
    return poseidon([left[0], left[1], right[0], right[1]]), left[1] + right[1]


def level_above(row: list[Node]) -> list[Node]:
    """The parents of consecutive pairs of an even-length row of nodes, hashed in one batch."""
    flat = [x for left, right in zip(row[::2], row[1::2]) for x in (*left, *right)]
    hashes = poseidon_many(4, flat) if flat else []
    return [(h, row[2 * i][1] + row[2 * i + 1][1]) for i, h in enumerate(hashes)]


def root_of(top: Node) -> int:
    return poseidon([top[0], top[1]])


@dataclass
class MerkleTree:
    """Levels of (hash, norm) from the leaves up; nodes past the last real one are empty subtrees."""

    depth: int
    levels: list[list[Node]]
    empty: list[Node] = field(default_factory=list)  # the node of an all-empty subtree at each level

    @classmethod
    def build(cls, leaves: list[Node], depth: int) -> MerkleTree:
        if len(leaves) > 1 << depth:
            raise CommitError(f"{len(leaves)} chunks do not fit a tree of depth {depth}; use a circuit with a "
                              f"larger depth or chunk size")
        empty = [EMPTY]
        for _ in range(depth):
            empty.append(node(empty[-1], empty[-1]))
        levels = [list(leaves)]
        for lvl in range(depth):
            cur = levels[-1]
            if len(cur) % 2:
                cur = [*cur, empty[lvl]]
            levels.append(level_above(cur))
        return cls(depth, levels, empty)

    @property
    def top(self) -> Node:
        return self.levels[-1][0] if self.levels[-1] else self.empty[-1]

    def path(self, index: int) -> list[Node]:
        """Sibling of the node on the way from leaf `index` to the top, level by level."""
        siblings = []
        for lvl in range(self.depth):
            sib = index ^ 1
            row = self.levels[lvl]
            siblings.append(row[sib] if sib < len(row) else self.empty[lvl])
            index >>= 1
        return siblings


@dataclass
class Commitment:
    """`root` = Poseidon(top hash, top norm); `norm_sq` = top norm, the update's fixed-point squared norm."""

    root: int
    norm_sq: int
    tree: MerkleTree
    update: QuantizedUpdate
    params: CircuitParams

    @property
    def num_chunks(self) -> int:
        return len(self.tree.levels[0])

    def opening(self, chunk: int) -> ChunkOpening:
        if not 0 <= chunk < self.num_chunks:
            raise CommitError(f"chunk {chunk} is out of range: this update has {self.num_chunks} chunks")
        values, scales = chunk_data(self.update, self.params, chunk)
        path = self.tree.path(chunk)
        return ChunkOpening(chunk=chunk, values=values.tolist(), scales=scales,
                            sibling_hashes=[h for h, _ in path], sibling_norms=[n for _, n in path])


def chunk_data(q: QuantizedUpdate, params: CircuitParams, chunk: int) -> tuple[np.ndarray, list[int]]:
    """Values (int8, zero-padded to the chunk size) and the scales of chunk `chunk`."""
    lo = chunk * params.chunk
    values = q.values[lo : lo + params.chunk].numpy()
    if len(values) < params.chunk:
        values = np.concatenate([values, np.zeros(params.chunk - len(values), dtype=np.int8)])
    s_lo = lo // params.block
    scales = [int(s) for s in q.scales[s_lo : s_lo + params.scales_per_chunk].tolist()]
    return values, scales + [0] * (params.scales_per_chunk - len(scales))


def leaf_of(values: np.ndarray, scales: list[int], params: CircuitParams) -> Node:
    """(Poseidon hash, squared norm) of one chunk's values and scales."""
    return _leaf_of(values, scales, params.block)


def commit_update(q: QuantizedUpdate, params: CircuitParams = DEFAULT_PARAMS, processes: int = 1) -> Commitment:
    """Chunk the update, hash each leaf, build the tree: the commitment a peer publishes for its round.

    `processes > 1` hashes the chunks of a large update in a pool of that many processes."""
    if q.block_size != params.block:
        raise CommitError(f"the update was quantized with block size {q.block_size} but the circuit expects "
                          f"{params.block}; quantize with block_size={params.block}")
    n = params.num_chunks(q.numel)
    values = np.zeros(n * params.chunk, dtype=np.int8)
    values[: q.numel] = q.values.numpy()
    scales = [int(s) for s in q.scales.tolist()]
    scales += [0] * (n * params.scales_per_chunk - len(scales))
    leaves = leaf_nodes(values, scales, params.chunk, params.block, processes)
    tree = MerkleTree.build(leaves, params.depth)
    top = tree.top
    return Commitment(root=root_of(top), norm_sq=top[1], tree=tree, update=q, params=params)


def verify_opening(root: int, norm_sq: int, opening: ChunkOpening, params: CircuitParams = DEFAULT_PARAMS) -> bool:
    """Does this chunk's data lie under `root` with total norm `norm_sq`? (What a receiver checks.)"""
    if (len(opening.values) != params.chunk or len(opening.scales) != params.scales_per_chunk
            or len(opening.sibling_hashes) != params.depth or len(opening.sibling_norms) != params.depth):
        return False
    if any(not -QMAX <= v <= QMAX for v in opening.values) or any(not 0 <= s <= params.scale_max
                                                                   for s in opening.scales):
        return False
    if any(not 0 <= n < 1 << NORM_BITS for n in opening.sibling_norms):
        return False
    cur = leaf_of(np.asarray(opening.values, dtype=np.int8), list(opening.scales), params)
    index = opening.chunk
    for sib in zip(opening.sibling_hashes, opening.sibling_norms):
        cur = node(sib, cur) if index & 1 else node(cur, sib)
        index >>= 1
    return index == 0 and cur[1] == norm_sq and root_of(cur) == root
