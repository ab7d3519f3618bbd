"""Only useful work is averaged (and so certified and paid): a kept update must point where the group's others point.

After a verified round's agree phase every honest peer of the group holds the same quantized update (int8 codes,
integer per-block scales) of every kept peer. For each kept peer i, with S the sum of the kept updates and
R_i = S - Δ_i the sum of the others, the alignment is

    cos_i = <Δ_i, R_i> / (|Δ_i| |R_i|).

A random vector's cosine with a fixed one in d dimensions is about N(0, 1/d), so an update that is noise (of any
norm) has cos_i within a few 1/sqrt(d) of 0, while honest updates, steps down the same loss from the same anchor,
share a direction. A peer is *aligned* iff cos_i >= k / sqrt(d) (k in sigmas, `DEFAULT_MIN_ALIGNMENT`).

Everything is computed exactly in integers (codes x scales; Python ints where int64 could overflow) and the test is
an integer inequality, `dot >= 0 and dot^2 * d * q >= p * |Δ_i|^2 * |R_i|^2` with k^2 = p / q, so every peer
decides bit-identically from the same updates, whatever its machine; no extra message is needed.

Not judged (always aligned): groups of fewer than `MIN_GROUP` kept peers (with two, neither can tell which one is
honest), a zero update (an idle stage: it moves nothing) and an update whose others sum to zero.
Design, measurements and limits: docs/protocol.md ("Paying only for useful work").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when used: the peer's config reads DEFAULT_MIN_ALIGNMENT before loading it
    from zk.quantize import QuantizedUpdate

DEFAULT_MIN_ALIGNMENT = 4.0  # sigmas: a random update passes with probability ~3e-5 per round
MIN_GROUP = 3
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class Alignment:
    """One kept peer's alignment with the sum of the others (exact integers, units of 2**-64 per product)."""

    dot: int  # <Δ_i, R_i>
    norm_sq: int  # |Δ_i|^2
    rest_sq: int  # |R_i|^2
    numel: int  # d

    @property
    def cos(self) -> float:
        """cos_i as a float (for logs and reports; the decision uses `passes`)."""
        if self.norm_sq == 0 or self.rest_sq == 0:
            return 0.0
        return self.dot / math.sqrt(self.norm_sq) / math.sqrt(self.rest_sq)

    @property
    def sigmas(self) -> float:
        """cos_i in units of 1/sqrt(d), a random update's standard deviation."""
        return self.cos * math.sqrt(self.numel)

    def passes(self, min_sigmas: float) -> bool:
        """cos_i >= min_sigmas / sqrt(d), decided exactly; a zero update or a zero rest always passes."""
        if self.norm_sq == 0 or self.rest_sq == 0:
            return True
        k2 = Fraction(min_sigmas) ** 2  # the float's exact value: every peer has the same
        if self.dot < 0:
            return False
        return self.dot * self.dot * self.numel * k2.denominator >= k2.numerator * self.norm_sq * self.rest_sq


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
    if blocks == 0:
        return [[0] * n for _ in range(n)]
    codes = torch.zeros(n, blocks * block, dtype=torch.int32)
    for i, q in enumerate(updates):
        codes[i, : q.numel] = q.values.to(torch.int32)
    codes = codes.reshape(n, blocks, block).transpose(0, 1)  # (blocks, n, block)
    # per block: sum of code products, |.| <= 4096 * 127^2 < 2^31 (the largest block bitsandbytes takes)
    block_dots = torch.bmm(codes, codes.transpose(1, 2)).to(torch.int64)  # (blocks, n, n)
    scales = torch.stack([q.scales.to(torch.int64) for q in updates])  # (n, blocks), each in [0, 2^32)
    top = [int(s) for s in scales.max(dim=1).values]
    out = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            bd = block_dots[:, i, j]
            if top[i] * top[j] * int(bd.abs().sum()) <= _INT64_MAX:  # the int64 sum cannot overflow: exact
                value = int((scales[i] * scales[j] * bd).sum())
            else:  # Python ints, exact at any size
                value = sum(a * b * c for a, b, c in zip(scales[i].tolist(), scales[j].tolist(), bd.tolist()))
            out[i][j] = out[j][i] = value
    return out


def alignments(updates: Sequence[QuantizedUpdate]) -> list[Alignment]:
    """Each update's alignment with the sum of the others (same order as `updates`)."""
    g = gram(updates)
    n = len(updates)
    total = sum(sum(row) for row in g)  # |S|^2
    row_sums = [sum(row) for row in g]  # <Δ_i, S>
    out = []
    for i in range(n):
        dot = row_sums[i] - g[i][i]  # <Δ_i, S - Δ_i>
        rest = total - 2 * row_sums[i] + g[i][i]  # |S - Δ_i|^2
        out.append(Alignment(dot=dot, norm_sq=g[i][i], rest_sq=rest, numel=updates[i].numel))
    return out


def misaligned(peers: Sequence[str], updates: Sequence[QuantizedUpdate], min_sigmas: float | None
               ) -> tuple[dict[str, str], dict[str, Alignment]]:  # fmt: skip
    """(peer -> why it is dropped, peer -> its alignment) for the kept peers `peers` with their `updates`.

    Nobody is dropped when the check is off (`min_sigmas` None or 0) or fewer than MIN_GROUP peers are kept; the
    decision is one pass over the group as it was kept (a dropped peer's update still counts in the others' R_i),
    the same on every honest peer."""
    if len(peers) != len(updates):
        raise ValueError(f"{len(peers)} peers but {len(updates)} updates")
    if not min_sigmas or len(peers) < MIN_GROUP:
        return {}, {}
    found = dict(zip(peers, alignments(updates)))
    dropped = {}
    for p, a in found.items():
        if not a.passes(min_sigmas):
            dropped[p] = (f"update not aligned with the group's (cos {a.cos:.4f} < {min_sigmas / math.sqrt(a.numel):.4f}"
                          f" = {min_sigmas:g}/sqrt({a.numel}))")
    return dropped, found
