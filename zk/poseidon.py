"""Poseidon over the BN254 scalar field, equal to ZoKrates' stdlib `hashes/poseidon/poseidon` (circomlib's).

Round constants and MDS matrices come from zk/poseidon_constants.json, read out of ZoKrates' own stdlib by
`python -m zk constants`; tests/integration/test_zk_circuit.py checks the hashes against the circuit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from swarm.contribution import FIELD_MODULUS

CONSTANTS_PATH = Path(__file__).with_name("poseidon_constants.json")
FULL_ROUNDS = 8
MAX_INPUTS = 6


@cache
def _params(t: int) -> tuple[int, list[int], list[list[int]]]:
    data = json.loads(CONSTANTS_PATH.read_text())
    partial = int(data["partial_rounds"][str(t)])
    c = [int(x, 16) for x in data["C"][str(t)]]
    m = [[int(x, 16) for x in row] for row in data["M"][str(t)]]
    return partial, c, m


def poseidon(inputs: Sequence[int]) -> int:
    """Poseidon hash of 1 to 6 field elements (state[0] = 0 capacity, x**5 S-box, 8 full rounds)."""
    n = len(inputs)
    if not 1 <= n <= MAX_INPUTS:
        raise ValueError(f"Poseidon takes 1 to {MAX_INPUTS} inputs, got {n}")
    p = FIELD_MODULUS
    t = n + 1
    partial, c, m = _params(t)
    state = [0, *(int(x) % p for x in inputs)]
    half = FULL_ROUNDS // 2
    for r in range(FULL_ROUNDS + partial):
        base = r * t
        state = [(x + c[base + i]) % p for i, x in enumerate(state)]
        if r < half or r >= half + partial:
            state = [pow(x, 5, p) for x in state]
        else:
            state[0] = pow(state[0], 5, p)
        state = [sum(mi * x for mi, x in zip(row, state)) % p for row in m]
    return state[0]
