"""Leaves of the commitment: a chunk packed into field elements, its Poseidon hash and its squared norm.

Mirrors `leaf_hash` and the norm in zk/circuits/chunk.zok. Free of torch, so that a pool of processes can hash
the chunks of a large update in parallel (`leaf_nodes(..., processes=n)`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from protocol.fixed_point import QMAX
from zk.circuit import RATE, SCALES_PER_FIELD, VALUES_PER_FIELD
from zk.poseidon import poseidon

Node = tuple[int, int]  # (hash, squared norm)
PARALLEL_MIN_CHUNKS = 64  # below this, starting processes costs more than it saves


def pack_chunk(values: np.ndarray, scales: list[int]) -> list[int]:
    """Field elements the leaf hash absorbs: bytes v+127 in groups of 31, then scales in groups of 7 (LE)."""
    raw = (values.astype(np.int16) + QMAX).astype(np.uint8).tobytes()
    packed = [int.from_bytes(raw[i : i + VALUES_PER_FIELD], "little") for i in range(0, len(raw), VALUES_PER_FIELD)]
    for i in range(0, len(scales), SCALES_PER_FIELD):
        group = scales[i : i + SCALES_PER_FIELD]
        packed.append(sum(int(s) << (32 * k) for k, s in enumerate(group)))
    return packed


def leaf_hash(packed: list[int]) -> int:
    """Poseidon sponge over the packed elements, RATE at a time, zero-padded: as `leaf_hash` in the circuit."""
    h = 0
    for a in range(0, len(packed), RATE):
        block = packed[a : a + RATE]
        h = poseidon([h, *block, *([0] * (RATE - len(block)))])
    return h


def chunk_norm_sq(values: np.ndarray, scales: list[int], block: int) -> int:
    """sum_b S_b**2 * sum(v**2) over the chunk's blocks (exact integer)."""
    sq = (values.astype(np.int64) ** 2).reshape(-1, block).sum(axis=1).tolist()
    return sum(int(s) * int(s) * int(b) for s, b in zip(scales, sq))


def leaf_of(values: np.ndarray, scales: list[int], block: int) -> Node:
    return leaf_hash(pack_chunk(values, scales)), chunk_norm_sq(values, scales, block)


def _leaf_batch(values: bytes, scales: list[int], chunk: int, block: int) -> list[Node]:
    v = np.frombuffer(values, dtype=np.int8).reshape(-1, chunk)
    per = chunk // block
    return [leaf_of(row, scales[i * per : (i + 1) * per], block) for i, row in enumerate(v)]


def leaf_nodes(values: np.ndarray, scales: list[int], chunk: int, block: int, processes: int = 1) -> list[Node]:
    """Leaves of all chunks: `values` is int8 padded to a multiple of `chunk`, `scales` one per block."""
    n = len(values) // chunk
    if processes <= 1 or n < PARALLEL_MIN_CHUNKS:
        return _leaf_batch(values.tobytes(), scales, chunk, block)
    per = chunk // block
    step = -(-n // (4 * processes))  # a few batches per process, for balance
    batches = [(values[i * chunk : (i + step) * chunk].tobytes(), scales[i * per : (i + step) * per])
               for i in range(0, n, step)]
    # spawn, not fork: the caller may hold threads (asyncio, hivemind) whose locks a forked child would inherit.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(_leaf_batch, *zip(*batches), [chunk] * len(batches), [block] * len(batches))
        return [leaf for part in parts for leaf in part]
