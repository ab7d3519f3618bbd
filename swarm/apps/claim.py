"""`swarm-peer claim`: claim everything a wallet is owed in one experiment (finalizing due rounds first), and say so.

For a peer that left (or was killed) before claiming: its contributions stay on-chain and stay claimable.
The wallet comes from --wallet-key-file (0600) or SWARM_WALLET_KEY, never from a flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from swarm.apps.earnings import Earnings

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="swarm-peer claim",
        description="Claim every reward a wallet is owed in one experiment of the escrow (claimMany); rounds whose "
        "audit window is over are finalized first. Settings also come from SWARM_CHAIN_RPC, SWARM_ESCROW, "
        "SWARM_CHAIN_EXPERIMENT and SWARM_WALLET_KEY_FILE; the key itself from the file or SWARM_WALLET_KEY.",
    )
    p.add_argument("--chain-rpc", default=env("SWARM_CHAIN_RPC"), metavar="URL", help="L2 RPC URL")
    p.add_argument("--escrow", default=env("SWARM_ESCROW"), metavar="ADDRESS", help="SwarmEscrow address")
    p.add_argument("--chain-experiment", type=int, default=env("SWARM_CHAIN_EXPERIMENT"), metavar="ID",
                   help="the escrow's experiment id (a peer's summary prints it)")  # fmt: skip
    p.add_argument("--wallet-key-file", type=Path, default=env("SWARM_WALLET_KEY_FILE"), metavar="PATH",
                   help="file (chmod 600) holding the wallet's private key; else SWARM_WALLET_KEY")  # fmt: skip
    return p


def claim_command(rpc: str, escrow: str, experiment: int, key_file: Path | None) -> str:
    """The `swarm-peer claim` line a volunteer can run later (no key in it: the file's path or the env variable)."""
    wallet = f" --wallet-key-file {key_file}" if key_file else "  # with SWARM_WALLET_KEY set"
    return f"swarm-peer claim --chain-rpc {rpc} --escrow {escrow} --chain-experiment {experiment}{wallet}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [f for f in ("chain_rpc", "escrow", "chain_experiment") if getattr(args, f) in (None, "")]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        print(f"swarm-peer claim: give {flags} (see swarm-peer claim --help)", file=sys.stderr)
        return EXIT_CONFIG
    from swarm.chain.client import ChainClient
    from swarm.chain.errors import ChainError
    from swarm.chain.wallet import Wallet, WalletError

    try:
        wallet = Wallet.load(args.wallet_key_file)
    except WalletError as exc:
        print(f"swarm-peer claim: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from swarm.apps.earnings import claim_all

    try:
        client = ChainClient(args.chain_rpc, wallet, escrow=args.escrow)
        out = claim_all(client, int(args.chain_experiment))
    except ChainError as exc:
        print(f"swarm-peer claim: {exc}", file=sys.stderr)
        return EXIT_ERROR
    e = out.earnings
    if out.finalized:
        print(f"finalized round(s) {', '.join(map(str, out.finalized))} (their audit windows were over)")
    if out.rounds:
        print(f"claimed {e.amount(out.claimed)} for {len(out.rounds)} round(s) of experiment {e.experiment} "
              f"into {e.address} (transaction{'s' if len(out.transactions) > 1 else ''} "
              f"{', '.join(out.transactions)})")  # fmt: skip
    else:
        print(f"nothing to claim for {e.address} in experiment {e.experiment} right now")
    print("\n".join(money_lines(e)))
    return EXIT_OK


def money_lines(e: Earnings) -> list[str]:
    """The wallet's standing in the experiment, as the chain says at block `e.block`."""
    head = (
        f"claimed so far: {e.amount(e.claimed)} ({e.claimed_rounds} round(s)); claimable now: "
        f"{e.amount(e.claimable)}; stake {e.amount(e.stake)}; wallet balance {e.amount(e.balance)} "
        f"(chain block {e.block})"
    )
    lines = [head]
    if e.to_finalize:
        lines.append(f"{len(e.to_finalize)} round(s) can be finalized and claimed: run swarm-peer claim")
    if e.waiting:
        lines.append(f"{e.waiting} round(s) are still in their submission or audit window: claim them later")
    if e.blocked:
        lines.append(f"{e.blocked} round(s) had an audit left unanswered: those earn nothing")
    if e.slashed:
        lines.append(f"{e.slashed} contribution(s) were slashed")
    return lines


if __name__ == "__main__":
    sys.exit(main())
