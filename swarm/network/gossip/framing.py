"""Length-prefixed msgpack frames: 4-byte big-endian length, then one msgpack map (shared by both ends)."""

from __future__ import annotations

import struct

import msgpack

MAX_FRAME = 8 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    """A frame on the pipe is malformed (too large, truncated or not a msgpack map)."""


def encode_frame(obj: dict) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (n,) = _HEADER.unpack(header)
    if n > MAX_FRAME:
        raise FrameError(f"announced frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
    return n


def decode_body(body: bytes) -> dict:
    try:
        obj = msgpack.unpackb(body, raw=False)
    except Exception as exc:
        raise FrameError(f"frame is not msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise FrameError("frame must be a msgpack map")
    return obj


HEADER_SIZE = _HEADER.size
