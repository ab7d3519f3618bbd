"""Leaves of the commitment: a chunk packed into field elements, its Poseidon hash and its squared norm.

Mirrors `leaf_hash` and the norm in zk/circuits/chunk.zok. With the native extension (zk/_poseidon.c) a whole
batch of chunks is packed, hashed and normed in C without the GIL, so `leaf_nodes(..., processes=n)` runs n
threads; without it, the pure-Python form runs in a pool of n processes (this module is torch-free for them).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np

from protocol.fixed_point import QMAX
from zk.circuit import RATE, SCALES_PER_FIELD, VALUES_PER_FIELD
from zk.poseidon import _native, _native_ready, poseidon

Node = tuple[int, int]  # (hash, squared norm)
PARALLEL_MIN_CHUNKS = 64  # below this, starting processes costs more than it saves
NATIVE_PARALLEL_MIN_CHUNKS = 8  # threads start in microseconds


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
    if _native_fits(scales):
        return _native_leaves(np.ascontiguousarray(values, dtype=np.int8).tobytes(), scales, len(values), block)[0]
    return leaf_hash(pack_chunk(values, scales)), chunk_norm_sq(values, scales, block)


def _native_fits(scales: list[int]) -> bool:
    """The extension takes scales as u32 (all the circuit accepts); anything else goes the Python way."""
    return _native_ready(RATE + 2) and all(0 <= s <= 0xFFFFFFFF for s in scales)


def _native_leaves(values: bytes, scales: list[int], chunk: int, block: int) -> list[Node]:
    _native_ready(RATE + 2)
    raw = np.asarray(scales, dtype="<u4").tobytes()
    hashes, norms = _native.leaves(values, raw, chunk, block, VALUES_PER_FIELD, SCALES_PER_FIELD, RATE)
    return [(int.from_bytes(hashes[32 * i : 32 * i + 32], "little"), int.from_bytes(norms[16 * i : 16 * i + 16], "little"))
            for i in range(len(hashes) // 32)]


def _leaf_batch(values: bytes, scales: list[int], chunk: int, block: int) -> list[Node]:
    v = np.frombuffer(values, dtype=np.int8).reshape(-1, chunk)
    per = chunk // block
    return [leaf_of(row, scales[i * per : (i + 1) * per], block) for i, row in enumerate(v)]


def leaf_nodes(values: np.ndarray, scales: list[int], chunk: int, block: int, processes: int = 1) -> list[Node]:
    """Leaves of all chunks: `values` is int8 padded to a multiple of `chunk`, `scales` one per block."""
    n = len(values) // chunk
    per = chunk // block
    native = _native_fits(scales)
    if processes <= 1 or n < (NATIVE_PARALLEL_MIN_CHUNKS if native else PARALLEL_MIN_CHUNKS):
        return _native_leaves(values.tobytes(), scales, chunk, block) if native else _leaf_batch(
            values.tobytes(), scales, chunk, block)
    step = -(-n // (4 * processes))  # a few batches per worker, for balance
    batches = [(values[i * chunk : (i + step) * chunk].tobytes(), scales[i * per : (i + step) * per])
               for i in range(0, n, step)]
    if native:  # the extension releases the GIL: threads hash in parallel
        with ThreadPoolExecutor(processes, thread_name_prefix="zk-leaves") as threads:
            parts = threads.map(lambda b: _native_leaves(b[0], b[1], chunk, block), batches)
            return [leaf for part in parts for leaf in part]
    # spawn, not fork: the caller may hold threads (asyncio, hivemind) whose locks a forked child would inherit.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(_leaf_batch, *zip(*batches), [chunk] * len(batches), [block] * len(batches))
        return [leaf for part in parts for leaf in part]
