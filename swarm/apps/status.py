"""`swarm-peer status`: what the peer(s) running on this machine are doing, from the status files they keep.

Money figures are read from the chain again (the file says where: RPC, escrow, experiment, address; no key);
when the chain cannot be read, the peer's last reading is shown with its block number.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from swarm.apps.view.render import advice_lines, facts, human_time
from swarm.apps.view.state import PeerState
from swarm.apps.view.status_file import is_running, read_statuses, remove_status, status_dir

EXIT_OK, EXIT_NONE = 0, 1
STALE_S = 30.0  # a running peer rewrites its file every second


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarm-peer status",
                                description="Show what the swarm peers running on this machine are doing.")  # fmt: skip
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"where peers keep their status files (default: {status_dir()})",
    )
    p.add_argument("--json", action="store_true", help="print each peer's state as one JSON line")
    p.add_argument("--no-chain", dest="chain", action="store_false",
                   help="do not read the chain again: show the peer's last reading")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = args.dir or status_dir()
    running: list[PeerState] = []
    for path, state in read_statuses(folder):
        if state is None or not is_running(state):
            remove_status(path)  # left by a peer that was killed before it could clean up
            continue
        running.append(state)
    if not running:
        print(f"no swarm peer is running on this machine (no live status file in {folder}); start one with "
              "`swarm-peer --join --initial-peers <multiaddr>`")  # fmt: skip
        return EXIT_NONE
    for i, state in enumerate(running):
        note = refresh_money(state) if args.chain else ""
        if args.json:
            print(state.model_dump_json())
            continue
        if i:
            print()
        print("\n".join(status_lines(state, note)))
    return EXIT_OK


def refresh_money(state: PeerState) -> str:
    """Re-read the wallet's earnings from the chain into `state`; a note when that failed."""
    if state.chain is None:
        return ""
    from swarm.apps.earnings import EarningsReader
    from swarm.chain.client import ChainClient
    from swarm.chain.errors import ChainError

    c = state.chain
    try:
        client = ChainClient(c.rpc_url, escrow=c.escrow)
        state.earnings = EarningsReader(client, c.experiment, c.address).read()
        state.chain_error = ""
        return ""
    except ChainError as exc:
        state.chain_error = str(exc)
        return "the chain could not be read now: money figures are the peer's last reading"


def status_lines(state: PeerState, note: str = "") -> list[str]:
    age = time.time() - state.updated
    lines = [f"{label}: {value}" for label, value in facts(state)]
    if age > STALE_S:
        lines.append(f"note: the peer has not updated its status for {human_time(age)}: it may be stuck")
    if note:
        lines.append(f"note: {note}")
    lines += advice_lines(state.warnings())
    return lines


if __name__ == "__main__":
    sys.exit(main())
