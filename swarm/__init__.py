"""swarm: a peer-to-peer trainer with no central scheduler (hivemind DHT, ZK-proven rounds, L2 rewards)."""

__version__ = "0.1.0"
