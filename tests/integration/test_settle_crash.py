"""kill -9 of a paid peer's settler process with open rounds, on a real anvil with the real escrow: restarted on the
same data dir, it sends its lost contribution again byte for byte, answers the audit opened while it was dead, claims
every round it earned with one claimMany, and the chain shows each contribution, answer and claim exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from settle_support import SLOTS_PER_EPOCH, Recorder, chain_record, journal_rows, wait_until

from runtime.procs import ChildProcess
from swarm.chain import DevChain
from swarm.chain.testing import EscrowWorld

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("settle_child.py")


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with DevChain(accounts=4, extra_args=["--slots-in-an-epoch", str(SLOTS_PER_EPOCH)]) as c:
        yield c


class SettlerProcess:
    """tests/integration/settle_child.py as a child process; its events land in `events` (a Recorder)."""

    def __init__(self, world: EscrowWorld, peer: int, experiment: int, data_dir: Path, log: Path) -> None:
        self.events = Recorder()
        env = {**os.environ, "SWARM_WALLET_KEY": world.chain.accounts[peer + 1].private_key.get_secret_value()}
        self._log = open(log, "ab")  # noqa: SIM115 -- closed in stop()
        self.child = ChildProcess(
            [sys.executable, str(CHILD), world.chain.rpc_url, world.escrow, str(experiment), str(data_dir)],
            name="settler", env=env, stdin=subprocess.PIPE, stderr=self._log, on_line=self._line,
        )  # fmt: skip

    def _line(self, line: str) -> None:
        if line.startswith("{"):
            self.events(json.loads(line))

    def __enter__(self) -> Self:
        self.child.start()
        self.events.wait(lambda e: e["kind"] == "ready", "the settler process ready", timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.child.stop()
        self._log.close()

    def round(self, r: int, root: int, stage: int = 0) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write(f"{r} {stage} {root}\n")
        self.child.stdin.flush()

    def kill9(self) -> None:
        self.child.send_signal(signal.SIGKILL)
        assert self.child.wait(10) == -signal.SIGKILL


def test_kill_9_with_open_rounds_then_restart_claims_all_once(world: EscrowWorld, tmp_path: Path) -> None:
    me, auditor = world.peers[0], world.peers[1]
    x = world.create_experiment(audits=2, pool=5_000)
    me.stake(300)
    data, log = tmp_path / "peer-data", tmp_path / "settler.log"
    nonce0 = me.w3.eth.get_transaction_count(me.address)
    chain = world.chain

    with SettlerProcess(world, 0, x, data, log) as first:
        first.round(0, 1111)
        first.events.wait(lambda e: e["kind"] == "contributed" and e["round"] == 0, "round 0 contributed")
        world.goto(x, 1)
        chain.rpc("evm_setAutomine", [False])  # round 1's contribution stays in the node's pool
        first.round(1, 2222)
        wait_until(lambda: any(t[3] == "[[1, 0]]" for t in journal_rows(data)[1]), "round 1's tx journaled")
        (in_flight,) = [t for t in journal_rows(data)[1] if t[3] == "[[1, 0]]"]
        assert in_flight[2:] == ("contribute", "[[1, 0]]", "signed", 0)
        wait_until(lambda: chain.rpc("eth_getTransactionByHash", [in_flight[0]]) is not None, "the tx sent")
        first.kill9()  # contributed round 0 (not claimed), round 1 sent and not mined
    chain.rpc("anvil_dropTransaction", [in_flight[0]])  # ... and the node loses it too
    assert chain.rpc("eth_getTransactionByHash", [in_flight[0]]) is None
    chain.rpc("evm_setAutomine", [True])
    assert journal_rows(data)[0] == [(0, 0, "contributed"), (1, 0, "open")]

    world.goto(x, 0, "audit")  # while the peer is dead, round 0 is audited
    auditor.open_audit(x, 0, 0, me.address, 0)
    with SettlerProcess(world, 0, x, data, log) as second:
        assert second.events.events[0]["detail"]["rounds"] == [[0, 0], [1, 0]]  # taken back from the journal
        second.events.wait(lambda e: e["kind"] == "audit_answered" and e["round"] == 0, "the audit answered")
        wait_until(lambda: me.record(x, 1, 0, me.address).exists, "round 1's contribution mined")
        world.goto(x, 1, "after", offset=1)
        for r in (0, 1):
            second.events.wait(lambda e, r=r: e["kind"] == "claimed" and e["round"] == r, f"round {r} claimed")
        chain.rpc("anvil_mine", [hex(2 * SLOTS_PER_EPOCH + 2)])  # everything final: the journal empties
        wait_until(lambda: journal_rows(data) == ([], []), "the journal emptied")

    seen = chain_record(me, x, me.address)
    assert seen["Contributed"] == {(0, 0): 1, (1, 0): 1}
    assert seen["AuditAnswered"] == {(0, 0, 0): 1}
    assert seen["Claimed"] == {(0, 0): 1, (1, 0): 1}
    assert in_flight[0] in seen["txs"]  # round 1 went in as the very bytes signed before the kill
    claims = {e["tx"] for e in me.events("Claimed", 0, where={"experimentId": x, "peer": me.address})}
    assert len(claims) == 1  # both rounds in one claimMany
    # nothing sent twice: 2 contributions + 1 answer + 2 finalize + 1 claimMany, not one transaction more
    assert me.w3.eth.get_transaction_count(me.address) - nonce0 == 6
    assert me.stake_of().locked == 0
