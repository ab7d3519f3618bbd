"""`swarm-demo`: a whole swarm on loopback as separate processes, with its own economy on a dev chain.

- `run.py`: `DemoSwarm` (bootstrap, stage peers, trainers), the live view, `main`.
- `economy.py`: `DemoEconomy` (anvil, deployed escrow, funded experiment, key files).
"""

from swarm.apps.demo.run import DemoConfig, DemoSwarm, main

__all__ = ["DemoConfig", "DemoSwarm", "main"]
