"""`python -m swarm`: the same as `swarm-peer` (run one peer of a swarm)."""

import sys

from swarm.apps.peer import main

sys.exit(main())
