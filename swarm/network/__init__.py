"""How peers find and hear each other: the hivemind DHT, typed signed records, and GossipSub.

- `dht.py`: `create_dht` (join or start), `local_dhts`, stable identities, `JoinError`.
- `records.py`: signed DHT records (`ExperimentRecord`, `StageAnnouncement`), publish and fetch.
- `p2p.py`: `P2PClient`, a private client of the DHT's own p2pd (for the stage server and the router).
- `gossip/`: the py-libp2p GossipSub sidecar process and the relay a paid peer uses.
"""
