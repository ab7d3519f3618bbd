"""`python -m swarm.demo`: the entry point of `swarm-demo` (the demo lives in `swarm/apps/demo/`)."""

import sys

from swarm.apps.demo import main

if __name__ == "__main__":
    sys.exit(main())
