"""Round settlement through every real part: real zokrates-js proof, real anvil escrow, real rewards.

A stage peer's round hook commits its update, proves the chunk the contract picks, contributes, answers an audit
another peer opens, then finalizes the round and claims its share.
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


def test_round_is_contributed_audited_finalized_and_paid():
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

        with RoundSettler(me, dep.experiment_id, on_event=record) as settler:
            state = me.experiment(dep.experiment_id)
            r = state.round_at(chain.latest_timestamp())
            delta = torch.randn(3000, generator=torch.Generator().manual_seed(0)) * 1e-3
            settler(SimpleNamespace(round=r, stage=0, delta=delta))
            contributed = _wait_for(events, "contributed", cond, 300)
            assert contributed.detail["num_chunks"] == 3
            record_state = me.record(dep.experiment_id, r, 0, me.address)
            assert record_state.exists and not record_state.slashed

            # another peer audits us: the settler must answer with a proof of the challenged chunk
            chain.set_next_timestamp(state.submission_end(r) + 1)
            auditor.open_audit(dep.experiment_id, r, 0, me.address, 0)
            answered = _wait_for(events, "audit_answered", cond, 300)
            assert answered.detail["chunk"] == me.audit_chunk(dep.experiment_id, r, 0, me.address, 0)

            balance = me.token_balance()
            chain.set_next_timestamp(state.audit_end(r) + 2)
            claimed = _wait_for(events, "claimed", cond, 120)
            assert int(claimed.detail["amount"]) == CFG.reward_per_round  # sole contributor takes the round
            assert me.token_balance() == balance + CFG.reward_per_round
            assert me.round_state(dep.experiment_id, r).finalized
            assert me.record(dep.experiment_id, r, 0, me.address).audits_answered == 1
