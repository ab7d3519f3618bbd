"""Gas of a fraud proof on a real anvil: `slashMismatch` (PartFraudChecker recomputes a signed part's Merkle-sum
root with Poseidon, the escrow slashes) for parts of 1, 8 and 32 chunks of a real DEPTH-20 commitment (zk.commit,
the default circuit's shape), next to what the check alone costs (`partRoot`, an eth_call) and one on-chain
Poseidon of 4 inputs, measured in the same run. Every figure is a transaction's or call's gas estimate from anvil;
the 32-chunk case is also sent, and the slash checked.

    python experiments/bench_fraud.py [--quick]

--quick: the same sizes (the run is small); it exists so that every benchmark has one.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch
from web3 import Web3

from swarm.chain import DevChain
from swarm.chain.testing import EscrowWorld
from swarm.rounds.parts import EvidenceDomain, Part, WalletSigner, make_parts, new_round_key
from zk.circuit import DEFAULT_PARAMS
from zk.commit import commit_update
from zk.quantize import quantize_update

SIZES = (1, 8, 32)
NUM_CHUNKS = 40  # a 40,960-value update: parts of 32 chunks exist (index 1 is the padded last one)
NORM_BOUND = 2**120


def evidence(part: Part, part_chunks: int) -> tuple:
    return (part.first_chunk(part_chunks), [x for n in part.leaf_nodes() for x in n],
            [x for n in part.path_nodes() for x in n], part.wallet_signature)


def lying(part: Part, wallet: WalletSigner, key, part_chunks: int) -> Part:
    leaves = part.leaf_nodes()
    leaves[0] = (leaves[0][0] ^ 1, leaves[0][1])
    return part.wallet_signed(wallet, leaves, part_chunks).signed(key)


def estimate(w3: Web3, sender: str, fn) -> int:
    return int(w3.eth.estimate_gas({"from": sender, "to": fn.address, "data": fn._encode_transaction_data()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the same sizes: under a minute")
    ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.monotonic()
    torch.manual_seed(0)
    q = quantize_update(torch.randn(NUM_CHUNKS * DEFAULT_PARAMS.chunk) * 0.01, block_size=DEFAULT_PARAMS.block)
    c = commit_update(q, DEFAULT_PARAMS)
    with DevChain(accounts=4) as chain:
        world = EscrowWorld(chain)
        cheater, reporter = world.peers[:2]
        x = world.create_experiment(audits=1, pool=5_000, norm_bound=NORM_BOUND)
        cheater.stake(300)
        (proven,) = world.prove([world.contribution(cheater, x, 0, 0, c.root, c.norm_sq)], x)
        cheater.contribute(proven)
        checker = reporter.contract("PartFraudChecker", reporter.read("fraudChecker"))
        domain = EvidenceDomain(chain_id=reporter.chain_id(), escrow=world.escrow, experiment_id=x)
        wallet = WalletSigner(cheater.wallet.account, domain)
        key, _ = new_round_key()
        w3, me = reporter.w3, reporter.address
        one_hash = estimate(w3, me, checker.functions.poseidon4(1, 2, 3, 4)) - 21_000
        print(f"commitment: {NUM_CHUNKS} chunks of {DEFAULT_PARAMS.chunk} values, depth {DEFAULT_PARAMS.depth}; "
              f"one on-chain Poseidon(4) in a call: ~{one_hash:,} gas (above the 21,000 base)")
        rows = []
        for n in SIZES:
            part = lying(make_parts(c, "peer", 0, 0, key, n, wallet)[1], wallet, key, n)
            ev = evidence(part, n)
            fn = checker.functions.slashMismatch(x, 0, 0, cheater.address, c.root, c.norm_sq, ev)
            gas = estimate(w3, me, fn)
            check = estimate(w3, me, checker.functions.partRoot(ev[0], ev[1], ev[2]))
            hashes = (n - 1) + (DEFAULT_PARAMS.depth - (n.bit_length() - 1)) + 1
            calldata = len(fn._encode_transaction_data()) // 2 - 1
            rows.append((n, gas, check, hashes, calldata))
            print(f"part of {n:>2} chunk(s): slashMismatch {gas:>9,} gas | root check alone {check:>9,} | "
                  f"{hashes} Poseidon hashes ({(check - 21_000) / hashes:,.0f} gas each) | {calldata:,} B calldata")
        stake = cheater.stake_of().active
        receipt = reporter.transact("slashMismatch", x, 0, 0, cheater.address, c.root, c.norm_sq, ev, contract=checker)
        assert cheater.record(x, 0, 0, cheater.address).slashed and cheater.stake_of().active < stake
        print(f"sent the {SIZES[-1]}-chunk one: {receipt['gasUsed']:,} gas used, the cheater slashed "
              f"({stake} -> {cheater.stake_of().active})")
    base = rows[0][1]
    ratios = ", ".join(f"{n}: {g:,} ({g / base:.1f}x)" for n, g, *_ in rows)
    print(f"bench_fraud: slashMismatch gas at depth {DEFAULT_PARAMS.depth} by part size {ratios}; "
          f"Poseidon(4) ~{one_hash:,} gas; {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
