"""The settler under failures, on a real anvil with the real escrow and real stand-in proofs (zokrates-js):
audits from several experiments, an RPC that fails mid-loop, a receipt wait that times out after the transaction
was mined, a claim that reverts, an unexpected exception, and a shutdown with a proof in flight.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
import requests
from settle_support import Recorder, wait_until
from web3 import Web3

from swarm.chain.client import ChainClient
from swarm.chain.testing import EscrowWorld, StandInProver
from swarm.settlement.settler import RoundSettler

pytestmark = pytest.mark.integration

DEADLINE_S = 120.0


class Faulty(Web3.HTTPProvider):
    """Forwards to the node, except: `fail_logs` eth_getLogs calls raise a connection error, and while
    `hide_receipts` is set every receipt reads as not mined yet. Records the getLogs ranges asked for."""

    fail_logs = 0
    hide_receipts = False

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.log_ranges: list[tuple[int, int]] = []

    def make_request(self, method, params):
        if method == "eth_getLogs":
            self.log_ranges.append((int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)))
            if self.fail_logs > 0:
                self.fail_logs -= 1
                raise requests.exceptions.ConnectionError("connection refused (simulated)")
        if method == "eth_getTransactionReceipt" and self.hide_receipts:
            return {"jsonrpc": "2.0", "id": 1, "result": None}
        return super().make_request(method, params)


def report(round: int, root: int, stage: int = 0) -> SimpleNamespace:
    return SimpleNamespace(round=round, stage=stage, commitment=SimpleNamespace(root=root, norm_sq=100, num_chunks=5))


def settler_client(world: EscrowWorld, peer: ChainClient, **kwargs) -> ChainClient:
    client = ChainClient(world.chain.rpc_url, peer.wallet, escrow=world.escrow, **kwargs)
    client.w3.provider = Faulty(world.chain.rpc_url)
    return client


def test_audits_of_other_experiments_and_peers_are_left_alone_and_a_flaky_rpc_loses_none(world: EscrowWorld) -> None:
    me, other, auditor = world.peers[:3]
    x = world.create_experiment(audits=2, pool=5_000)
    y = world.create_experiment(audits=2)
    me.stake(300)
    other.stake(100)
    client = settler_client(world, me)
    prover, events = StandInProver(), Recorder()
    joined = client.block_number()
    with RoundSettler(client, x, prover=prover, on_event=events, poll_s=0.2) as settler:
        settler(report(0, 4242))
        events.wait(lambda e: e.kind == "contributed", "contribution")
        # the same peer in experiment y, and another peer in x, each audited too
        in_y, of_other = world.prove([world.contribution(me, y, 0, 0, 777), world.contribution(other, x, 0, 0, 9)], x)
        me.contribute(in_y.model_copy(update={"experiment": y}))
        other.contribute(of_other)
        world.goto(y, 0, "audit")  # y was created a block after x: its audit window opens a second later
        client.w3.provider.fail_logs = 3  # the RPC fails while the audits are opened
        auditor.open_audit(y, 0, 0, me.address, 0)  # an earlier block than ours: must not be answered nor block us
        auditor.open_audit(x, 0, 0, other.address, 0)
        auditor.open_audit(x, 0, 0, me.address, 1)
        auditor.open_audit(x, 0, 0, me.address, 0)
        targeted = auditor.open_targeted_audit(x, 0, 0, me.address, 2)
        wanted = (1 << 0) | (1 << 1) | (1 << targeted)
        wait_until(lambda: me.record(x, 0, 0, me.address).audits_answered == wanted, "answers to all three audits")
        assert me.record(y, 0, 0, me.address).audits_answered == 0
        assert {job[0] for job in prover.jobs} == {x}  # nothing of experiment y was proved
        assert client.w3.provider.fail_logs == 0  # the failures did happen
        assert any(e.kind == "failed" and e.detail["step"] == "_read_audits" for e in events.events)
        world.goto(x, 0, "after", offset=1)
        claimed = events.wait(lambda e: e.kind == "claimed", "claim")
        assert int(claimed.detail["amount"]) == 1_000  # the other peer left its audit unanswered: no share
    ranges = client.w3.provider.log_ranges
    assert ranges and min(lo for lo, _ in ranges) >= joined  # never from block 0
    assert max(hi - lo + 1 for lo, hi in ranges) <= 2_000


def test_a_contribution_mined_while_its_receipt_wait_timed_out_is_still_defended(world: EscrowWorld) -> None:
    me, auditor = world.peers[:2]
    x = world.create_experiment(audits=1, pool=5_000)
    me.stake(100)
    client = settler_client(world, me, receipt_timeout=1.0)
    client.w3.provider.hide_receipts = True
    events = Recorder()
    with RoundSettler(client, x, prover=StandInProver(), on_event=events, poll_s=0.2) as settler:
        settler(report(0, 31337))
        events.wait(lambda e: e.kind == "failed" and "not mined" in e.detail["error"], "a receipt timeout")
        client.w3.provider.hide_receipts = False
        events.wait(lambda e: e.kind == "contributed", "the contribution found on-chain")
        world.goto(x, 0, "audit")
        auditor.open_audit(x, 0, 0, me.address, 0)
        events.wait(lambda e: e.kind == "audit_answered", "the audit answered")
        world.goto(x, 0, "after", offset=1)
        events.wait(lambda e: e.kind == "claimed", "claim")
    assert me.stake_of().active == 100 and me.stake_of().locked == 0


def test_a_claim_that_reverts_for_good_does_not_stop_the_later_rounds(world: EscrowWorld) -> None:
    me, auditor = world.peers[:2]
    x = world.create_experiment(audits=1, pool=5_000)
    me.stake(200)
    client = settler_client(world, me)
    prover, events = StandInProver(), Recorder()
    with RoundSettler(client, x, prover=prover, on_event=events, poll_s=0.2) as settler:
        settler(report(0, 1001))
        events.wait(lambda e: e.kind == "contributed" and e.round == 0, "round 0 contribution")
        prover.failing.add(0)  # from now on this peer cannot prove anything of round 0: it cannot answer
        world.goto(x, 1)
        settler(report(1, 1002))
        events.wait(lambda e: e.kind == "contributed" and e.round == 1, "round 1 contribution")
        world.goto(x, 0, "audit")
        auditor.open_audit(x, 0, 0, me.address, 0)
        world.goto(x, 0, "after", offset=1)
        auditor.slash(x, 0, 0, me.address, 0)
        gave_up = events.wait(lambda e: e.kind == "gave_up", "round 0 given up")
        assert gave_up.round == 0 and "PeerSlashed" in gave_up.detail["why"]
        world.goto(x, 1, "after", offset=1)
        claimed = events.wait(lambda e: e.kind == "claimed", "round 1 claim")
        assert claimed.round == 1 and int(claimed.detail["amount"]) == 1_000
        n_failed = sum(e.kind == "failed" for e in events.events)
        time.sleep(1.0)  # several passes: round 0 is not retried (no failure every pass, D3)
        assert sum(e.kind == "failed" for e in events.events) == n_failed
        assert settler.rounds == {}


class BrokenOnce(StandInProver):
    """A prover whose first job raises something no step expects (a bug), and whose jobs otherwise hang until
    shutdown when `hang` is set."""

    hang = False

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.hanging: list[Future] = []

    def submit(self, commitment, **job):
        self.calls += 1
        if self.calls == 1:
            raise KeyError("an unexpected bug")
        if self.hang:
            f: Future = Future()
            self.hanging.append(f)
            return f
        return super().submit(commitment, **job)

    def shutdown(self) -> None:
        for f in self.hanging:
            f.set_exception(RuntimeError("shut down"))
        super().shutdown()


def test_an_unexpected_error_is_reported_and_shutdown_does_not_wait_for_a_proof(world: EscrowWorld) -> None:
    me = world.peers[0]
    x = world.create_experiment(audits=1)
    me.stake(200)
    client = settler_client(world, me)
    prover, events = BrokenOnce(), Recorder()
    settler = RoundSettler(client, x, prover=prover, on_event=events, poll_s=0.2).start()
    try:
        settler(report(0, 55))
        failed = events.wait(lambda e: e.kind == "failed", "the bug reported")
        assert "KeyError" in failed.detail["error"]
        settler(report(0, 56))  # the thread is alive and takes the next report
        events.wait(lambda e: e.kind == "contributed", "contribution after the bug")
        prover.hang = True
        world.goto(x, 1)
        settler(report(1, 57))
        wait_until(lambda: prover.hanging, "a proof in flight")
    finally:
        t0 = time.monotonic()
        settler.shutdown()
        took = time.monotonic() - t0
    assert took < 10.0  # the prover is stopped before the thread is joined (D5)


def test_an_update_below_the_norm_floor_is_not_sent(world: EscrowWorld) -> None:
    """A round with no training (zero update) is skipped before any proof or transaction: the escrow would revert
    it (NormBelowMinimum) and the peer would pay gas for nothing."""
    me = world.peers[0]
    x = world.create_experiment(audits=1, pool=5_000)
    me.stake(100)
    client = settler_client(world, me)
    prover, events = StandInProver(), Recorder()
    with RoundSettler(client, x, prover=prover, on_event=events, poll_s=0.2) as settler:
        zero = SimpleNamespace(round=0, stage=0, commitment=SimpleNamespace(root=77, norm_sq=0, num_chunks=5))
        settler(zero)
        skipped = events.wait(lambda e: e.kind == "skipped", "the zero update skipped")
        assert skipped.round == 0 and "norm floor" in skipped.detail["why"]
        assert prover.jobs == [] and not me.record(x, 0, 0, me.address).exists  # no proof, no transaction
        settler(report(0, 4243))  # the same round with a real update still goes through
        events.wait(lambda e: e.kind == "contributed", "the real update contributed")
    assert len(prover.jobs) >= 1 and me.record(x, 0, 0, me.address).exists
