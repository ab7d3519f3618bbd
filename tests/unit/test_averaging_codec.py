"""The averaging wire codecs (swarm.rounds.compression), in-process: int8 through zk.quantize, byte counts, fallbacks."""

from __future__ import annotations

import pytest
import torch
from hivemind.compression import deserialize_torch_tensor, serialize_torch_tensor
from hivemind.compression.base import CompressionInfo
from hivemind.compression.quantization import BlockwiseQuantization
from hivemind.proto import runtime_pb2

from swarm.rounds.compression import WIRE, Int8Compression, compression_for
from zk.quantize import BLOCK_SIZE, QuantizationError


def test_int8_payload_decodes_within_half_a_level_per_block():
    codec = compression_for("int8")
    x = torch.randn(3, 1000) * torch.logspace(-3, 1, 3).unsqueeze(1)  # blocks of very different magnitudes
    message = codec.compress(x, CompressionInfo.from_tensor(x))
    y = deserialize_torch_tensor(message)  # through hivemind's table, as a receiving peer decodes it
    assert y.shape == x.shape and y.dtype == x.dtype
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    levels = torch.cat(
        [torch.full((len(b),), float(b.abs().max()) / 127) for b in torch.split(flat_x, BLOCK_SIZE)]
    )
    assert bool(((flat_x - flat_y).abs() <= levels * 0.51).all())  # bitsandbytes rounds to ~half a level
    assert len(message.buffer) < x.numel() * 1.1  # about a byte a value, not four


def test_codecs_count_the_bytes_they_send_and_receive():
    x = torch.randn(5000)
    for name in ("int8", "none"):
        codec = compression_for(name)
        sent0, received0 = WIRE.snapshot()
        message = codec.compress(x, CompressionInfo.from_tensor(x))
        deserialize_torch_tensor(message)
        sent1, received1 = WIRE.snapshot()
        assert sent1 - sent0 == len(message.buffer) == received1 - received0


def test_a_plain_hivemind_blockwise_payload_is_refused_with_a_clear_error():
    x = torch.randn(10_000)
    message = BlockwiseQuantization().compress(x, CompressionInfo.from_tensor(x))
    compression_for("int8")  # our codec now holds the BLOCKWISE_8BIT tag
    with pytest.raises(QuantizationError, match="same swarm version"):
        deserialize_torch_tensor(message)


def test_the_reducers_reply_goes_through_our_codec():
    """hivemind's reducer re-serializes averaged deltas by the tag of what it received: that must be our int8."""
    compression_for("int8")
    x = torch.randn(2000)
    message = serialize_torch_tensor(x, runtime_pb2.BLOCKWISE_8BIT)
    assert message.buffer.startswith(b"SWQ1")


def test_a_non_finite_update_is_refused_not_sent():
    x = torch.tensor([1.0, float("nan")])
    with pytest.raises(QuantizationError, match="NaN"):
        Int8Compression().compress(x, CompressionInfo.from_tensor(x))


def test_unknown_compression_name_is_a_clear_error():
    with pytest.raises(ValueError, match="'int8' or 'none'"):
        compression_for("fp8")
