"""Settlers that batch (issue 9): on a real anvil with the escrow, the batch stand-in verifier and stand-in proofs by
real zokrates-js, three paid peers of one round (three wallets) hear each other's contributions on an in-memory
gossip path (the GossipRelay listener interface, real GossipMessages). The peer ranked first by
swarm.chain.batching submits one contributeBatch with all three; the others send nothing and are paid; the
submitter gets the batch fee. When the first-ranked peer gossiped its proof and died, the others send their own
`contribute` one inclusion margin before the window closes, and are paid."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from settle_support import Recorder, count_signed, report, wait_until

from swarm.chain import DevChain
from swarm.chain.batching import duty_order
from swarm.chain.client import ChainClient
from swarm.chain.safety import INCLUSION_MARGIN_S
from swarm.chain.testing import EscrowWorld, StandInProver, Timing
from swarm.network.gossip.messages import GossipMessage
from swarm.settlement.costs import gas_report
from swarm.settlement.settler import RoundSettler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FEE = 7
REWARD = 900
TIMING = Timing(round_duration=100, submit_window=60, audit_window=100)


@pytest.fixture
def bworld(chain: DevChain) -> Iterator[EscrowWorld]:
    """A world whose experiments use the batch stand-in verifier, with a batch fee of FEE per entry."""
    snapshot = chain.rpc("evm_snapshot", [])
    try:
        yield EscrowWorld(chain, verifier_contract="BatchStandInChunkVerifier", batch_fee=FEE, timing=TIMING)
    finally:
        chain.rpc("evm_revert", [snapshot])


class Bus:
    """In-memory gossip: what one settler publishes reaches every other settler's `on_gossip` as a GossipMessage."""

    def __init__(self) -> None:
        self.settlers: list[RoundSettler] = []

    def join(self, s: RoundSettler) -> RoundSettler:
        s.publish = lambda c, audit: self.send(c, audit, sender=s)
        self.settlers.append(s)
        return s

    def send(self, c, audit: bool = False, sender: RoundSettler | None = None) -> None:
        msg = GossipMessage.for_contribution("batch-test", c, audit=audit)
        for s in self.settlers:
            if s is not sender:
                s.on_gossip(msg)


def jump(w: EscrowWorld, at: int) -> None:
    """Move the chain's clock to `at` (one block mined there): the settlers read it as now."""
    w.chain.set_next_timestamp(at)
    w.chain.rpc("evm_mine", [])


def start_settlers(w: EscrowWorld, x: int, peers: list[ChainClient], bus: Bus, tmp: Path, stack: ExitStack,
                   **kw) -> list[tuple[RoundSettler, Recorder, list[str]]]:  # fmt: skip
    out = []
    for i, p in enumerate(peers):
        rec = Recorder()
        s = bus.join(RoundSettler(p, x, prover=StandInProver(workers=1), on_event=rec, poll_s=0.3,
                                  data_dir=tmp / f"peer{i}", batches=True, **kw))  # fmt: skip
        stack.enter_context(s)
        out.append((s, rec, count_signed(p, "what")))
    return out


def funded_round(w: EscrowWorld, peers: list[ChainClient]) -> tuple[int, int, int]:
    """(experiment, when round 0's submissions open, when they close), the chain's clock at the opening."""
    x = w.create_experiment(pool=10_000, reward_per_round=REWARD)
    for p in peers:
        p.stake(300)
    e = w.funder.experiment(x)
    opens, end = e.start + e.round_duration, e.submission_end(0)
    jump(w, opens)
    return x, opens, end


def test_one_batch_carries_the_round_and_everyone_is_paid(bworld: EscrowWorld, tmp_path: Path) -> None:
    w = bworld
    peers = w.peers[:3]
    x, opens, end = funded_round(w, peers)
    first = duty_order(x, 0, [p.address for p in peers])[0]
    bus = Bus()
    with ExitStack() as stack:
        settlers = start_settlers(w, x, peers, bus, tmp_path, stack)
        wait_until(lambda: all(p.stake_of().batch_experiment == x for p in peers), "every peer allowed batches")
        before = {p.address: p.token_balance() for p in peers}
        griefer = w.peers[3]  # gossips a valid proof of another chunk than c0: it would revert the whole batch
        griefer.allow_batches(x)
        c0 = w.contribution(griefer, x, 0, 0, 77).chunk
        bus.send(w.prove([w.contribution(griefer, x, 0, 0, 77, chunk=(c0 + 1) % 5)], x)[0])
        for i, (s, _, _) in enumerate(settlers):
            s(report(0, 1_000 + i))
        wait_until(lambda: all(len(s.heard.get(0, {})) == 3 for s, _, _ in settlers), "each heard all three")
        assert all(griefer.address.lower() not in {p for _, p in s.heard[0]} for s, _, _ in settlers)  # left out
        jump(w, opens + TIMING.submit_window // 2)  # the first-ranked peer's duty time
        for _, rec, _ in settlers:
            rec.wait(lambda e: e.kind == "contributed" and e.round == 0, "round 0 contributed")

        (batch,) = w.funder.events("BatchContributed", where={"experimentId": x})
        assert batch["submitter"] == first and batch["included"] == 3 and batch["fee"] == 2 * FEE
        recorded = w.funder.events("Contributed", where={"experimentId": x})
        assert sorted(e["peer"] for e in recorded) == sorted(p.address for p in peers)
        assert {e["tx"] for e in recorded} == {batch["tx"]}  # all three in the one batch transaction
        assert w.funder.w3.eth.get_block(batch["block"])["timestamp"] < end - INCLUSION_MARGIN_S  # before fallback
        calls = [c for _, _, whats in settlers for c in whats if c.startswith("contribute")]
        assert calls == ["contributeBatch()"]  # nobody sent a single contribute
        (ranked,) = [(s, rec) for s, rec, _ in settlers if s.client.address == first]
        assert ranked[0].batch_fees == 2 * FEE
        assert ranked[1].wait(lambda e: e.kind == "batched", "the batched event").detail["included"] == 3

        jump(w, w.funder.experiment(x).audit_end(0) + 1)
        for s, rec, _ in settlers:
            claimed = rec.wait(lambda e: e.kind == "claimed" and e.round == 0, "round 0 claimed")
            assert int(claimed.detail["amount"]) == REWARD // 3
        for p in peers:
            fee = 2 * FEE if p.address == first else 0
            assert p.token_balance() == before[p.address] + REWARD // 3 + fee
        costs = gas_report(w.funder, x)  # what the demo's summary prints
        assert (costs.contributions, costs.batched, costs.batches, costs.finalized, costs.claims) == (3, 3, 1, 3, 3)
        assert costs.contribute_gas == w.funder.w3.eth.get_transaction_receipt(batch["tx"])["gasUsed"]
        assert costs.finalize_gas > 0 and costs.claim_gas > 0 and "3 of them in 1 batches" in costs.line()
        assert costs.per_peer_round == (costs.contribute_gas + costs.finalize_gas + costs.claim_gas) / 3


def test_a_silent_first_submitter_leaves_each_peer_to_contribute_its_own(bworld: EscrowWorld, tmp_path: Path) -> None:
    w = bworld
    peers = w.peers[:3]
    x, _, end = funded_round(w, peers)
    order = duty_order(x, 0, [p.address for p in peers])
    dead = next(p for p in peers if p.address == order[0])
    live = [p for p in peers if p is not dead]
    dead.allow_batches(x)
    bus = Bus()
    with ExitStack() as stack:
        # no takeover by the next rank: only the first may batch, and it gossiped its proof and died
        settlers = start_settlers(w, x, live, bus, tmp_path, stack, batch_backups=0)
        wait_until(lambda: all(p.stake_of().batch_experiment == x for p in live), "every live peer allowed batches")
        for i, (s, _, _) in enumerate(settlers):
            s(report(0, 2_000 + i))
        (proof,) = w.prove([w.contribution(dead, x, 0, 0, 3_000)], x)
        bus.send(proof)  # its last words
        wait_until(lambda: all(len(s.heard.get(0, {})) == 3 for s, _, _ in settlers), "each heard all three")
        jump(w, end - INCLUSION_MARGIN_S)  # past every duty time: the fallback
        for _, rec, _ in settlers:
            rec.wait(lambda e: e.kind == "contributed" and e.round == 0, "round 0 contributed")

        assert w.funder.events("BatchContributed", where={"experimentId": x}) == []
        recorded = w.funder.events("Contributed", where={"experimentId": x})
        assert sorted(e["peer"] for e in recorded) == sorted(p.address for p in live)
        assert len({e["tx"] for e in recorded}) == 2
        for e in recorded:
            assert w.chain.rpc("eth_getTransactionByHash", [e["tx"]])["from"].lower() == e["peer"].lower()
            assert w.funder.w3.eth.get_block(e["block"])["timestamp"] < end  # before the window closed
        for _, _, whats in settlers:
            assert [c for c in whats if c.startswith("contribute")] == ["contribute()"]

        before = {p.address: p.token_balance() for p in live}
        jump(w, w.funder.experiment(x).audit_end(0) + 1)
        for s, rec, _ in settlers:
            claimed = rec.wait(lambda e: e.kind == "claimed" and e.round == 0, "round 0 claimed")
            assert int(claimed.detail["amount"]) == REWARD // 2
        for p in live:
            assert p.token_balance() == before[p.address] + REWARD // 2
        assert not dead.record(x, 0, 0, dead.address).exists


def test_a_batch_in_flight_is_not_sent_again_after_a_restart(bworld: EscrowWorld, tmp_path: Path) -> None:
    """The first-ranked settler signs its batch, never sees the receipt (the chain mines nothing) and is replaced by
    a new one on the same data dir: the journaled batch is waited for, no new batch nor contribute goes out, and
    once it is mined every peer has its record from that one transaction."""
    w = bworld
    peers = w.peers[:3]
    x = w.create_experiment(pool=10_000, reward_per_round=REWARD,
                            timing=Timing(round_duration=100, submit_window=120, audit_window=100))  # fmt: skip
    for p in peers:
        p.stake(300)
    e = w.funder.experiment(x)
    opens = e.start + e.round_duration
    jump(w, opens)
    first = duty_order(x, 0, [p.address for p in peers])[0]
    clients = [ChainClient(w.chain.rpc_url, p.wallet, escrow=w.escrow, receipt_timeout=3.0) for p in peers]
    bus = Bus()
    with ExitStack() as stack:
        others = start_settlers(w, x, [c for c in clients if c.address != first], bus, tmp_path, stack,
                                batch_backups=0)  # fmt: skip
        ranked_client = next(c for c in clients if c.address == first)
        ranked_stack = ExitStack()
        with ranked_stack:
            (ranked, rec, whats) = start_settlers(w, x, [ranked_client], bus, tmp_path / "first", ranked_stack,
                                                  batch_backups=0)[0]  # fmt: skip
            wait_until(lambda: all(p.stake_of().batch_experiment == x for p in peers), "every peer allowed batches")
            for i, (s, _, _) in enumerate([*others, (ranked, rec, whats)]):
                s(report(0, 4_000 + i))
            everyone = [s for s, _, _ in others] + [ranked]
            wait_until(lambda: all(len(s.heard.get(0, {})) == 3 for s in everyone), "each heard all three")
            w.chain.rpc("evm_setAutomine", [False])
            try:
                jump(w, opens + 60)  # the first-ranked peer's duty time
                wait_until(lambda: "contributeBatch()" in whats, "the batch signed")
                rec.wait(lambda e: e.kind == "failed", "the batch's receipt given up")
            except BaseException:
                w.chain.rpc("evm_setAutomine", [True])
                raise
        try:  # the settler is gone, its batch sits in the node's pool: a new settler takes over its journal
            again = RoundSettler(ChainClient(w.chain.rpc_url, ranked_client.wallet, escrow=w.escrow), x,
                                 prover=StandInProver(workers=1), on_event=(rec2 := Recorder()), poll_s=0.3,
                                 data_dir=tmp_path / "first" / "peer0", batches=True, batch_backups=0)  # fmt: skip
            passes: list[int] = []
            step = again.step
            again.step = lambda: (passes.append(1), step())[1]  # type: ignore[method-assign]
            bus.settlers.remove(ranked)
            stack.enter_context(bus.join(again))
            whats2 = count_signed(again.client, "what")
            assert list(again.rounds) == [(0, 0)]  # taken back from the journal, its batch still in flight
            wait_until(lambda: len(passes) >= 5, "five passes of the restarted settler")  # sending nothing
        finally:
            w.chain.rpc("evm_setAutomine", [True])
        w.chain.rpc("evm_mine", [])
        for r in [rec2, *(r for _, r, _ in others)]:
            r.wait(lambda e: e.kind == "contributed" and e.round == 0, "round 0 contributed")
        (batch,) = w.funder.events("BatchContributed", where={"experimentId": x})
        assert batch["submitter"] == first and batch["included"] == 3
        recorded = w.funder.events("Contributed", where={"experimentId": x})
        assert len(recorded) == 3 and {e["tx"] for e in recorded} == {batch["tx"]}
        assert not [c for c in whats2 if c.startswith("contribute")]  # the restarted settler sent neither
        assert [c for c in whats if c.startswith("contribute")] == ["contributeBatch()"]
        assert not [c for _, _, ws in others for c in ws if c.startswith("contribute")]
