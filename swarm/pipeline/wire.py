"""What crosses the wire between a trainer and a stage peer: tensors (optionally 8-bit), metadata, a status.

Messages are hivemind's protobuf `ExpertRequest`/`ExpertResponse`. Their `metadata` is msgpack:
- request: `{"mb": key, "keep": bool, "codec": name}`: `mb` names the micro-batch (a stage keeps the activations of
  a forward sent with `keep` under that key, so the backward need not carry the input again); `codec` is what the
  response's floating tensors should be encoded with.
- response: `{"status": Status, "detail": str}`; an OK response also says how long the request waited for the
  stage's compute thread, computed (wall and CPU time of its compute thread), and spent in decoding/encoding on the peer
  (`queue_s`, `compute_s`, `cpu_s`, `codec_s`). A handler never raises for a request it could read: it answers
  with a status, and the router classifies the status (`swarm.pipeline.routing.classify`).

Codecs for floating tensors: "none" (float32 as is) and "int8" (blockwise absmax 8-bit: blocks of `INT8_BLOCK`
values, one bfloat16 scale per block, 3.9x fewer bytes, each value within half a step (absmax / 254) of its
block's; chosen over bitsandbytes' dynamic blockwise 8-bit and hivemind's codecs by the codec table of
`experiments/bench_pipeline.py`). Integer tensors always go as they are. A tensor encoding this peer does not know
(a peer of another version) is a WireError that names it, so the call is answered "rejected", never left hanging.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgpack
import torch
from hivemind.compression import deserialize_torch_tensor, serialize_torch_tensor
from hivemind.p2p.p2p_daemon_bindings.control import DEFAULT_MAX_MSG_SIZE
from hivemind.proto import runtime_pb2

MAX_MESSAGE_BYTES = DEFAULT_MAX_MSG_SIZE - 64 * 1024  # p2pd's unary limit, minus room for the envelope
INT8_BLOCK = 64
CODECS = ("none", "int8")
INT8_DTYPE = "int8bf"  # int8 codes, then one bfloat16 scale per block
# what decode reads: "int8blk" (float16 scales) is what peers before INT8_DTYPE sent; float16 scales fell below
# float16's normal range for gradients between stages (block absmax ~1e-5: 9% error instead of 0.5%)
_SCALE_DTYPES = {INT8_DTYPE: torch.bfloat16, "int8blk": torch.float16}


class Status(StrEnum):
    """How a stage peer answered a request."""

    OK = "ok"
    REJECTED = (
        "rejected"  # the input is invalid (cannot be decoded, wrong shape or dtype): the caller's fault
    )
    BUSY = "busy"  # the peer's queue is full: try another peer, the peer is fine
    WRONG_STAGE = (
        "wrong_stage"  # the peer no longer serves that stage (it switched while the request travelled)
    )
    MISSING = (
        "missing"  # a backward without its input, and the peer no longer holds that micro-batch's activations
    )
    ERROR = "error"  # the peer failed to compute (a bug, out of memory): its fault


class WireError(ValueError):
    """A message cannot be built or read: too large, wrong tensor count, undecodable tensors or metadata."""


def encode(t: torch.Tensor, codec: str = "none") -> runtime_pb2.Tensor:
    """One tensor for the wire; floating tensors are 8-bit with codec "int8" (see the module docstring)."""
    t = t.detach()
    if codec == "none" or not t.is_floating_point() or t.numel() % INT8_BLOCK:
        return serialize_torch_tensor(t)
    if codec != "int8":
        raise WireError(f"unknown codec {codec!r}: use one of {CODECS}")
    blocks = t.float().reshape(-1, INT8_BLOCK)
    # the scale as it will be decoded (bfloat16: float32's range, so the tiny gradients between stages keep it)
    scale = (blocks.abs().amax(1, keepdim=True).clamp_min(1e-30) / 127.0).to(torch.bfloat16)
    q = torch.round(blocks / scale.float()).clamp_(-127, 127).to(torch.int8)
    return runtime_pb2.Tensor(
        buffer=q.numpy().tobytes() + scale.view(torch.int16).numpy().tobytes(), size=list(t.shape), dtype=INT8_DTYPE
    )


def decode(msg: runtime_pb2.Tensor) -> torch.Tensor:
    if msg.dtype not in _SCALE_DTYPES:
        if msg.dtype.startswith("int8") and msg.dtype != "int8":
            raise WireError(f"unknown tensor encoding {msg.dtype!r} (the sender speaks another wire version; this "
                            f"peer reads {sorted(_SCALE_DTYPES)}): run the same swarm version on both sides")
        return deserialize_torch_tensor(msg)
    shape = tuple(msg.size)
    n = 1
    for d in shape:
        n *= d
    if n % INT8_BLOCK or len(msg.buffer) != n + 2 * (n // INT8_BLOCK):
        raise WireError(f"an int8 tensor of shape {shape} has {len(msg.buffer)} bytes")
    raw = torch.frombuffer(bytearray(msg.buffer), dtype=torch.uint8)
    q = raw[:n].view(torch.int8).reshape(-1, INT8_BLOCK)
    scale = raw[n:].view(_SCALE_DTYPES[msg.dtype]).reshape(-1, 1)
    return (q.float() * scale.float()).reshape(shape)


def pack(
    cls, tensors: list[torch.Tensor], *, uid: str | None = None, codec: str = "none", meta: dict | None = None
):
    """A request (`cls=ExpertRequest`, with `uid`) or response carrying `tensors` encoded with `codec`, and `meta`
    as its metadata; too large is a WireError."""
    msg = cls(tensors=[encode(t, codec) for t in tensors], metadata=msgpack.packb(meta) if meta else b"")
    if uid is not None:
        msg.uid = uid
    size = msg.ByteSize()
    if size > MAX_MESSAGE_BYTES:
        raise WireError(
            f"a message of {size / 2**20:.1f} MiB exceeds p2pd's {MAX_MESSAGE_BYTES / 2**20:.1f} MiB limit: "
            "use a smaller micro-batch"
        )
    return msg


def unpack(msg, expected: int | None, what: str) -> list[torch.Tensor]:
    """The tensors of `msg` (exactly `expected` of them unless None); anything unreadable is a WireError."""
    if expected is not None and len(msg.tensors) != expected:
        raise WireError(f"{what} must carry {expected} tensor(s), got {len(msg.tensors)}")
    try:
        return [decode(t) for t in msg.tensors]
    except Exception as exc:  # protobuf/numpy errors on garbage
        raise WireError(f"{what} carries a tensor that cannot be decoded: {exc}") from exc


def metadata(msg) -> dict[str, Any]:
    """The msgpack metadata of a message ({} when empty); garbage is a WireError."""
    if not msg.metadata:
        return {}
    try:
        meta = msgpack.unpackb(msg.metadata)
    except Exception as exc:
        raise WireError(f"metadata cannot be decoded: {exc}") from exc
    if not isinstance(meta, dict):
        raise WireError(f"metadata must be a map, got {type(meta).__name__}")
    return meta


def status_reply(status: Status, detail: str = "") -> runtime_pb2.ExpertResponse:
    return runtime_pb2.ExpertResponse(metadata=msgpack.packb({"status": str(status), "detail": detail[:500]}))


def response_status(msg: runtime_pb2.ExpertResponse) -> tuple[Status, str]:
    """The status a response carries (a response without one, or with an unknown one, is an ERROR)."""
    try:
        meta = metadata(msg)
        return Status(meta.get("status", "")), str(meta.get("detail", ""))
    except (WireError, ValueError) as exc:
        return Status.ERROR, f"unreadable response status: {exc}"
