"""What crosses the wire when a stage averages: our int8 quantizer (zk.quantize) as a hivemind compression.

hivemind picks a receiver's decoder from a fixed protobuf enum, so the int8 codec takes the BLOCKWISE_8BIT tag in
this process (hivemind 1.1.12's own blockwise decoder fails under numpy 2 anyway). Both codecs count the bytes they
put on and take off the wire, per process: each averager runs in its own process, so its counts are its own.
"""

from __future__ import annotations

import threading

import torch
from hivemind.compression import serialization
from hivemind.compression.base import CompressionBase, CompressionInfo, NoCompression
from hivemind.proto import runtime_pb2

from zk.quantize import BLOCK_SIZE, QuantizationError, QuantizedUpdate, dequantize_update, quantize_update

WIRE_MAGIC = b"SWQ1"  # the first bytes of QuantizedUpdate.to_bytes()


class WireCounter:
    """Payload bytes compressed for sending and decompressed on receipt in this process (framing not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.received = 0

    def add(self, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.received += received

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.sent, self.received


WIRE = WireCounter()


class Int8Compression(CompressionBase):
    """Blockwise int8 codes in [-127, 127] with fixed-point absmax scales: the quantizer the proofs speak of."""

    compression_type = runtime_pb2.BLOCKWISE_8BIT

    def compress(
        self, tensor: torch.Tensor, info: CompressionInfo, allow_inplace: bool = False
    ) -> runtime_pb2.Tensor:
        dtype_name = str(tensor.dtype).replace("torch.", "")
        buffer = quantize_update(tensor.detach().float()).to_bytes()
        WIRE.add(sent=len(buffer))
        return runtime_pb2.Tensor(
            buffer=buffer,
            size=tensor.shape,
            requires_grad=tensor.requires_grad,
            dtype=dtype_name,
            compression=self.compression_type,
        )

    def extract(self, serialized_tensor: runtime_pb2.Tensor) -> torch.Tensor:
        buffer = serialized_tensor.buffer
        WIRE.add(received=len(buffer))
        if not buffer.startswith(WIRE_MAGIC):
            raise QuantizationError(
                "received a BLOCKWISE_8BIT payload that is not swarm's int8 format: the sender runs a plain hivemind "
                "or another version; every peer of a stage must run the same swarm version"
            )
        tensor = dequantize_update(QuantizedUpdate.from_bytes(buffer))
        return tensor.reshape(tuple(serialized_tensor.size)).to(getattr(torch, serialized_tensor.dtype))

    def estimate_compression_ratio(self, info: CompressionInfo) -> float:
        return (1.0 + 4.0 / BLOCK_SIZE) / 4.0  # int8 codes plus one uint32 scale per block, against fp32


class CountingNoCompression(NoCompression):
    """hivemind's uncompressed codec, counting bytes like Int8Compression does (the baseline of the benchmark)."""

    def compress(
        self, tensor: torch.Tensor, info: CompressionInfo, allow_inplace: bool = False
    ) -> runtime_pb2.Tensor:
        message = super().compress(tensor, info, allow_inplace)
        WIRE.add(sent=len(message.buffer))
        return message

    def extract(self, serialized_tensor: runtime_pb2.Tensor) -> torch.Tensor:
        WIRE.add(received=len(serialized_tensor.buffer))
        return super().extract(serialized_tensor)


def compression_for(name: str) -> CompressionBase:
    """The codec for a `compression` setting: "int8" (default on the averaging wire) or "none"."""
    register_codecs()
    if name == "int8":
        return serialization._BASE_COMPRESSION_TYPES["BLOCKWISE_8BIT"]
    if name == "none":
        return serialization._BASE_COMPRESSION_TYPES["NONE"]
    raise ValueError(f"unknown compression {name!r}: use 'int8' or 'none'")


def register_codecs() -> None:
    """Make hivemind decode BLOCKWISE_8BIT with Int8Compression and count uncompressed bytes (idempotent)."""
    table = serialization._BASE_COMPRESSION_TYPES
    if not isinstance(table["BLOCKWISE_8BIT"], Int8Compression):
        table["BLOCKWISE_8BIT"] = Int8Compression()
    if not isinstance(table["NONE"], CountingNoCompression):
        table["NONE"] = CountingNoCompression()
    _preload_bitsandbytes()


def _preload_bitsandbytes() -> None:
    """Import bitsandbytes (seconds, once) here, before hivemind forks the averager: a first import inside the
    averager's process would stall its first all-reduce past the peers' chunk timeouts."""
    import bitsandbytes.functional  # noqa: F401
