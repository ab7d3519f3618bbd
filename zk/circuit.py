"""The chunk circuit's shape (chunk size, block size, depth) and its ZoKrates source for that shape."""

from __future__ import annotations

import hashlib
import math
import re
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.fixed_point import BLOCK_SIZE, SCALE_MAX, VALID_BLOCK_SIZES

CIRCUIT_PATH = Path(__file__).with_name("circuits") / "chunk.zok"
VALUES_PER_FIELD = 31
SCALES_PER_FIELD = 7
RATE = 5
NORM_BITS = 128
CHUNK_BITS = 24


class CircuitParams(BaseModel):
    """The constants a chunk circuit is compiled for; an experiment names its verifier, i.e. these."""

    model_config = ConfigDict(frozen=True)

    chunk: int = Field(default=1024, ge=64, le=1 << 14, description="int8 values per chunk")
    block: int = Field(default=BLOCK_SIZE, description="values per quantization block; divides chunk")
    depth: int = Field(default=20, ge=1, le=CHUNK_BITS, description="Merkle depth: at most 2**depth chunks")
    scale_max: int = Field(default=SCALE_MAX, ge=1, le=SCALE_MAX)

    @model_validator(mode="after")
    def _block_divides_chunk(self) -> CircuitParams:
        if self.block not in VALID_BLOCK_SIZES or self.chunk % self.block:
            raise ValueError(f"block size {self.block} must be one of {VALID_BLOCK_SIZES} and divide the chunk "
                             f"size {self.chunk}")
        return self

    @property
    def scales_per_chunk(self) -> int:
        return self.chunk // self.block

    @property
    def max_chunks(self) -> int:
        return 1 << self.depth

    @property
    def packed_len(self) -> int:
        """Field elements the leaf hash absorbs: packed bytes, then packed scales."""
        return math.ceil(self.chunk / VALUES_PER_FIELD) + math.ceil(self.scales_per_chunk / SCALES_PER_FIELD)

    def num_chunks(self, numel: int) -> int:
        return max(1, math.ceil(numel / self.chunk))

    def source(self) -> str:
        """The ZoKrates source of `zk/circuits/chunk.zok` with this shape's constants written in."""
        return _render(CIRCUIT_PATH.read_text(), self)

    @cached_property
    def circuit_id(self) -> str:
        """Short hash of the exact source: keys and verifiers are stored under it."""
        return hashlib.sha256(self.source().encode()).hexdigest()[:16]


DEFAULT_PARAMS = CircuitParams()


def _render(template: str, p: CircuitParams) -> str:
    values = {"CHUNK": p.chunk, "BLOCK": p.block, "DEPTH": p.depth, "SCALE_MAX": p.scale_max}
    for name, value in values.items():
        template, n = re.subn(rf"^const u32 {name} = \d+;", f"const u32 {name} = {value};", template, flags=re.MULTILINE)
        if n != 1:
            raise ValueError(f"zk/circuits/chunk.zok must declare `const u32 {name} = ...;` exactly once")
    return template
SMALL_PARAMS = CircuitParams(chunk=128, block=64, depth=8, scale_max=(1 << 31) - 1)
"""A small shape (about 7k constraints) for tests and quick benchmarks: same statement, fewer values."""
