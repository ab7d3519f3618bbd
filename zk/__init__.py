"""Zero-knowledge proofs that a peer's quantized update is bounded and is what it committed to (zk/README.md)."""

from zk.quantize import (
    BLOCK_SIZE,
    SCALE_FRAC_BITS,
    SCALE_MAX,
    QuantizationError,
    QuantizedUpdate,
    dequantize_update,
    quantize_update,
)

__all__ = [
    "BLOCK_SIZE",
    "SCALE_FRAC_BITS",
    "SCALE_MAX",
    "QuantizationError",
    "QuantizedUpdate",
    "dequantize_update",
    "quantize_update",
]
