"""The three roles a `swarm-peer` runs, each one `run(...)` that returns when the peer is asked to stop.

- `bootstrap.py`: publishes the experiment record (its round clock read from the escrow with `--chain-experiment`).
- `stage.py`: serves and averages a stage (`StagePeer`); a paid peer gets its wallet, settler and gossip relay here.
- `trainer.py`: pushes batches through the stages, waiting out a stage that has no reachable peer for a while.
- `common.py`: finding the experiment record, the stop deadline.
"""
