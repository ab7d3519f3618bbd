"""`python -m swarm.chain deploy`: the escrow stack on any EVM chain (an OP-stack L2, a testnet, anvil) by RPC URL
and key file, fees EIP-1559, the chain id checked against the one you expect, the addresses written to a
deployment file that the demo (`deploy_demo(..., deployment=Deployment.load(FILE))`) and peers read.

    python -m swarm.chain deploy --rpc URL --key-file FILE --chain-id ID [--out deployment.json]
        [--verifier auto|FastChunkVerifier|BatchChunkVerifier|ChunkVerifier] [--token ERC20] [--min-stake WEI]
        [--audit-bond WEI] [--batch-fee WEI] [--unbonding-delay S] [--slash-grace S] [--reporter-bps BPS]

The key file must be 0600 (or set SWARM_WALLET_KEY and leave --key-file out); the key never goes on the command
line. Token amounts are in the token's smallest unit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swarm.chain.client import ChainClient
from swarm.chain.deploy import DemoConfig, Deployment, deploy_escrow_stack
from swarm.chain.errors import ChainError
from swarm.chain.wallet import Wallet

DEFAULTS = DemoConfig()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m swarm.chain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy", help="deploy verifier, token (unless --token) and escrow; write deployment.json")
    d.add_argument("--rpc", required=True, help="the chain's JSON-RPC URL")
    d.add_argument("--key-file", type=Path, help="the deployer's key file (0600); default: $SWARM_WALLET_KEY")
    d.add_argument("--chain-id", type=int, required=True, help="the chain id you expect (refused if the RPC differs)")
    d.add_argument("--out", type=Path, default=Path("deployment.json"), help="where to write the addresses")
    d.add_argument("--verifier", default="auto", help="verifier contract (auto: the first built of "
                   "BatchChunkVerifier, FastChunkVerifier, ChunkVerifier; only the first verifies batches together)")
    d.add_argument("--token", help="an existing ERC-20 for stakes and rewards (default: deploy a TestToken)")
    d.add_argument("--min-stake", type=int, default=DEFAULTS.min_stake, help="collateral per contribution")
    d.add_argument("--audit-bond", type=int, default=DEFAULTS.audit_bond, help="an audit opener's deposit")
    d.add_argument("--batch-fee", type=int, default=0, help="paid per batched contribution of another peer")
    d.add_argument("--unbonding-delay", type=int, default=86_400, help="seconds (EigenLayer's is 7 days)")
    d.add_argument("--slash-grace", type=int, default=3_600, help="seconds")
    d.add_argument("--reporter-bps", type=int, default=DEFAULTS.reporter_bps, help="a slash's reporter share")
    return parser


def deploy(args: argparse.Namespace) -> Deployment:
    """Check the chain, then deploy and write the deployment file; returns it."""
    wallet = Wallet.load(args.key_file)
    client = ChainClient(args.rpc, wallet)
    actual = client.chain_id()
    if actual != args.chain_id:
        raise ChainError(f"{args.rpc} serves chain {actual}, not the expected {args.chain_id}: nothing deployed")
    balance = client.eth_balance()
    if balance == 0:
        raise ChainError(f"the deployer {wallet.address} has no ETH on chain {actual}: fund it first")
    cfg = DEFAULTS.model_copy(update={"verifier": args.verifier, "min_stake": args.min_stake,
                                      "audit_bond": args.audit_bond, "unbonding_delay": args.unbonding_delay,
                                      "slash_grace": args.slash_grace, "reporter_bps": args.reporter_bps})  # fmt: skip
    dep = deploy_escrow_stack(client, cfg, token=args.token, batch_fee=args.batch_fee)
    out = dep.save(args.out)
    spent = balance - client.eth_balance()
    print(f"escrow {dep.escrow}, verifier {dep.verifier_name} {dep.verifier}, token {dep.token} on chain "
          f"{dep.chain_id}; {spent / 1e18:.6f} ETH spent; written to {out}")
    return dep


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        deploy(args)
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
