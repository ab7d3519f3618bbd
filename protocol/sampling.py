"""Which chunks a peer must prove: the contribute chunk c0 and the audited chunks c_j (docs/protocol.md).

Both are keccak formulas the escrow contract computes too, so neither side can pick them.
"""

from __future__ import annotations

from eth_abi import encode
from eth_hash.auto import keccak


class SamplingError(ValueError):
    """A chunk index cannot be derived from these inputs (no chunks, or a seed that is not 32 bytes)."""


def _index(digest: bytes, num_chunks: int) -> int:
    if num_chunks <= 0:
        raise SamplingError(f"a stage has at least one chunk, got num_chunks={num_chunks}")
    return int.from_bytes(digest, "big") % num_chunks


def contribute_chunk(root: int, peer: str, num_chunks: int) -> int:
    """c0 = uint256(keccak256(abi.encode(root, peer))) % num_chunks: the chunk `contribute` must open."""
    return _index(keccak(encode(["uint256", "address"], [root, peer])), num_chunks)


def challenged_chunks(seed: bytes | int, peer: str, stage: int, k: int, num_chunks: int) -> list[int]:
    """c_j = uint256(keccak256(abi.encode(seed, peer, stage, j))) % num_chunks for j < k (may repeat)."""
    seed_bytes = seed.to_bytes(32, "big") if isinstance(seed, int) else bytes(seed)
    if len(seed_bytes) != 32:
        raise SamplingError(f"a round seed is 32 bytes, got {len(seed_bytes)}")
    return [_index(keccak(encode(["bytes32", "address", "uint256", "uint256"], [seed_bytes, peer, stage, j])),
                   num_chunks) for j in range(k)]

