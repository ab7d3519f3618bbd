"""The volunteer's subcommands of `swarm-peer`: `status` (a running peer's facts) and `claim` (collect rewards)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

SUBCOMMANDS = {
    "status": "swarm.apps.status",  # what the peer(s) running on this machine are doing
    "claim": "swarm.apps.claim",  # claim everything a wallet is owed in an experiment
}


def run_subcommand(argv: Sequence[str]) -> int | None:
    """Run `swarm-peer <subcommand> ...` and return its exit code; None when argv is not a subcommand."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    return importlib.import_module(SUBCOMMANDS[argv[0]]).main(list(argv[1:]))
