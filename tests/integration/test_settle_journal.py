"""The journaled settler against an RPC that dies and comes back, and against chain reorganizations (anvil_reorg),
on a real anvil with the real escrow and stand-in proofs by real zokrates-js: nothing is sent twice (every
transaction the settler signs is counted, and the account's nonce moves by exactly that many), nothing is forgotten
(each contribution, audit answer and claim is on the canonical chain exactly once), and the journal empties once
everything is final."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from settle_support import (
    SLOTS_PER_EPOCH,
    Recorder,
    TcpProxy,
    chain_record,
    count_signed,
    journal_rows,
    report,
    wait_until,
)

from swarm.chain import DevChain
from swarm.chain.client import ChainClient
from swarm.chain.testing import EscrowWorld, StandInProver
from swarm.settlement.settler import RoundSettler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with DevChain(accounts=4, extra_args=["--slots-in-an-epoch", str(SLOTS_PER_EPOCH)]) as c:
        yield c


def has_receipt(chain: DevChain, tx: str) -> bool:
    return chain.rpc("eth_getTransactionReceipt", [tx]) is not None


def staked_peer(world: EscrowWorld) -> tuple[ChainClient, ChainClient, DevChain, int, int]:
    """(peer, auditor, chain, experiment, the peer's nonce now) with the peer staked in a funded experiment."""
    me, auditor = world.peers[:2]
    x = world.create_experiment(audits=2, pool=5_000)
    me.stake(300)
    return me, auditor, world.chain, x, me.w3.eth.get_transaction_count(me.address)


def settle_everything(world: EscrowWorld, data: Path) -> None:
    """Make every transaction final and wait for the settler to empty its journal."""
    world.chain.rpc("anvil_mine", [hex(2 * SLOTS_PER_EPOCH + 2)])
    wait_until(lambda: journal_rows(data) == ([], []), "the journal emptied")


def test_an_rpc_that_dies_mid_loop_and_comes_back_loses_and_doubles_nothing(world: EscrowWorld, tmp_path: Path) -> None:
    me, auditor, chain, x, nonce0 = staked_peer(world)
    rpc = TcpProxy(chain.port).start()
    client = ChainClient(rpc.url, me.wallet, escrow=world.escrow, request_timeout=2.0)
    events, data = Recorder(), tmp_path / "peer-data"
    try:
        with RoundSettler(client, x, prover=StandInProver(), on_event=events, poll_s=0.2, data_dir=data) as settler:
            signed = count_signed(client)
            settler(report(0, 101))
            events.wait(lambda e: e.kind == "contributed" and e.round == 0, "round 0 contributed")
            world.goto(x, 1)
            chain.rpc("evm_setAutomine", [False])
            settler(report(1, 102))
            wait_until(lambda: len(signed) == 2 and chain.rpc("eth_getTransactionByHash", [signed[1]]), "round 1 sent")
            rpc.kill()  # the RPC dies while the settler waits for round 1's receipt
            chain.rpc("evm_setAutomine", [True])
            chain.rpc("evm_mine", [])  # round 1 is mined while the settler cannot see it
            world.goto(x, 0, "audit")
            auditor.open_audit(x, 0, 0, me.address, 0)  # round 0 is audited while it cannot see it
            world.goto(x, 2)
            settler(report(2, 103))  # and round 2 ends while the RPC is down
            events.wait(lambda e: e.kind == "failed" and e.round == 2, "round 2 failing to open (RPC down)")
            assert has_receipt(chain, signed[1]) and not any(e.kind == "contributed" and e.round == 1
                                                             for e in events.events)  # fmt: skip
            rpc.start()  # the RPC is back
            events.wait(lambda e: e.kind == "contributed" and e.round == 1, "round 1 found mined")
            events.wait(lambda e: e.kind == "audit_answered" and e.round == 0, "the audit answered")
            events.wait(lambda e: e.kind == "contributed" and e.round == 2, "round 2 contributed")
            world.goto(x, 2, "after", offset=1)
            for r in (0, 1, 2):
                events.wait(lambda e, r=r: e.kind == "claimed" and e.round == r, f"round {r} claimed")
            settle_everything(world, data)
    finally:
        rpc.kill()
    assert any(e.kind == "failed" and "did not answer" in e.detail["error"] for e in events.events)  # it did fire
    seen = chain_record(me, x, me.address)
    assert seen["Contributed"] == {(0, 0): 1, (1, 0): 1, (2, 0): 1}
    assert seen["AuditAnswered"] == {(0, 0, 0): 1}
    assert seen["Claimed"] == {(0, 0): 1, (1, 0): 1, (2, 0): 1}
    # 3 contributions, 1 answer, 3 finalize, 1 claimMany: each signed once, and nothing else went out
    assert len(signed) == 8 == me.w3.eth.get_transaction_count(me.address) - nonce0
    assert set(seen["txs"]) <= set(signed)


def test_reorganizations_neither_double_nor_forget(world: EscrowWorld, tmp_path: Path) -> None:
    me, auditor, chain, x, nonce0 = staked_peer(world)
    client = ChainClient(chain.rpc_url, me.wallet, escrow=world.escrow)
    events, data = Recorder(), tmp_path / "peer-data"
    with RoundSettler(client, x, prover=StandInProver(), on_event=events, poll_s=0.2, data_dir=data) as settler:
        signed = count_signed(client)
        settler(report(0, 4242))
        events.wait(lambda e: e.kind == "contributed", "round 0 contributed")
        (contribution,) = signed
        # 1. the block holding our contribution is replaced by an empty one: the same bytes go in again
        chain.rpc("anvil_reorg", [1, []])
        wait_until(lambda: has_receipt(chain, contribution) and any(t[5] for t in journal_rows(data)[1]),
                   "the contribution sent again and mined")  # fmt: skip
        # 2. an audit and our answer; the reorganization keeps the audit (re-included) and drops the answer
        world.goto(x, 0, "audit")
        opened = auditor.open_audit(x, 0, 0, me.address, 0)
        events.wait(lambda e: e.kind == "audit_answered", "the audit answered")
        answer = signed[1]
        wait_until(lambda: has_receipt(chain, answer), "the answer mined")
        raw_open = chain.rpc("eth_getRawTransactionByHash", [opened["transactionHash"].to_0x_hex()])
        depth = client.block_number() - opened["blockNumber"] + 1
        chain.rpc("anvil_reorg", [depth, [[raw_open, 0]]])
        wait_until(lambda: chain_record(me, x, me.address)["AuditAnswered"] == {(0, 0, 0): 1}, "the answer again")
        assert has_receipt(chain, answer)
        # 3. finalize and claim are reorganized away: both go in again, in nonce order
        world.goto(x, 0, "after", offset=1)
        events.wait(lambda e: e.kind == "claimed", "round 0 claimed")
        wait_until(lambda: len(signed) == 4 and all(has_receipt(chain, t) for t in signed[2:]), "claim mined")
        chain.rpc("anvil_reorg", [2, []])
        assert not me.record(x, 0, 0, me.address).claimed
        wait_until(lambda: me.record(x, 0, 0, me.address).claimed, "the claim again")
        settle_everything(world, data)
        assert settler.rounds == {}
    seen = chain_record(me, x, me.address)
    assert seen["Contributed"] == {(0, 0): 1} and seen["AuditAnswered"] == {(0, 0, 0): 1}
    assert seen["Claimed"] == {(0, 0): 1}
    assert set(seen["txs"]) <= set(signed)  # what is on-chain is what was signed first, byte for byte
    assert len(signed) == 4 == me.w3.eth.get_transaction_count(me.address) - nonce0  # contribute answer finalize claim
    assert sum(e.kind == "claimed" for e in events.events) == 1


def test_the_watchers_client_shares_the_journal_and_its_lost_transaction_is_sent_again(world: EscrowWorld,
                                                                                      tmp_path: Path) -> None:
    """The stage role hands the watcher's client (same wallet) to `journal_also`: a transaction of it that the node
    loses is sent again, byte for byte, by the settler's reconciler, while the watcher still waits for it."""
    me, _, chain, x, nonce0 = staked_peer(world)
    data = tmp_path / "peer-data"
    client = ChainClient(chain.rpc_url, me.wallet, escrow=world.escrow)
    with RoundSettler(client, x, prover=StandInProver(), poll_s=0.2, data_dir=data) as settler:
        watcher = settler.journal_also(ChainClient(chain.rpc_url, me.wallet, escrow=world.escrow))
        chain.rpc("evm_setAutomine", [False])
        try:
            done: list = []
            sending = threading.Thread(target=lambda: done.append(watcher.approve(7)), daemon=True)
            sending.start()
            wait_until(lambda: journal_rows(data)[1], "the watcher's transaction journaled")
            ((tx, nonce, kind, _, _, _),) = journal_rows(data)[1]
            wait_until(lambda: chain.rpc("eth_getTransactionByHash", [tx]) is not None, "it reached the node")
            chain.rpc("anvil_dropTransaction", [tx])
            assert chain.rpc("eth_getTransactionByHash", [tx]) is None and kind is None
            wait_until(lambda: chain.rpc("eth_getTransactionByHash", [tx]) is not None, "sent again by the settler")
        finally:
            chain.rpc("evm_setAutomine", [True])
        chain.rpc("evm_mine", [])
        sending.join(30)
        assert done and done[0]["transactionHash"].to_0x_hex() == tx  # the watcher got the receipt of its own bytes
        settle_everything(world, data)
    assert nonce == nonce0 and me.w3.eth.get_transaction_count(me.address) == nonce0 + 1
