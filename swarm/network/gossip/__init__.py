"""GossipSub channel on which paid stage peers publish their contributions and audit answers.

py-libp2p cannot share a process with hivemind: both register protobuf's `crypto.pb.KeyType`, and importing the
second fails on the duplicate symbol. So GossipSub runs in a sidecar process (`sidecar.py`), started by `client.py`
(`GossipSidecar`) in its own session and driven through length-prefixed msgpack frames (`framing.py`) on a pipe;
it exits when the pipe closes. `messages.py`: the typed messages; `discovery.py`: sidecars find each other through
signed DHT records; `relay.py`: `GossipRelay`, a stage peer's gossip from synchronous code.
"""

from swarm.network.gossip.client import GossipError, GossipSidecar
from swarm.network.gossip.messages import GossipMessage, MessageKind

__all__ = ["GossipError", "GossipMessage", "GossipSidecar", "MessageKind"]
