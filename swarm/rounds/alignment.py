"""Only useful work is averaged (and so certified and paid): a kept update must point where the group's others point.

After a verified round's agree phase every honest peer of the group holds the same quantized update (int8 codes,
integer per-block scales) of every kept peer. Two updates i, j are *aligned* when

    cos(Δ_i, Δ_j) = <Δ_i, Δ_j> / (|Δ_i| |Δ_j|) >= k / sqrt(d)

(d: the number of parameters, k in sigmas, `DEFAULT_MIN_ALIGNMENT`): a random vector's cosine with a fixed one in d
dimensions is about N(0, 1/d), so noise (of any norm) is aligned with nothing, while honest updates, steps down the
same loss from the same anchor, share a direction. A peer *passes* when it is aligned with at least half of the
other judged peers, rounded down (1 of 2, 1 of 3, 2 of 4, ...). Judged: the kept peers with a nonzero update, when there are at least `MIN_GROUP` of them (with
two, neither can tell which one is honest). A zero update (an idle stage) moves nothing and is never dropped. If
nobody passes, the group shows no common direction this round (updates are all noise, or no majority agrees) and
nobody is dropped: the rule cannot tell useful from useless then, and the round still trains.

Why pairwise and half, not each update against the sum of the others: a sum is pulled by one large update (an
update of -9x the honest one, within the norm rule, turns every honest peer's "others' sum" against it), and two
colluding riders that send the same random vector are each aligned with a sum that holds the other. Counted pair
by pair, each peer has one vote whatever its norm, and colluding riders pass only as half of the group or more
(which can already tie the group's anchor and block its certificates, docs/protocol.md). Half rounded down, not
up: with 3 honest peers and 1 rider an honest peer needs 1 of its 2 honest links, not both (late in training a
single honest pair is sometimes not aligned, experiments/bench_alignment.py).

Everything is exact integer arithmetic (codes x scales; Python ints where int64 could overflow): the test is
`dot >= 0 and dot^2 * d * q >= p * |Δ_i|^2 * |Δ_j|^2` with k^2 = p / q, so every peer decides bit-identically from
the same updates, whatever its machine, with no extra message. Measurements and limits: docs/protocol.md ("Paying
only for useful work"), experiments/bench_alignment.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when used: the peer's config reads DEFAULT_MIN_ALIGNMENT before loading it
    from zk.quantize import QuantizedUpdate

DEFAULT_MIN_ALIGNMENT = 4.0  # sigmas: a random update is aligned with a given one with probability ~3e-5
MIN_GROUP = 3
CHUNK_BLOCKS = 4096  # blocks summed at a time: int32 codes of n peers x 4096 blocks (4 MiB a peer at 256 a block)
_INT64_MAX = (1 << 63) - 1


def gram(updates: Sequence[QuantizedUpdate]) -> list[list[int]]:
    """G[i][j] = <Δ_i, Δ_j> exactly, in units of 2**(-2 SCALE_FRAC_BITS) (codes x scales summed in integers)."""
    import torch

    if not updates:
        return []
    first = updates[0]
    for q in updates:
        if (q.numel, q.block_size) != (first.numel, first.block_size):
            raise ValueError(f"updates of different sizes: {q.numel} (block {q.block_size}) and {first.numel} "
                             f"(block {first.block_size})")
    n, block, blocks = len(updates), first.block_size, first.num_blocks
    out = [[0] * n for _ in range(n)]
    for b0 in range(0, blocks, CHUNK_BLOCKS):  # in chunks: memory stays bounded whatever the stage's size
        b1 = min(b0 + CHUNK_BLOCKS, blocks)
        lo, hi = b0 * block, min(b1 * block, first.numel)
        codes = torch.zeros(n, (b1 - b0) * block, dtype=torch.int32)
        for i, q in enumerate(updates):
            codes[i, : hi - lo] = q.values[lo:hi].to(torch.int32)
        codes = codes.reshape(n, b1 - b0, block).transpose(0, 1)  # (blocks, n, block)
        # per block: sum of code products, |.| <= 4096 * 127^2 < 2^31 (the largest block bitsandbytes takes)
        block_dots = torch.bmm(codes, codes.transpose(1, 2)).to(torch.int64)  # (blocks, n, n)
        scales = torch.stack([q.scales[b0:b1].to(torch.int64) for q in updates])  # (n, blocks), each < 2^32
        top = [int(s) for s in scales.max(dim=1).values]
        for i in range(n):
            for j in range(i, n):
                bd = block_dots[:, i, j]
                if top[i] * top[j] * int(bd.abs().sum()) <= _INT64_MAX:  # no int64 product or sum overflows: exact
                    value = int((scales[i] * scales[j] * bd).sum())
                else:  # Python ints, exact at any size
                    value = sum(a * b * c for a, b, c in zip(scales[i].tolist(), scales[j].tolist(), bd.tolist()))
                out[i][j] += value
                if j != i:
                    out[j][i] += value
    return out


def cosine(g: list[list[int]], i: int, j: int) -> float:
    """cos(Δ_i, Δ_j) as a float (for logs and reports; decisions use `aligned`); 0 if either is zero."""
    if g[i][i] == 0 or g[j][j] == 0:
        return 0.0
    return g[i][j] / math.sqrt(g[i][i]) / math.sqrt(g[j][j])


def aligned(g: list[list[int]], i: int, j: int, numel: int, min_sigmas: float) -> bool:
    """cos(Δ_i, Δ_j) >= min_sigmas / sqrt(numel), decided exactly (both updates nonzero)."""
    k2 = Fraction(min_sigmas) ** 2  # the float's exact value: every peer has the same
    dot = g[i][j]
    return dot >= 0 and dot * dot * numel * k2.denominator >= k2.numerator * g[i][i] * g[j][j]


def misaligned(peers: Sequence[str], updates: Sequence[QuantizedUpdate], min_sigmas: float | None
               ) -> tuple[dict[str, str], dict[str, list[float]]]:  # fmt: skip
    """(peer -> why it is dropped, peer -> its cosines x sqrt(d) with the other judged peers, in `peers` order).

    Nobody is dropped when the rule is off (`min_sigmas` None or 0), fewer than MIN_GROUP nonzero updates are kept,
    or nobody passes (see the module doc); the decision is the same on every honest peer."""
    if len(peers) != len(updates):
        raise ValueError(f"{len(peers)} peers but {len(updates)} updates")
    if not min_sigmas or len(peers) < MIN_GROUP:
        return {}, {}
    g = gram(updates)
    judged = [i for i in range(len(peers)) if g[i][i] > 0]
    if len(judged) < MIN_GROUP:
        return {}, {}
    numel = updates[0].numel
    root = math.sqrt(numel)
    sigmas = {peers[i]: [cosine(g, i, j) * root for j in judged if j != i] for i in judged}
    votes = {i: sum(aligned(g, i, j, numel, min_sigmas) for j in judged if j != i) for i in judged}
    failing = [i for i in judged if votes[i] < (len(judged) - 1) // 2]
    if len(failing) == len(judged):  # no majority direction: nothing to tell a rider from
        return {}, sigmas
    dropped = {}
    for i in failing:
        cos = ", ".join(f"{cosine(g, i, j):.4f}" for j in judged if j != i)
        dropped[peers[i]] = (f"update not aligned with the group's: cos with the others' {cos}, aligned "
                             f"(>= {min_sigmas:g}/sqrt({numel}) = {min_sigmas / root:.4f}) with {votes[i]} of "
                             f"{len(judged) - 1}")
    return dropped, sigmas
