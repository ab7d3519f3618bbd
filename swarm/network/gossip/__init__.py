"""GossipSub channel for round announcements, contributions, audit proofs and evidence.

py-libp2p cannot share a process with hivemind (FACTS.md: duplicate protobuf symbols), so GossipSub runs in a
sidecar process (`swarm.network.gossip.sidecar`) that the peer drives through length-prefixed msgpack frames on a pipe.
"""

from swarm.network.gossip.client import GossipError, GossipSidecar
from swarm.network.gossip.messages import GossipMessage, MessageKind

__all__ = ["GossipError", "GossipMessage", "GossipSidecar", "MessageKind"]
