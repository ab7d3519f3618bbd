"""Zero-knowledge proofs that a peer's quantized update is bounded and is what it committed to (zk/README.md).

The quantizer's names are re-exported lazily, so that importing a torch-free part (e.g. zk.leaves in a
hashing process) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BLOCK_SIZE": "protocol.fixed_point",
    "SCALE_FRAC_BITS": "protocol.fixed_point",
    "SCALE_MAX": "protocol.fixed_point",
    "QuantizationError": "zk.quantize",
    "QuantizedUpdate": "zk.quantize",
    "dequantize_update": "zk.quantize",
    "quantize_update": "zk.quantize",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zk' has no attribute {name!r}")
