"""What people run: the peer CLI and its roles, the local demo, the live view and the event stream.

- `peer.py`: `swarm-peer` / `python -m swarm.peer` (arguments, exit codes, signals, roles).
- `stage_peer.py`: `StagePeer`, the stage role's round loop (join, serve, average, hooks, re-balance).
- `config.py`: `PeerConfig` (flags > env `SWARM_*` > file > defaults).
- `events.py`: the JSON event lines a peer writes with `--events`.
- `display.py`: the rich live table and summary.
- `demo/`: `swarm-demo`, a whole swarm with its own dev chain on loopback.
"""
