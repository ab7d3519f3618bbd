"""The native Poseidon (zk/_poseidon.c) against the pure-Python forms: random inputs, edge cases, whole leaves and
commitments, for each of the extension's paths (portable C, and x86-64 BMI2/ADX assembly where the CPU has it).
The circuit itself is the judge in tests/integration/test_zk_proofs.py."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from protocol.contribution import FIELD_MODULUS as P
from zk import leaves
from zk import poseidon as pos
from zk.circuit import CircuitParams
from zk.commit import commit_update, verify_opening
from zk.quantize import quantize_update

pytestmark = pytest.mark.skipif(not pos.native_available(), reason="zk._poseidon was not built (no C compiler)")

EDGES = [0, 1, 2, P - 1, P - 2, 2**64 - 1, 2**64, 2**128 - 1, 2**248 - 1, P // 2]
PATHS = ["portable", "adx"]


@pytest.fixture(params=PATHS)
def path(request):
    """Run the test with one permutation of the extension (the import picks the fastest the CPU has)."""
    native = pos._native
    chosen = native.impl()
    try:
        native.use(request.param)
    except ValueError:
        pytest.skip(f"no {request.param} path on this CPU")
    yield request.param
    native.use(chosen)


def test_the_fastest_path_is_chosen_at_import_and_unknown_paths_are_refused():
    with open("/proc/cpuinfo") as f:
        flags = next((line.split() for line in f if line.startswith("flags")), [])
    expected = "adx" if platform.machine() == "x86_64" and {"bmi2", "adx"} <= set(flags) else "portable"
    assert pos._native.impl() == expected
    with pytest.raises(ValueError, match="no Poseidon path avx9"):
        pos._native.use("avx9")
    assert pos._native.impl() == expected


@pytest.mark.parametrize("n", range(1, 7))
def test_native_equals_python_and_the_definition_on_random_and_edge_inputs(n, path):
    rng = np.random.default_rng(100 + n)
    cases = [[int.from_bytes(rng.bytes(32), "big") % P for _ in range(n)] for _ in range(20)]
    cases += [[EDGES[(i + k) % len(EDGES)] for k in range(n)] for i in range(len(EDGES))]
    cases += [[P + 5] * n, [-1] * n]  # out-of-field inputs are reduced mod P, as the Python form does
    for xs in cases:
        assert pos.poseidon(xs) == pos.poseidon_python(xs) == pos.poseidon_reference(xs), xs
    flat = [x for xs in cases for x in xs]
    assert pos.poseidon_many(n, flat) == [pos.poseidon_python(xs) for xs in cases]


def test_poseidon_many_refuses_ragged_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        pos.poseidon_many(4, [1, 2, 3])


def test_the_paths_agree_on_many_random_inputs():
    """Thousands of random hashes: the assembly's lazy reduction (elements below 2p) against the portable form."""
    native = pos._native
    chosen = native.impl()
    try:
        native.use("adx")
    except ValueError:
        pytest.skip("no adx path on this CPU")
    rng = np.random.default_rng(7)
    try:
        for n in (1, 2, 4, 6):
            raw = rng.bytes(32 * n * 3000)
            data = b"".join(pos.to_le(int.from_bytes(raw[i : i + 32], "little")) for i in range(0, len(raw), 32))
            native.use("adx")
            fast = native.hash(n, data)
            native.use("portable")
            assert native.hash(n, data) == fast
    finally:
        native.use(chosen)


@pytest.mark.parametrize("chunk,block", [(128, 64), (1024, 256), (256, 256), (4096, 256)])
def test_native_leaves_equal_python_leaves(chunk, block, path):
    rng = np.random.default_rng(chunk)
    per = chunk // block
    for scales_kind in ("random", "extremes"):
        values = rng.integers(-127, 128, 3 * chunk, dtype=np.int8)
        values[:chunk] = 127 if scales_kind == "extremes" else values[:chunk]
        scales = ([int(s) for s in rng.integers(0, 2**32, 3 * per)] if scales_kind == "random"
                  else [2**32 - 1, 0] * (3 * per // 2) + [1] * (3 * per % 2))
        native = leaves.leaf_nodes(values, scales, chunk, block)
        python = leaves._leaf_batch(values.tobytes(), scales, chunk, block)
        assert native == python
        assert leaves.leaf_nodes(values, scales, chunk, block, processes=2) == python


def test_commitment_is_the_same_with_and_without_the_extension():
    params = CircuitParams(chunk=128, block=64, depth=8)
    torch.manual_seed(4)
    q = quantize_update(torch.randn(5000) * 0.01, params.block)
    native = commit_update(q, params)
    threaded = commit_update(q, params, processes=2)
    pos._native_ready.cache_clear()
    saved = pos._native, leaves._native_fits
    try:
        pos._native, leaves._native_fits = None, (lambda scales: False)
        python = commit_update(q, params)
        assert not verify_opening(native.root + 1, native.norm_sq, native.opening(3), params)
        opening_ok_python = verify_opening(native.root, native.norm_sq, native.opening(3), params)
    finally:
        pos._native, leaves._native_fits = saved
        pos._native_ready.cache_clear()
    assert (native.root, native.norm_sq) == (python.root, python.norm_sq) == (threaded.root, threaded.norm_sq)
    assert native.tree.levels == python.tree.levels
    assert opening_ok_python and verify_opening(native.root, native.norm_sq, native.opening(3), params)


def test_scales_outside_u32_take_the_python_path():
    values = np.zeros(128, dtype=np.int8)
    values[0] = 3
    big = [2**40, 1]
    assert leaves.leaf_of(values, big, 64) == (leaves.leaf_hash(leaves.pack_chunk(values, big)),
                                               leaves.chunk_norm_sq(values, big, 64))
