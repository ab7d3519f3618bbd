"""Poseidon over the BN254 scalar field, equal to ZoKrates' stdlib `hashes/poseidon/poseidon` (circomlib's).

Round constants and MDS matrices come from zk/poseidon_constants.json, read out of ZoKrates' own stdlib by
`python -m zk constants`. `poseidon` runs the native extension `zk._poseidon` (zk/_poseidon.c, built at install
time) when it is there, else `poseidon_python`, the same sparse form (Poseidon paper appendix B) in Python;
`poseidon_reference` is the round-by-round definition. Tests check all three against each other on random
inputs and edge cases, and against the circuit itself (zokrates-js computing the stdlib's `poseidon`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from protocol.contribution import FIELD_MODULUS

try:
    from zk import _poseidon as _native
except ImportError:  # no C compiler at install time: the pure-Python form below does the same, slower
    _native = None

CONSTANTS_PATH = Path(__file__).with_name("poseidon_constants.json")
FULL_ROUNDS = 8
MAX_INPUTS = 6
P = FIELD_MODULUS
Matrix = list[list[int]]


@cache
def _params(t: int) -> tuple[int, list[int], Matrix]:
    data = json.loads(CONSTANTS_PATH.read_text())
    partial = int(data["partial_rounds"][str(t)])
    c = [int(x, 16) for x in data["C"][str(t)]]
    m = [[int(x, 16) for x in row] for row in data["M"][str(t)]]
    return partial, c, m


def _width(inputs: Sequence[int]) -> int:
    if not 1 <= len(inputs) <= MAX_INPUTS:
        raise ValueError(f"Poseidon takes 1 to {MAX_INPUTS} inputs, got {len(inputs)}")
    return len(inputs) + 1


def poseidon_reference(inputs: Sequence[int]) -> int:
    """The definition: per round add constants, S-box x**5 (all elements in full rounds, the first in partial
    ones), multiply by the MDS matrix; state[0] = 0 is the capacity, the hash is state[0] at the end."""
    t = _width(inputs)
    partial, c, m = _params(t)
    state = [0, *(int(x) % P for x in inputs)]
    half = FULL_ROUNDS // 2
    for r in range(FULL_ROUNDS + partial):
        state = [(x + c[r * t + i]) % P for i, x in enumerate(state)]
        if r < half or r >= half + partial:
            state = [pow(x, 5, P) for x in state]
        else:
            state[0] = pow(state[0], 5, P)
        state = [sum(mi * x for mi, x in zip(row, state)) % P for row in m]
    return state[0]


def native_available() -> bool:
    """Whether the C extension zk._poseidon was built (`pip install -e .` builds it when a C compiler exists)."""
    return _native is not None


@cache
def _native_ready(t: int) -> bool:
    """Hand the sparse-form constants of width t to the extension once; False if there is none."""
    if _native is None:
        return False
    opt = _optimized(t)
    half = FULL_ROUNDS // 2
    full = [*range(half), *range(half + opt.partial, FULL_ROUNDS + opt.partial)]
    partial = range(half, half + opt.partial)
    parts = [opt.constants[r][i] for r in full for i in range(t)]
    parts += [x for row in opt.mds for x in row] + [x for row in opt.pre_sparse for x in row]
    parts += list(opt.first_partial_constant) + [opt.post_sbox[r] for r in partial] + [opt.sparse[r][0] for r in partial]
    parts += [x for r in partial for x in opt.sparse[r][1]] + [x for r in partial for x in opt.sparse[r][2]]
    _native.load(t, opt.partial, b"".join(to_le(x) for x in parts))
    return True


def to_le(x: int) -> bytes:
    """A field element (reduced mod P) as the 32 little-endian bytes the extension takes."""
    return (int(x) % P).to_bytes(32, "little")


def poseidon(inputs: Sequence[int]) -> int:
    """Poseidon hash of 1 to 6 field elements (native when built, else `poseidon_python`)."""
    t = _width(inputs)
    if _native_ready(t):
        return int.from_bytes(_native.hash(t - 1, b"".join(to_le(x) for x in inputs)), "little")
    return poseidon_python(inputs)


def poseidon_many(width: int, flat: Sequence[int]) -> list[int]:
    """Poseidon of each consecutive group of `width` elements of `flat`, in one native call when built."""
    if not 1 <= width <= MAX_INPUTS or len(flat) % width:
        raise ValueError(f"{len(flat)} elements are not groups of {width} Poseidon inputs (1 to {MAX_INPUTS})")
    if not _native_ready(width + 1):
        return [poseidon_python(flat[i : i + width]) for i in range(0, len(flat), width)]
    out = _native.hash(width, b"".join(to_le(x) for x in flat))
    return [int.from_bytes(out[i : i + 32], "little") for i in range(0, len(out), 32)]


def poseidon_python(inputs: Sequence[int]) -> int:
    """The sparse form in pure Python: equal to `poseidon_reference`, about 2.5x faster."""
    t = _width(inputs)
    opt = _optimized(t)
    half = FULL_ROUNDS // 2
    s = [0, *(int(x) % P for x in inputs)]
    for r in range(half):
        s = [pow(x + ci, 5, P) for x, ci in zip(s, opt.constants[r])]
        s = [sum(map(int.__mul__, row, s)) % P for row in (opt.mds if r < half - 1 else opt.pre_sparse)]
    s0, *rest = [x + ci for x, ci in zip(s, opt.first_partial_constant)]
    for r in range(half, half + opt.partial):
        x = pow(s0, 5, P) + opt.post_sbox[r]
        a00, w, v = opt.sparse[r]
        s0 = (a00 * x + sum(map(int.__mul__, w, rest))) % P
        rest = [(y + vi * x) % P for y, vi in zip(rest, v)]
    s = [s0, *rest]
    for r in range(half + opt.partial, FULL_ROUNDS + opt.partial):
        s = [pow(x + ci, 5, P) for x, ci in zip(s, opt.constants[r])]
        s = [sum(map(int.__mul__, row, s)) % P for row in opt.mds]
    return s[0]


class _Optimized:
    """Equivalent constants: partial rounds keep one constant (added after the S-box) and a sparse matrix."""

    def __init__(self, t: int) -> None:
        self.partial, c, self.mds = _params(t)
        half = FULL_ROUNDS // 2
        first, last = half, half + self.partial - 1
        rounds = FULL_ROUNDS + self.partial
        ct = [list(c[r * t : (r + 1) * t]) for r in range(rounds)]
        self.post_sbox = [0] * rounds
        # Move partial rounds' constants back: M z + c = M (z + M^-1 c); all but element 0 of M^-1 c passes
        # the previous partial S-box unchanged, element 0 is added right after it.
        m_inv = _inverse(self.mds)
        for r in range(last, first, -1):
            u = _mat_vec(m_inv, ct[r])
            ct[r - 1] = [(x + (y if i else 0)) % P for i, (x, y) in enumerate(zip(ct[r - 1], u))]
            self.post_sbox[r - 1], ct[r] = u[0], [0] * t
        # Factor each partial round's matrix as sparse S times diag(1, X); diag(1, X) commutes with a partial
        # S-box, so it moves into the previous round's matrix, ending in the last full round's (pre_sparse).
        acc = [list(row) for row in self.mds]
        self.sparse: list[tuple[int, list[int], list[int]]] = [(0, [], [])] * rounds
        for r in range(last, first - 1, -1):
            hat = [row[1:] for row in acc[1:]]
            hat_inv = _inverse(hat)
            w = [sum(acc[0][1 + j] * hat_inv[j][i] for j in range(t - 1)) % P for i in range(t - 1)]
            self.sparse[r] = (acc[0][0], w, [acc[1 + i][0] for i in range(t - 1)])
            d = [[1] + [0] * (t - 1)] + [[0, *row] for row in hat]
            if r == first:
                self.first_partial_constant = _mat_vec(d, ct[first])
            acc = _mat_mul(d, self.mds)
        self.pre_sparse = acc
        self.constants = ct


@cache
def _optimized(t: int) -> _Optimized:
    return _Optimized(t)


def _inverse(a: Matrix) -> Matrix:
    """Gauss-Jordan inverse modulo P (the MDS matrix and its minors are invertible by construction)."""
    n = len(a)
    m = [[*row, *(int(i == j) for j in range(n))] for i, row in enumerate(a)]
    for col in range(n):
        piv = next(r for r in range(col, n) if m[r][col] % P)
        m[col], m[piv] = m[piv], m[col]
        inv = pow(m[col][col], P - 2, P)
        m[col] = [x * inv % P for x in m[col]]
        for r in range(n):
            if r != col and m[r][col]:
                f = m[r][col]
                m[r] = [(x - f * y) % P for x, y in zip(m[r], m[col])]
    return [row[n:] for row in m]


def _mat_vec(a: Matrix, v: list[int]) -> list[int]:
    return [sum(x * y for x, y in zip(row, v)) % P for row in a]


def _mat_mul(a: Matrix, b: Matrix) -> Matrix:
    cols = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) % P for col in cols] for row in a]
