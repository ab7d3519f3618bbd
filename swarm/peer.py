"""`python -m swarm.peer`: the entry point of `swarm-peer` (the CLI lives in `swarm/apps/peer.py`)."""

import sys

from swarm.apps.peer import main

if __name__ == "__main__":
    sys.exit(main())
