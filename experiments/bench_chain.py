"""Gas of the escrow on a real anvil (optimism mode) with real Groth16 proofs (stand-in circuit, same verifier
shape as zk's): deploy gas, gas per peer-round (contribute + finalize/N + claim) for N contributors with the
ZoKrates-exported verifier, with zk/fast_verifier.py's, and batched (one contributeBatch of the N contributions,
checked by zk/batch_verifier.py's verifyBatch) in the same run, claimMany amortized over R rounds, and the cost
of one round in ETH and USD at a stated L2 gas price and ETH price. Baselines: a bare verifyTx transaction of
the same proof on each verifier.
Also what a free rider earns per round next to an honest peer: with the escrow before issue 13 (its artifact
read from git, commit 97e46d6) and with today's, in the same run; and what a group certificate costs
(SwarmCertifier.certify, requireCertificate experiments) per peer-round at N = 3, 8, 32 contributors per (round,
stage), all signing or just over 2/3, next to the batch's own gas with and without the group's counter.

    python experiments/bench_chain.py [--quick] [--gas-price-gwei 0.01] [--eth-usd 3000] [--l1-base-fee-gwei 10]
        [--l1-fee-scalar 2000] [--breakdown]

--quick: N = 1, 10 (instead of 1, 10, 100) and claimMany R <= 10. Every stand-in proof of a run is made up front
(zokrates-js, 80 per process) and kept in build/bench_chain_proofs/<hash of the stand-in's key>.json (a proof
names no experiment, anvil's accounts are fixed), so a rerun proves nothing; a first --quick run makes 46 proofs
(~12 s).
--breakdown: where a steady contribute's and a claim's gas goes, by opcode class (anvil --steps-tracing).
--certificate-only: only the certificate figures (N = 3, 8, 32; ~1 minute with the proof cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import subprocess
import time
from collections import Counter

from protocol.contribution import Contribution, Groth16Proof
from protocol.sampling import contribute_chunk
from swarm.chain import DevChain, RevertError
from swarm.chain.client import batch_words
from swarm.chain.paths import CONTRACTS_DIR, PROJECT_ROOT
from swarm.chain.standin import STANDIN_VERIFIER, prove_standin
from swarm.chain.testing import EscrowWorld, Timing
from swarm.rounds.parts import sign_digest
from swarm.settlement.certificate import certificate_hash, sort_addresses

TARGET_PER_PEER_ROUND = 100_000  # issue 9 (it was 300,000 before batching)
FAST_STANDIN_VERIFIER = "FastStandInChunkVerifier"  # zk/fast_verifier.py's verifier of the stand-in's key
BATCH_STANDIN_VERIFIER = "BatchStandInChunkVerifier"  # zk/batch_verifier.py's: verifyTx + verifyBatch
VERIFIERS = {"zokrates": STANDIN_VERIFIER, "fast": FAST_STANDIN_VERIFIER, "batch": BATCH_STANDIN_VERIFIER}
CLAIM_ROUNDS = (1, 10, 20)
RING = 64  # SwarmEscrow.RECORD_RING: round r's record reuses round r - RING's slot
BEFORE_ISSUE_13 = "97e46d6"  # the escrow the audit attacked: a zero update was accepted and paid
NORM_BOUND = 10**6  # every experiment of the run (EscrowWorld.create_experiment's default)
NUM_CHUNKS = 100  # stage_params (100_000,) over the stand-in's chunk of 1,000
STANDIN_KEY = CONTRACTS_DIR / "standin" / "verification.key.json"
PROOF_CACHE = PROJECT_ROOT / "build" / "bench_chain_proofs"  # gitignored
PROOFS_PER_PROCESS = 80  # well inside prove_standin's timeout (PROVE_TIMEOUT_S) on a loaded machine


class ProofCache:
    """Stand-in proofs by public inputs, kept on disk under the hash of the stand-in's verification key (a new key
    starts a new file). A proof does not name its experiment (the context packs peer, round, stage, chunk), and
    anvil's accounts are the same every run, so every run after the first proves nothing; `prove` makes all
    missing proofs in as few zokrates-js processes as it can (each start costs ~5 s)."""

    def __init__(self) -> None:
        key = hashlib.sha256(STANDIN_KEY.read_bytes()).hexdigest()[:16]
        self.path = PROOF_CACHE / f"{key}.json"
        self.proofs: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.made = self.reused = 0

    @staticmethod
    def _key(c: Contribution) -> str:
        return ",".join(str(x) for x in c.public_inputs(NORM_BOUND))

    def prove(self, contributions: list[Contribution]) -> list[Contribution]:
        missing = list({self._key(c): c for c in contributions if self._key(c) not in self.proofs}.items())
        if missing:
            for i in range(0, len(missing), PROOFS_PER_PROCESS):
                part = missing[i : i + PROOFS_PER_PROCESS]
                for (key, _), proven in zip(part, prove_standin([c for _, c in part], NORM_BOUND), strict=True):
                    assert proven.proof is not None
                    self.proofs[key] = proven.proof.model_dump(mode="json")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.proofs))
            tmp.replace(self.path)
        self.made += len(missing)
        self.reused += len(contributions) - len(missing)
        return [c.model_copy(update={"proof": Groth16Proof.model_validate(self.proofs[self._key(c)])})
                for c in contributions]  # fmt: skip


def statement(peer: str, round: int, root: int, norm_sq: int = 100) -> Contribution:
    """An unproven stage-0 contribution of `peer` opening its c0 (experiment 0: the proof does not name it)."""
    return Contribution(experiment=0, round=round, stage=0, peer=peer, root=root, norm_sq=norm_sq,
                        chunk=contribute_chunk(root, peer, NUM_CHUNKS))  # fmt: skip


def measure(world: EscrowWorld, n: int, proofs: list, verifier: str, later: list | None = None) -> dict[str, float]:
    """One round with n contributors; per peer-round = (all contributions + finalize) / n + one claim. With
    `later` (proofs of round RING), the funder submits all n in one contributeBatch (its gas is the
    contributions' total), and again for round RING once round 0 is claimed: the records' ring slots are reused
    (`steady`, what every round of an experiment longer than RING rounds pays)."""
    batch = later is not None
    exp = world.create_experiment(
        stage_params=(100_000,), pool=10**9, reward_per_round=10**6, verifier=verifier, num_rounds=RING + 1
    )
    peers = world.peers[:n]
    mine = [c.model_copy(update={"experiment": exp}) for c in proofs[:n]]
    if batch:
        for p in peers:  # once per experiment: others may batch this peer's contributions (not counted per round)
            p.allow_batches(exp)
        result = world.funder.contribute_batch(mine, precheck=False)
        assert len(result.included) == n, result
        contribute = [result.receipt["gasUsed"] / n] * n
    else:
        contribute = [p.contribute(c)["gasUsed"] for p, c in zip(peers, mine)]
    world.goto(exp, 0, "after")
    finalize = world.funder.finalize(exp, 0)["gasUsed"]
    claim = [p.claim(exp, 0, 0)["gasUsed"] for p in peers]
    steady = statistics.mean(contribute)
    if batch:
        world.goto(exp, RING, "train")
        again = world.funder.contribute_batch([c.model_copy(update={"experiment": exp}) for c in later[:n]],
                                              precheck=False)  # fmt: skip
        assert len(again.included) == n, again
        steady = again.receipt["gasUsed"] / n
        tx = again.receipt["transactionHash"]
        tx = tx if isinstance(tx, str) else tx.to_0x_hex()
        batch_bytes = len(world.chain.rpc("eth_getTransactionByHash", [tx])["input"]) // 2 - 1
    return {
        "batch_bytes": batch_bytes if batch else 0,
        "steady": steady,
        "steady_per_peer_round": (steady * n + finalize) / n + statistics.mean(claim),
        "n": n,
        "first_contribute": contribute[0],
        "contribute": statistics.mean(contribute[1:] or contribute),
        "finalize": finalize,
        "claim": statistics.mean(claim),
        "per_peer_round": (sum(contribute) + finalize) / n + statistics.mean(claim),
    }


def claim_many(world: EscrowWorld, rounds: int, verifier: str, proofs: list[Contribution]) -> float:
    """Gas of one claimMany paying one peer's share of `rounds` finalized rounds (stage 0); `proofs[r]` is
    world.peers[0]'s proven contribution of round r."""
    exp = world.create_experiment(
        stage_params=(100_000,), pool=10**9, reward_per_round=10**6, verifier=verifier, num_rounds=rounds
    )
    peer = world.peers[0]
    for r, c in enumerate(proofs[:rounds]):
        world.goto(exp, r, "train")
        peer.contribute(c.model_copy(update={"experiment": exp}))
    world.goto(exp, rounds - 1, "after")
    for r in range(rounds):
        world.funder.finalize(exp, r)
    return peer.claim_many(exp, list(range(rounds)), [0] * rounds)["gasUsed"]


CERT_SIZES = (3, 8, 32)


def certificate(world: EscrowWorld, n: int, proofs: list[Contribution], verifier: str) -> dict[str, float]:
    """One round of n contributors of one stage, contributed in one contributeBatch, in an experiment without and
    one with requireCertificate (the batch's extra gas is the group's counter); then one certify marking all n
    records, signed by all n and (from a snapshot) by the fewest that pass (floor(2n/3) + 1)."""
    out: dict[str, float] = {"n": n}
    peers = world.peers[:n]
    for cert in (False, True):
        exp = world.create_experiment(stage_params=(100_000,), pool=10**9, reward_per_round=10**6, verifier=verifier,
                                      num_rounds=2, require_certificate=cert)  # fmt: skip
        for p in peers:
            p.allow_batches(exp)
        result = world.funder.contribute_batch([c.model_copy(update={"experiment": exp}) for c in proofs[:n]],
                                               precheck=False)  # fmt: skip
        assert len(result.included) == n, result
        out["batch_cert" if cert else "batch"] = result.receipt["gasUsed"]
    contributors = sort_addresses(p.address for p in peers)
    included = (1 << n) - 1
    world.goto(exp, 0, "audit")
    h = certificate_hash(world.funder.chain_id(), world.escrow, exp, 0, 0, contributors, included)
    sigs = {p.address: sign_digest(p.wallet.account, h) for p in peers}
    snapshot = world.chain.rpc("evm_snapshot", [])
    fewest = sort_addresses(contributors[: 2 * n // 3 + 1])
    out["certify_min"] = world.funder.certify(exp, 0, 0, contributors, included, [sigs[a] for a in fewest])["gasUsed"]
    out["signers_min"] = len(fewest)
    world.revert_to(snapshot)
    out["certify_all"] = world.funder.certify(exp, 0, 0, contributors, included,
                                              [sigs[a] for a in contributors])["gasUsed"]  # fmt: skip
    assert all(world.funder.record(exp, 0, 0, a).certified for a in contributors)
    return out


def print_certificates(rows: list[dict]) -> str:
    print("group certificate (requireCertificate; one certify per (round, stage), all N records included):")
    for r in rows:
        n = r["n"]
        print(f"  N={n:>3}: certify {r['certify_all']:>9,.0f} gas with N signatures = {r['certify_all'] / n:>7,.0f} "
              f"per peer-round; {r['certify_min']:>9,.0f} with {r['signers_min']} = {r['certify_min'] / n:>7,.0f}; "
              f"the batch's counter {(r['batch_cert'] - r['batch']) / n:>+5,.0f} per peer-round")  # fmt: skip
    return ", ".join(f"N={r['n']} {(r['certify_all'] + r['batch_cert'] - r['batch']) / r['n']:,.0f}" for r in rows)


def certificates_only(quick: bool) -> None:
    t0 = time.monotonic()
    with DevChain(accounts=max(CERT_SIZES) + 1, balance_eth=1_000) as chain:
        world = EscrowWorld(chain, peer_tokens=10**12, timing=Timing(round_duration=3_600, submit_window=600,
                                                                     audit_window=600, slash_grace=600))  # fmt: skip
        for p in world.peers:
            p.stake(100 * 2 * len(CERT_SIZES))
        cache = ProofCache()
        proofs = cache.prove([statement(p.address, 0, 7_000 + i) for i, p in enumerate(world.peers)])
        verifier = world.verifiers[BATCH_STANDIN_VERIFIER]
        rows = [certificate(world, n, proofs, verifier) for n in CERT_SIZES]
    summary = print_certificates(rows)
    print(f"chain: certificate gas per peer-round (certify with N signatures + the batch's counter) {summary}; "
          f"{time.monotonic() - t0:.0f} s")


FREE_RIDER_CASES = [("zero update", 0, 0), ("normSq 1, no floor", 1, 0), ("normSq 1, floor 2**10", 1, 10)]


def free_rider_statements(world: EscrowWorld, honest: int = 3) -> tuple[list[Contribution], list[list[Contribution]]]:
    """The free rider's and the honest peers' contributions: on the old escrow (rider first), then one list per
    FREE_RIDER_CASES entry on today's."""
    peers = world.peers[: honest + 1]
    rider, honest_peers = peers[0], peers[1:]

    def of(who, root: int, norm: int) -> Contribution:
        return statement(who.address, 0, root + int(who.address, 16) % 1_000, norm)

    old = [of(who, 5_000 + n_sq, n_sq) for n_sq, who in [(0, rider)] + [(100, p) for p in honest_peers]]
    new = [[of(who, 9_000 + norm + i, norm) for who, norm in [(rider, n_sq)] + [(p, 5_000) for p in honest_peers]]
           for i, (_, n_sq, _) in enumerate(FREE_RIDER_CASES)]  # fmt: skip
    return old, new


def free_rider(world: EscrowWorld, cache: ProofCache, honest: int = 3) -> dict[str, float]:
    """Tokens per round of one free rider next to `honest` peers (reward 1,000 per round, stand-in proofs):
    a zero update on the old escrow and on today's; a minimal nonzero update (normSq 1) on today's without a
    norm floor and with the funder's floor 2**10."""
    f, peers = world.funder, world.peers[: honest + 1]
    rider = peers[0]
    old_proofs, new_proofs = free_rider_statements(world, honest)
    out = {}
    old = json.loads(subprocess.run(["git", "show", f"{BEFORE_ISSUE_13}:contracts/artifacts/SwarmEscrow.json"],
                                    cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout)
    receipt = f._sender.send({"data": old["bytecode"] + f.w3.codec.encode(
        ["address", "uint128", "uint32", "uint32", "uint16"], [world.token, 100, 10_000, 600, 2_000]).hex()},
        "deploying the old SwarmEscrow")  # fmt: skip
    old_escrow = f.w3.eth.contract(address=receipt["contractAddress"], abi=old["abi"])
    spec = (world.verifier, f.block_timestamp(), 3_600, 600, 600, 2, 1, 1_000, 1_000, NORM_BOUND, [100_000])
    f.transact("approve", old_escrow.address, 10**9, contract=f.token)
    f.transact("createExperiment", spec, contract=old_escrow)
    f.transact("fund", 1, 10**6, contract=old_escrow)
    for who, c in zip(peers, cache.prove(old_proofs), strict=True):
        who.transact("approve", old_escrow.address, 100, contract=who.token)
        who.transact("stake", 100, contract=old_escrow)
        who.transact("contribute", 1, 0, 0, c.root, c.norm_sq, c.proof.abi_tuple(), contract=old_escrow)
    world.chain.set_next_timestamp(spec[1] + 3_600 + 600 + 600)
    f.transact("finalize", 1, 0, contract=old_escrow)
    out["zero update, escrow before issue 13"] = old_escrow.functions.getRound(1, 0).call()[4]
    for (label, _, floor), statements in zip(FREE_RIDER_CASES, new_proofs, strict=True):
        exp = world.create_experiment(stage_params=(100_000,), pool=10**6, min_norm_log2=floor, num_rounds=1)
        for who, c in zip(peers, cache.prove(statements), strict=True):
            try:
                who.contribute(c.model_copy(update={"experiment": exp}))
            except RevertError as exc:
                assert who is rider, exc
        world.goto(exp, 0, "after")
        f.finalize(exp, 0)
        share = f.round_state(exp, 0).share
        rider_paid = rider.record(exp, 0, 0, rider.address).exists
        out[label] = share if rider_paid else 0
        for p in peers:
            if p.record(exp, 0, 0, p.address).exists:
                p.claim(exp, 0, 0)
    return out


def _opcode_gas(chain: DevChain, tx_hash: str) -> tuple[Counter, list[tuple[str, int]]]:
    """Gas of the outer frame's own opcodes by class, and (callee, gasUsed) of its direct calls."""
    steps = chain.rpc("debug_traceTransaction", [tx_hash, {"disableStack": True, "disableMemory": True}])
    by_class: Counter = Counter()
    for step in steps["structLogs"]:
        op = step["op"]
        if step["depth"] == 1 and op not in ("CALL", "STATICCALL"):
            by_class[
                op if op in ("SSTORE", "SLOAD", "KECCAK256") else "LOG" if op.startswith("LOG") else "other"
            ] += step["gasCost"]
    calls = chain.rpc("debug_traceTransaction", [tx_hash, {"tracer": "callTracer"}]).get("calls", [])
    return by_class, [(c["to"], int(c["gasUsed"], 16)) for c in calls]


def breakdown() -> None:
    """Print where one steady contribute (fast verifier) and one claim spend their gas."""
    with DevChain(accounts=3, balance_eth=1_000, extra_args=["--steps-tracing"]) as chain:
        world = EscrowWorld(chain, peer_tokens=10**12, verifier_contract=FAST_STANDIN_VERIFIER)
        a, b = world.peers[:2]
        for p in (a, b):
            p.stake(100)
        exp = world.create_experiment(stage_params=(100_000,), pool=10**9, reward_per_round=10**6)
        first, steady = world.prove(
            [world.contribution(a, exp, 0, 0, 1), world.contribution(b, exp, 0, 0, 2)], exp
        )
        a.contribute(first)
        receipts = {"contribute": b.contribute(steady)}
        world.goto(exp, 0, "after")
        world.funder.finalize(exp, 0)
        receipts["claim"] = b.claim(exp, 0, 0)
        for name, receipt in receipts.items():
            tx = receipt["transactionHash"]
            tx = tx if isinstance(tx, str) else f"0x{tx.hex()}"
            data = bytes.fromhex(chain.rpc("eth_getTransactionByHash", [tx])["input"][2:])
            calldata = sum(4 if x == 0 else 16 for x in data)
            by_class, calls = _opcode_gas(chain, tx)
            call_overhead = (
                receipt["gasUsed"] - 21_000 - calldata - sum(by_class.values()) - sum(g for _, g in calls)
            )
            parts = [
                ("intrinsic", 21_000),
                ("calldata", calldata),
                *[(f"call {to[:10]}", g) for to, g in calls],
                ("call overhead (cold account, memory)", call_overhead),
                *by_class.most_common(),
            ]
            print(
                f"breakdown {name} {receipt['gasUsed']:,} gas: " + ", ".join(f"{k} {v:,}" for k, v in parts)
            )


def print_rows(title: str, rows: list[dict], baseline: int) -> None:
    print(title)
    print(
        f"{'N':>4} {'1st contribute':>15} {'contribute':>11} {'finalize':>9} {'claim':>7} {'per peer-round':>15}"
        f" {'/ baseline':>10}"
    )
    for r in rows:
        print(
            f"{r['n']:>4} {r['first_contribute']:>15,.0f} {r['contribute']:>11,.0f} {r['finalize']:>9,.0f} "
            f"{r['claim']:>7,.0f} {r['per_peer_round']:>15,.0f} {r['per_peer_round'] / baseline:>10.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N in (1, 10) instead of (1, 10, 100), claimMany R <= 10")
    parser.add_argument("--gas-price-gwei", type=float, default=0.01, help="L2 execution gas price")
    parser.add_argument("--eth-usd", type=float, default=3_000.0, help="ETH price in USD")
    parser.add_argument("--l1-base-fee-gwei", type=float, default=10.0, help="L1 base fee (for the L1 data fee)")
    parser.add_argument("--l1-fee-scalar", type=int, default=2_000, help="the L2's Ecotone baseFeeScalar")
    parser.add_argument("--breakdown", action="store_true", help="also trace where contribute/claim gas goes")
    parser.add_argument("--certificate-only", action="store_true", help="only the group certificate's figures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.certificate_only:
        certificates_only(args.quick)
        return
    if args.breakdown:
        breakdown()
    sizes = (1, 10) if args.quick else (1, 10, 100)
    claim_rounds = CLAIM_ROUNDS[:2] if args.quick else CLAIM_ROUNDS
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
        deployed = {name: f.deploy(name) for name in (*VERIFIERS.values(), "TestToken")}
        deploy = {name: receipt["gasUsed"] for name, (_, receipt) in deployed.items()}
        deploy["SwarmEscrow"] = f.deploy("SwarmEscrow", world.token, 100, 10_000, 600, 2_000, 10, 0, [])[1]["gasUsed"]
        for p in world.peers:
            p.stake(100 * (max(claim_rounds) + 2 + len(sizes) + 2 * len(CERT_SIZES)))  # collateral: minStake per contribution in flight
        cache = ProofCache()
        addresses = [p.address for p in world.peers]
        proofs = [statement(a, 0, 7_000 + i) for i, a in enumerate(addresses)]
        later = [statement(a, RING, 8_000 + i) for i, a in enumerate(addresses)]
        claims = [statement(addresses[0], r, 9_000 + r) for r in range(max(claim_rounds))]
        old, new = free_rider_statements(world)
        t_prove = time.monotonic()  # every proof of the run at once (free_rider's then from the cache)
        proven = cache.prove(proofs + later + claims + old + [c for case in new for c in case])
        t_prove = time.monotonic() - t_prove
        n_peers = len(addresses)
        proofs, later = proven[:n_peers], proven[n_peers : 2 * n_peers]
        claims = proven[2 * n_peers : 2 * n_peers + len(claims)]
        c = proofs[0]
        baseline = {}
        for key, name in VERIFIERS.items():
            verifier = f.contract(name, deployed[name][0])
            call = verifier.functions.verifyTx(c.proof.abi_tuple(), c.public_inputs(NORM_BOUND))
            baseline[key] = call.estimate_gas({"from": f.address})
        batch_verifier = f.contract(BATCH_STANDIN_VERIFIER, deployed[BATCH_STANDIN_VERIFIER][0])
        verify_batch = {n: batch_verifier.functions.verifyBatch(batch_words(proofs[:n], NORM_BOUND)).estimate_gas(
            {"from": f.address}) for n in sizes}  # fmt: skip
        rows = {
            key: [measure(world, n, proofs, deployed[name][0], later if key == "batch" else None) for n in sizes]
            for key, name in VERIFIERS.items()
        }
        many = {r: claim_many(world, r, deployed[FAST_STANDIN_VERIFIER][0], claims) for r in claim_rounds}
        riders = free_rider(world, cache)
        cert_sizes = [n for n in CERT_SIZES if n <= max(sizes)] if args.quick else list(CERT_SIZES)
        certs = [certificate(world, n, proofs, deployed[BATCH_STANDIN_VERIFIER][0]) for n in cert_sizes]
    print(f"stand-in proofs: {cache.made + cache.reused} asked, {cache.made} proven now in {t_prove:.1f} s (zokrates-js, "
          f"{PROOFS_PER_PROCESS} per process), the rest from {cache.path.relative_to(PROJECT_ROOT)}")  # fmt: skip
    print("deploy gas: " + ", ".join(f"{k} {v:,}" for k, v in deploy.items()))
    print(
        f"baseline: bare verifyTx transaction (Groth16, 4 public inputs): ZoKrates' {baseline['zokrates']:,} gas, "
        f"fast {baseline['fast']:,} gas ({baseline['fast'] / baseline['zokrates']:.3f}x), batch verifier's "
        f"verifyTx {baseline['batch']:,} ({baseline['batch'] - baseline['fast']:+,} vs fast)"
    )
    print("bare verifyBatch transaction: " + ", ".join(
        f"n={n} {g:,} gas ({g / n:,.0f} per proof, {g / n / baseline['fast']:.3f}x fast verifyTx)"
        for n, g in verify_batch.items()))  # fmt: skip
    for key, name in VERIFIERS.items():
        label = "batched: one contributeBatch of all N (contribute = its gas / N)" if key == "batch" else ""
        print_rows(f"{key} verifier ({name}) {label}:", rows[key], baseline["zokrates"])
    print(f"batched, round {RING} (ring slots of round 0 reused): " + ", ".join(
        f"N={r['n']} contribute {r['steady']:,.0f}, per peer-round {r['steady_per_peer_round']:,.0f}"
        for r in rows["batch"]))  # fmt: skip
    fast, batched = rows["fast"][-1], rows["batch"][-1]
    print(
        f"claimMany, N={fast['n']} (per peer-round = (contributions + finalize)/N + claimMany/R), single "
        f"contribute (fast) | batched (round {RING}: ring slots reused):"
    )
    best = {}
    for r, gas in many.items():
        per = {k: row[f] - row["claim"] + gas / r
               for k, row, f in (("fast", fast, "per_peer_round"), ("batch", batched, "steady_per_peer_round"))}
        best[r] = per
        print(
            f"  R={r:>3}: claimMany {gas:>9,} gas, {gas / r:>8,.0f} per round, per peer-round "
            f"{per['fast']:,.0f} | {per['batch']:,.0f}"
        )
    r_max = max(many)
    print("free rider's tokens per round next to 3 honest peers (reward 1,000; an honest peer's share with the "
          "rider in: 250):")
    for label, paid in riders.items():
        print(f"  {label:<38} {paid:>6,}")
    cert_summary = print_certificates(certs)
    zk = rows["zokrates"][-1]
    flat = fast["finalize"] / rows["fast"][0]["finalize"]
    n = fast["n"]
    for label, per in (("single contribute (fast), a claim per round", fast["per_peer_round"]),
                       (f"batched, claimMany over R={r_max}", best[r_max]["batch"])):  # fmt: skip
        eth = n * per * args.gas_price_gwei * 1e-9
        print(
            f"one round, {n} peers, {label}: {n * per:,.0f} gas = {eth:.7f} ETH = {eth * args.eth_usd:.4f} USD at "
            f"{args.gas_price_gwei} gwei and {args.eth_usd:,.0f} USD/ETH (L2 execution; the L1 data fee comes on "
            "top)"
        )
    # OP-stack (Ecotone/Fjord) L1 data fee ~ bytes * 16 * l1BaseFee * baseFeeScalar / 1e6 (the blob term is ~0 at a
    # floor blob fee); proofs are random words, so the batch's calldata does not compress
    size = batched["batch_bytes"]
    l1_eth = size * 16 * args.l1_base_fee_gwei * args.l1_fee_scalar / 1e6 * 1e-9
    print(
        f"L1 data fee of one batch of {n}: {size:,} bytes of calldata ({size / n:,.0f} per contribution) = "
        f"{l1_eth:.7f} ETH = {l1_eth * args.eth_usd:.4f} USD at L1 base fee {args.l1_base_fee_gwei} gwei, "
        f"baseFeeScalar {args.l1_fee_scalar} (contracts/README.md, 'Cost on an OP-stack L2')"
    )
    print(
        f"chain: batched {best[r_max]['batch']:,.0f} gas/peer-round at N={n} with claimMany over R={r_max} "
        f"({best[r_max]['batch'] / TARGET_PER_PEER_ROUND:.3f}x the 100k target, "
        f"{best[r_max]['batch'] / best[r_max]['fast']:.3f}x the single path's), "
        f"{batched['steady_per_peer_round']:,.0f} with a claim per round, {batched['per_peer_round']:,.0f} in the "
        f"first {RING} rounds (new record slots); single contribute (fast) {best[r_max]['fast']:,.0f} / {fast['per_peer_round']:,.0f}"
        f" (ZoKrates' verifier {zk['per_peer_round']:,.0f}); verifyBatch n={max(sizes)} "
        f"{verify_batch[max(sizes)] / max(sizes):,.0f} gas/proof vs verifyTx {baseline['fast']:,}; finalize "
        f"N={n}/N=1 {flat:.2f}x; free rider (zero update) {riders['zero update, escrow before issue 13']} -> "
        f"{riders['zero update']} per round; certificate per peer-round {cert_summary}; {time.monotonic() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
