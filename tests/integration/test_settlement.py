"""Round settlement through every real part: real zokrates-js proof, real anvil escrow, real rewards.

A stage peer's round hook commits its update, proves the chunk the contract picks, contributes, answers an audit
another peer opens, then finalizes the round and claims its share. Between contributing and the audit the settler
is replaced by a new one on the same data dir: the audit's proof is made from the update's codes and scales as the
journal kept them (the Merkle tree rebuilt), and the chain's verifier accepts it.
"""

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from swarm.chain.client import ChainClient
from swarm.chain.deploy import TOKEN, DemoConfig, deploy_demo
from swarm.chain.devchain import DevChain
from swarm.chain.wallet import Wallet
from swarm.settlement.settler import RoundSettler, SettlementEvent
from zk.background import BackgroundProver

pytestmark = pytest.mark.integration

CFG = DemoConfig(stage_params=(3000, 2000), chunk_size=1024, round_duration=20, submit_window=60, audit_window=80,
                 audits_per_peer=2, reward_per_round=10 * TOKEN, verifier="ChunkVerifier")


def _wait_for(events: list[SettlementEvent], kind: str, cond: threading.Condition, timeout: float) -> SettlementEvent:
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            for e in events:
                if e.kind == kind:
                    return e
                if e.kind == "failed":
                    pytest.fail(f"settlement failed: {e.detail}")
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {kind!r} event in {timeout:.0f} s; got {[e.kind for e in events]}")
            cond.wait(left)


class Shared:
    """One real prover for both settlers (each would start its own; sharing it keeps the test short)."""

    def __init__(self, prover: BackgroundProver) -> None:
        self.prover = prover

    def start(self) -> "Shared":
        return self

    def shutdown(self) -> None:
        pass

    def submit(self, commitment, **job):
        return self.prover.submit(commitment, **job)


def test_round_is_contributed_audited_finalized_and_paid(tmp_path):
    with DevChain(accounts=3) as chain:
        dep = deploy_demo(chain, CFG, stakers=[1, 2])
        me = ChainClient(dep.rpc_url, Wallet(chain.accounts[1].private_key), escrow=dep.escrow)
        auditor = ChainClient(dep.rpc_url, Wallet(chain.accounts[2].private_key), escrow=dep.escrow)
        events: list[SettlementEvent] = []
        cond = threading.Condition()

        def record(e: SettlementEvent) -> None:
            with cond:
                events.append(e)
                cond.notify_all()

        prover = BackgroundProver(workers=2).start()
        try:
            with RoundSettler(me, dep.experiment_id, on_event=record, prover=Shared(prover), data_dir=tmp_path) as first:
                state = me.experiment(dep.experiment_id)
                r = state.round_at(chain.latest_timestamp())
                delta = torch.randn(3000, generator=torch.Generator().manual_seed(0)) * 1e-3
                first(SimpleNamespace(round=r, stage=0, delta=delta))
                contributed = _wait_for(events, "contributed", cond, 300)
                assert contributed.detail["num_chunks"] == 3
                record_state = me.record(dep.experiment_id, r, 0, me.address)
                assert record_state.exists and not record_state.slashed
                committed = first.rounds[(r, 0)].commitment
            settler = RoundSettler(me, dep.experiment_id, on_event=record, prover=Shared(prover), data_dir=tmp_path)
            _settle_after_restart(settler, committed, chain, me, auditor, dep, state, r, events, cond)
        finally:
            prover.shutdown()


def _settle_after_restart(settler, committed, chain, me, auditor, dep, state, r, events, cond) -> None:
    """A new settler on the first one's data dir answers the audit from the journal's data and claims."""
    with settler:
        assert list(settler.rounds) == [(r, 0)]  # taken back from the journal, commitment rebuilt
        assert settler.rounds[(r, 0)].commitment.root == committed.root

        # another peer audits us: the settler must answer with a proof of the challenged chunk
        chain.set_next_timestamp(state.submission_end(r) + 1)
        auditor.open_audit(dep.experiment_id, r, 0, me.address, 0)
        answered = _wait_for(events, "audit_answered", cond, 300)
        assert answered.detail["chunk"] == me.audit_chunk(dep.experiment_id, r, 0, me.address, 0)
        rebuilt = settler.rounds[(r, 0)].commitment  # made again from the journal's codes and scales to prove it
        assert rebuilt is not committed and rebuilt.tree.levels == committed.tree.levels

        balance = me.token_balance()
        chain.set_next_timestamp(state.audit_end(r) + 2)
        claimed = _wait_for(events, "claimed", cond, 120)
        assert int(claimed.detail["amount"]) == CFG.reward_per_round  # sole contributor takes the round
        assert me.token_balance() == balance + CFG.reward_per_round
        assert me.round_state(dep.experiment_id, r).finalized
        assert me.record(dep.experiment_id, r, 0, me.address).audits_answered == 1
