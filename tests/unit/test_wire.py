"""The pipeline's wire codecs: int8 activations/gradients decode within their stated bound, bad buffers are errors."""

from __future__ import annotations

import asyncio

import pytest
import torch
from hivemind.proto import runtime_pb2

from swarm.models import get_workload
from swarm.pipeline import wire
from swarm.pipeline.serving import StageServer
from swarm.pipeline.wire import INT8_BLOCK, Status, WireError


def test_int8_decodes_within_half_a_step_of_each_blocks_absmax():
    """Every value comes back within half a quantization step, absmax(block) / 254 (1% for the bfloat16 rounding of
    the block's scale); blocks of very different magnitudes, and tiny gradients, do not spoil each other."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, 128, generator=g)
    x[0] *= 1e-6  # gradients between stages are ~1e-5 (float16 scales lost them: 9% error)
    x[1] *= 1e3  # next to large activations
    y = wire.decode(wire.encode(x, "int8"))
    assert y.shape == x.shape and y.dtype == torch.float32
    blocks_x, blocks_y = x.reshape(-1, INT8_BLOCK), y.reshape(-1, INT8_BLOCK)
    absmax = blocks_x.abs().amax(1, keepdim=True)
    assert ((blocks_y - blocks_x).abs() <= absmax * (0.5 / 127) * 1.01).all()
    assert float((y - x).norm() / x.norm()) < 1e-2
    assert float((y[0] - x[0]).norm() / x[0].norm()) < 1e-2  # the tiny ones too
    assert torch.equal(y.abs().reshape(-1, INT8_BLOCK).amax(1, keepdim=True) > 0, absmax > 0)


def test_int8_is_about_four_times_smaller_than_float32():
    x = torch.randn(16, 64, 128)
    plain, small = wire.encode(x), wire.encode(x, "int8")
    n = x.numel()
    assert len(small.buffer) == n + 2 * (n // INT8_BLOCK)  # one byte per value, one float16 scale per block
    assert plain.ByteSize() / small.ByteSize() > 3.8


@pytest.mark.parametrize(
    "t",
    [
        pytest.param(torch.randint(0, 256, (4, 64)), id="token-ids"),
        pytest.param(torch.randn(3, 7), id="not-a-whole-number-of-blocks"),
        pytest.param(torch.zeros(2, 64), id="all-zero"),
    ],
)
def test_what_int8_cannot_or_need_not_squeeze_crosses_exactly(t):
    assert torch.equal(wire.decode(wire.encode(t, "int8")), t)


def test_the_float16_scaled_int8_of_older_peers_still_decodes():
    x = torch.randn(4, 64)
    blocks = x.reshape(-1, INT8_BLOCK)
    scale = blocks.abs().amax(1, keepdim=True) / 127
    q = torch.round(blocks / scale).to(torch.int8)
    old = runtime_pb2.Tensor(buffer=q.numpy().tobytes() + scale.half().numpy().tobytes(), size=[4, 64],
                             dtype="int8blk")  # fmt: skip
    assert torch.allclose(wire.decode(old), x, atol=float(scale.max()))


def test_a_truncated_int8_tensor_an_unknown_encoding_and_an_unknown_codec_are_wire_errors():
    msg = wire.encode(torch.randn(4, 64), "int8")
    msg.buffer = msg.buffer[:-3]
    request = runtime_pb2.ExpertRequest(uid="x", tensors=[msg])
    with pytest.raises(WireError, match="cannot be decoded"):
        wire.unpack(request, 1, "a request")
    newer = wire.encode(torch.randn(4, 64), "int8")
    newer.dtype = "int8v9"
    with pytest.raises(WireError, match="another wire version"):
        wire.decode(newer)
    with pytest.raises(WireError, match="unknown codec"):
        wire.encode(torch.randn(4, 64), "int4")


def test_an_ok_answer_reports_its_compute_wall_and_cpu_time():
    """The stage's timings the benchmark's breakdown is built from: CPU time of the compute thread, at most its
    wall time."""
    w = get_workload("digits")
    server = StageServer(None, "exp", w, 0, w.build_stage(2, 0), lr=1e-3)  # no DHT: the handler is called directly
    try:
        x, _ = next(w.batches(64, seed=0))
        request = wire.pack(runtime_pb2.ExpertRequest, [x], uid="exp.s0.forward", meta={"codec": "int8"})
        response = asyncio.run(server._serve(request, "forward"))
        assert wire.response_status(response)[0] is Status.OK
        meta = wire.metadata(response)
        assert 0 < meta["cpu_s"] <= meta["compute_s"] + 1e-3
        assert {"queue_s", "codec_s"} <= meta.keys()
    finally:
        server.shutdown()
