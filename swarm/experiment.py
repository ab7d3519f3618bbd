"""`python -m swarm.experiment`: the entry point of `swarm-experiment` (it lives in `swarm/apps/experiment/`)."""

import sys

from swarm.apps.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
