"""The shared int8 quantizer: range, round-trip error bound, wire form, exact fixed-point norm."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from zk.quantize import (
    QMAX,
    SCALE_FRAC_BITS,
    QuantizationError,
    QuantizedUpdate,
    dequantize_update,
    fixed_point_scales,
    quantize_update,
)


@pytest.mark.parametrize("block_size", [64, 256, 4096])
@pytest.mark.parametrize("shape", [(1000,), (7, 33), (5, 4, 3)])
def test_round_trip_error_is_within_half_a_step_plus_scale_rounding(shape, block_size):
    # bitsandbytes' CPU nearest-code search is off by up to ~0.2% of a step next to midpoints: allow 0.51 step.
    torch.manual_seed(0)
    t = torch.randn(shape) * 0.01
    q = quantize_update(t, block_size)
    back = dequantize_update(q)
    assert back.shape == t.shape and back.dtype == torch.float32
    flat, err = t.reshape(-1), (back - t).reshape(-1).abs()
    for b in range(q.num_blocks):
        blk = slice(b * block_size, (b + 1) * block_size)
        absmax = float(flat[blk].abs().max())
        bound = absmax / QMAX * 0.51 + QMAX * 2.0**-SCALE_FRAC_BITS
        assert float(err[blk].max()) <= bound


def test_values_are_int8_in_symmetric_range_and_absmax_maps_to_127():
    t = torch.tensor([-3.0, 3.0, 0.0, 1.5] * 64)
    q = quantize_update(t, 64)
    assert q.values.dtype == torch.int8 and q.values.numel() == t.numel()
    assert int(q.values.min()) == -QMAX and int(q.values.max()) == QMAX
    assert q.scales.dtype == torch.int64


def test_scales_are_rounded_up_to_the_smallest_sufficient_integer():
    absmax = torch.tensor([0.0, 1e-9, 0.01, 1.0, 3.14159], dtype=torch.float32)
    s = fixed_point_scales(absmax)
    for a, si in zip(absmax.tolist(), s.tolist()):
        exact = Fraction(a) * 2**SCALE_FRAC_BITS / QMAX
        assert si >= exact and si - 1 < exact


def test_norm_sq_is_exact_fixed_point_of_the_dequantized_update():
    torch.manual_seed(1)
    q = quantize_update(torch.randn(1000) * 0.1, 256)
    step = [Fraction(s, 2**SCALE_FRAC_BITS) for s in q.scales.tolist()]
    exact = sum((v * step[i // 256]) ** 2 for i, v in enumerate(q.values.tolist()))
    assert Fraction(q.norm_sq(), 2 ** (2 * SCALE_FRAC_BITS)) == exact
    approx = float(dequantize_update(q).double().pow(2).sum())
    assert math.isclose(q.norm_sq() / 2 ** (2 * SCALE_FRAC_BITS), approx, rel_tol=1e-6)


def test_wire_form_round_trips_and_is_compact():
    t = torch.randn(3, 500)
    q = quantize_update(t)
    data = q.to_bytes()
    assert len(data) < t.numel() + 4 * q.num_blocks + 64
    r = QuantizedUpdate.from_bytes(data)
    assert r.shape == q.shape and r.block_size == q.block_size and r.numel == q.numel
    assert torch.equal(r.values, q.values) and torch.equal(r.scales, q.scales)


@pytest.mark.parametrize("mangle", [lambda d: d[:10], lambda d: b"XXXX" + d[4:], lambda d: d + b"\0"])
def test_malformed_wire_form_raises_quantization_error(mangle):
    data = quantize_update(torch.randn(300)).to_bytes()
    with pytest.raises(QuantizationError):
        QuantizedUpdate.from_bytes(mangle(data))


def test_bad_updates_are_refused_with_a_clear_error():
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(QuantizationError, match="floating-point"):
        quantize_update(torch.arange(5))
    with pytest.raises(QuantizationError, match="block size"):
        quantize_update(torch.randn(10), block_size=100)
    with pytest.raises(QuantizationError, match="clip"):
        quantize_update(torch.tensor([1e6, 0.0]))


def test_empty_update_round_trips():
    q = quantize_update(torch.zeros(0))
    assert q.norm_sq() == 0 and dequantize_update(q).numel() == 0
    assert QuantizedUpdate.from_bytes(q.to_bytes()).numel == 0
