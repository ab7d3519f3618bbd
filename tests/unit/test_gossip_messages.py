"""Gossip wire forms: typed messages round-trip; malformed frames and messages are refused with clear errors."""

import msgpack
import pytest

from protocol.contribution import Contribution, ContributionError
from swarm.network.gossip.framing import MAX_FRAME, FrameError, decode_body, encode_frame, frame_length
from swarm.network.gossip.messages import GossipMessage, MessageKind

CONTRIB = Contribution(experiment=1, round=3, stage=1, peer="0x" + "ab" * 20, root=42, norm_sq=2**90, chunk=5)


def test_contribution_message_round_trips():
    msg = GossipMessage.for_contribution("digits", CONTRIB)
    back = GossipMessage.from_msgpack(msg.to_msgpack())
    assert back.kind is MessageKind.CONTRIBUTION
    assert back.contribution() == CONTRIB


def test_audit_proof_kind_is_kept():
    msg = GossipMessage.for_contribution("digits", CONTRIB, audit=True)
    assert GossipMessage.from_msgpack(msg.to_msgpack()).kind is MessageKind.AUDIT_PROOF


@pytest.mark.parametrize(
    "raw",
    [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"kind": "nonsense", "experiment": "x", "round": 0,
                                                    "stage": 0, "body": b""}),
     msgpack.packb({"kind": "contribution", "experiment": "x", "round": -1, "stage": 0, "body": b""})],
)
def test_malformed_gossip_message_is_refused(raw):
    with pytest.raises(ValueError):
        GossipMessage.from_msgpack(raw)


def test_garbage_body_is_a_contribution_error():
    msg = GossipMessage(kind=MessageKind.CONTRIBUTION, experiment="x", round=0, stage=0, body=b"\x93\x01")
    with pytest.raises(ContributionError):
        msg.contribution()


def test_frames_round_trip_and_limits():
    frame = encode_frame({"op": "publish", "data": b"\x00" * 10})
    n = frame_length(frame[:4])
    assert decode_body(frame[4 : 4 + n]) == {"op": "publish", "data": b"\x00" * 10}
    with pytest.raises(FrameError):
        frame_length((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        decode_body(msgpack.packb([1]))
