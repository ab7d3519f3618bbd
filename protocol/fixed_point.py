"""The numbers the quantizer, the commitment and the circuit agree on (no torch here: hashing workers import it)."""

BLOCK_SIZE = 256
"""Values per block (one scale each); bitsandbytes takes 64, 128, ..., 4096."""
VALID_BLOCK_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
SCALE_FRAC_BITS = 32
"""A scale S means a step of S / 2**SCALE_FRAC_BITS: the value of code v is v * S / 2**SCALE_FRAC_BITS."""
SCALE_BITS = 32
SCALE_MAX = (1 << SCALE_BITS) - 1
"""Largest scale the circuit accepts (a u32): elements up to ~127 in magnitude."""
QMAX = 127
"""Codes are integers in [-QMAX, QMAX]."""
