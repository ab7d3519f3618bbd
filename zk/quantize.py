"""The one int8 quantizer of an update: used on the averaging wire and inside the proofs.

Blockwise absmax through bitsandbytes with a linear code, so every code is a plain integer in [-127, 127];
one fixed-point scale per block (an integer, units of 2**-SCALE_FRAC_BITS), rounded up (zk/README.md).
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from protocol.fixed_point import BLOCK_SIZE, QMAX, SCALE_BITS, SCALE_FRAC_BITS, SCALE_MAX, VALID_BLOCK_SIZES

logger = logging.getLogger(__name__)

__all__ = ["BLOCK_SIZE", "QMAX", "SCALE_BITS", "SCALE_FRAC_BITS", "SCALE_MAX", "VALID_BLOCK_SIZES", "QuantizationError",
           "QuantizedUpdate", "dequantize_update", "fixed_point_norm_sq", "fixed_point_scales", "quantize_update"]

_MAGIC = b"SWQ1"
_HEADER = struct.Struct("<4sQIB")  # magic, numel, block_size, ndim


class QuantizationError(ValueError):
    """An update cannot be quantized (or its wire form decoded); the message says why and what to do."""


def _linear_code() -> torch.Tensor:
    """Code index i in [0, 254] stands for (i - 127) / 127; index 255 repeats 1.0 so the map stays sorted."""
    code = torch.empty(256, dtype=torch.float32)
    code[:255] = torch.arange(-QMAX, QMAX + 1, dtype=torch.float32) / QMAX
    code[255] = 1.0
    return code


_CODE = _linear_code()


@dataclass(frozen=True)
class QuantizedUpdate:
    """An update in int8 codes with one fixed-point scale per block."""

    values: torch.Tensor  # int8, flattened, len == numel, each in [-127, 127]
    scales: torch.Tensor  # int64, one per block, each in [0, SCALE_MAX]
    numel: int
    shape: tuple[int, ...]
    block_size: int = BLOCK_SIZE

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.numel / self.block_size) if self.numel else 0

    def norm_sq(self) -> int:
        """Exact squared L2 norm of the dequantized update in units of 2**(-2*SCALE_FRAC_BITS)."""
        return fixed_point_norm_sq(self.values, self.scales, self.block_size)

    def to_bytes(self) -> bytes:
        """Compact wire form: header, shape, int8 codes, then scales as little-endian uint32."""
        header = _HEADER.pack(_MAGIC, self.numel, self.block_size, len(self.shape))
        shape = struct.pack(f"<{len(self.shape)}Q", *self.shape)
        values = self.values.numpy().astype(np.int8, copy=False).tobytes()
        scales = self.scales.numpy().astype("<u4").tobytes()
        return header + shape + values + scales

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantizedUpdate:
        """Parse `to_bytes()`; anything malformed raises QuantizationError."""
        try:
            magic, numel, block_size, ndim = _HEADER.unpack_from(data, 0)
            if magic != _MAGIC:
                raise QuantizationError("not a quantized update (bad magic); was it sent by a different version?")
            off = _HEADER.size
            shape = tuple(struct.unpack_from(f"<{ndim}Q", data, off))
            off += 8 * ndim
        except struct.error as exc:
            raise QuantizationError(f"truncated quantized update header: {exc}") from exc
        if math.prod(shape) != numel or block_size not in VALID_BLOCK_SIZES:
            raise QuantizationError(f"inconsistent quantized update header: shape {shape}, numel {numel}, "
                                    f"block size {block_size}")
        num_blocks = math.ceil(numel / block_size) if numel else 0
        if len(data) != off + numel + 4 * num_blocks:
            raise QuantizationError(f"quantized update has {len(data)} bytes, expected {off + numel + 4 * num_blocks}")
        values = np.frombuffer(data, dtype=np.int8, count=numel, offset=off)
        if numel and values.min() < -QMAX:
            raise QuantizationError("quantized update holds the code -128, outside [-127, 127]")
        scales = np.frombuffer(data, dtype="<u4", count=num_blocks, offset=off + numel).astype(np.int64)
        return cls(torch.from_numpy(values.copy()), torch.from_numpy(scales), numel, shape, block_size)


def fixed_point_scales(absmax: torch.Tensor) -> torch.Tensor:
    """Smallest integers S with S * 127 >= absmax * 2**SCALE_FRAC_BITS (exact: all in float64 below 2**53)."""
    target = absmax.to(torch.float64) * float(1 << SCALE_FRAC_BITS)
    s = torch.ceil(target / QMAX)
    s = torch.where((s - 1) * QMAX >= target, s - 1, s)
    s = torch.where(s * QMAX < target, s + 1, s)
    return s.clamp_min(0).to(torch.int64)


def quantize_update(t: torch.Tensor, block_size: int = BLOCK_SIZE) -> QuantizedUpdate:
    """Quantize a float tensor blockwise to int8 codes in [-127, 127] with fixed-point absmax scales."""
    if block_size not in VALID_BLOCK_SIZES:
        raise QuantizationError(f"block size {block_size} is not one bitsandbytes takes: {VALID_BLOCK_SIZES}")
    if not t.is_floating_point():
        raise QuantizationError(f"can only quantize a floating-point update, got {t.dtype}")
    flat = t.detach().reshape(-1).to("cpu", torch.float32).contiguous()
    if not bool(torch.isfinite(flat).all()):
        raise QuantizationError("the update holds NaN or inf; skip this round's update instead of sending it")
    numel = flat.numel()
    if numel == 0:
        return QuantizedUpdate(torch.zeros(0, dtype=torch.int8), torch.zeros(0, dtype=torch.int64), 0,
                               tuple(t.shape), block_size)
    import bitsandbytes.functional as bnbf  # imported late: it logs a harmless warning at import on CPU

    codes, state = bnbf.quantize_blockwise(flat, code=_CODE, blocksize=block_size)
    values = (codes.to(torch.int16) - QMAX).clamp_(max=QMAX).to(torch.int8)  # index 255 is 1.0 again
    scales = fixed_point_scales(state.absmax)
    if int(scales.max()) > SCALE_MAX:
        raise QuantizationError(f"an update element of magnitude {float(state.absmax.max()):.3g} is beyond what a "
                                f"scale can hold (~{QMAX * SCALE_MAX / 2**SCALE_FRAC_BITS:.0f}); clip the update")
    return QuantizedUpdate(values, scales, numel, tuple(t.shape), block_size)


def dequantize_update(q: QuantizedUpdate) -> torch.Tensor:
    """The float32 update a quantized update stands for, in its original shape."""
    if q.numel == 0:
        return torch.zeros(q.shape, dtype=torch.float32)
    step = (q.scales.to(torch.float64) / float(1 << SCALE_FRAC_BITS)).repeat_interleave(q.block_size)[: q.numel]
    return (q.values.to(torch.float64) * step).to(torch.float32).reshape(q.shape)


def fixed_point_norm_sq(values: torch.Tensor, scales: torch.Tensor, block_size: int) -> int:
    """sum over blocks of S_b**2 * sum(v**2 in block b): exact integer, as the circuit computes it."""
    v = values.to(torch.int64)
    pad = (-v.numel()) % block_size
    if pad:
        v = torch.cat([v, torch.zeros(pad, dtype=torch.int64)])
    block_sums = (v * v).reshape(-1, block_size).sum(dim=1).tolist()
    return sum(int(s) * int(s) * b for s, b in zip(scales.tolist(), block_sums))
