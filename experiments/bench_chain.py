"""Gas of the escrow on a real anvil (optimism mode) with real Groth16 proofs (stand-in circuit, same verifier
shape as zk's): deploy gas, gas per peer-round (contribute + finalize/N + claim) for N contributors, and the
cost of one round at a stated L2 gas price. Baseline: a bare verifyTx transaction of the same proof.

    python experiments/bench_chain.py [--quick] [--gas-price-gwei 0.01]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from swarm.chain import DevChain
from swarm.chain.standin import STANDIN_VERIFIER
from swarm.chain.testing import EscrowWorld, Timing

TARGET_PER_PEER_ROUND = 300_000


def measure(world: EscrowWorld, n: int, proofs: list) -> dict[str, float]:
    exp = world.create_experiment(stage_params=(100_000,), pool=10**9, reward_per_round=10**6)
    peers = world.peers[:n]
    contribute = [
        p.contribute(c.model_copy(update={"experiment": exp}))["gasUsed"] for p, c in zip(peers, proofs)
    ]
    world.goto(exp, 0, "after")
    finalize = world.funder.finalize(exp, 0)["gasUsed"]
    claim = [p.claim(exp, 0, 0)["gasUsed"] for p in peers]
    steady = contribute[1:] or contribute
    per_peer = statistics.mean(steady) + finalize / n + statistics.mean(claim)
    return {
        "n": n,
        "first_contribute": contribute[0],
        "contribute": statistics.mean(steady),
        "finalize": finalize,
        "claim": statistics.mean(claim),
        "per_peer_round": per_peer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N in (1, 10, 30) instead of (1, 10, 100)")
    parser.add_argument("--gas-price-gwei", type=float, default=0.01, help="L2 execution gas price")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = (1, 10, 30) if args.quick else (1, 10, 100)
    t0 = time.monotonic()
    with DevChain(accounts=max(sizes) + 1, balance_eth=1_000) as chain:
        world = EscrowWorld(
            chain,
            peer_tokens=10**12,
            timing=Timing(
                round_duration=3_600,
                submit_window=600,
                audit_window=600,
                slash_grace=600,
                unbonding_delay=10_000,
            ),
        )
        f = world.funder
        deploy = {name: f.deploy(name)[1]["gasUsed"] for name in (STANDIN_VERIFIER, "TestToken")}
        deploy["SwarmEscrow"] = f.deploy("SwarmEscrow", world.token, 100, 10_000, 600, 2_000)[1]["gasUsed"]
        for p in world.peers:
            p.stake(100)
        exp0 = world.create_experiment(stage_params=(100_000,))
        proofs = world.prove(
            [world.contribution(p, exp0, 0, 0, 7_000 + i) for i, p in enumerate(world.peers)], exp0
        )
        verifier = f.contract(STANDIN_VERIFIER, world.verifier)
        c = proofs[0]
        baseline = verifier.functions.verifyTx(c.proof.abi_tuple(), c.public_inputs(10**6)).estimate_gas(
            {"from": f.address}
        )
        rows = [measure(world, n, proofs) for n in sizes]
    print("deploy gas: " + ", ".join(f"{k} {v:,}" for k, v in deploy.items()))
    print(f"baseline: bare verifyTx transaction (Groth16, 4 public inputs) {baseline:,} gas")
    print(
        f"{'N':>4} {'1st contribute':>15} {'contribute':>11} {'finalize':>9} {'claim':>7} {'per peer-round':>15}"
        f" {'/ baseline':>10}"
    )
    for r in rows:
        print(
            f"{r['n']:>4} {r['first_contribute']:>15,.0f} {r['contribute']:>11,.0f} {r['finalize']:>9,.0f} "
            f"{r['claim']:>7,.0f} {r['per_peer_round']:>15,.0f} {r['per_peer_round'] / baseline:>10.2f}"
        )
    big = rows[-1]
    eth = big["n"] * big["per_peer_round"] * args.gas_price_gwei * 1e-9
    flat = rows[-1]["finalize"] / rows[0]["finalize"]
    print(
        f"one round, {big['n']} peers: {big['n'] * big['per_peer_round']:,.0f} gas = {eth:.6f} ETH at "
        f"{args.gas_price_gwei} gwei (L2 execution only; the L1 data fee comes on top)"
    )
    print(
        f"chain: {big['per_peer_round']:,.0f} gas/peer-round at N={big['n']} "
        f"({big['per_peer_round'] / TARGET_PER_PEER_ROUND:.2f}x the 300k target, "
        f"{big['per_peer_round'] / baseline:.2f}x bare verifyTx), finalize N={big['n']}/N=1 = {flat:.2f}x, "
        f"escrow deploy {deploy['SwarmEscrow']:,} gas, {time.monotonic() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
