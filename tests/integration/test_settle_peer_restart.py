"""A real paid stage peer (`swarm-peer --role stage` with a wallet, real prover, real escrow on anvil, loopback swarm)
is killed with SIGKILL after contributing and before any claim; started again with the same --data-dir, it takes its
open rounds back from its settlement journal and claims every one of them itself (claimMany), each exactly once."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from swarm.apps.demo import DemoConfig, DemoSwarm
from swarm.apps.demo.economy import DemoEconomy
from swarm.apps.events import Ready, Settled
from swarm.chain.client import ChainClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROUND_S = 6


def journaled_rounds(data_dir: Path) -> list[tuple[int, int, str]]:
    (path,) = (data_dir / "settlement").glob("*.sqlite")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        return db.execute("SELECT round, stage, state FROM rounds ORDER BY round").fetchall()
    finally:
        db.close()


def test_a_paid_peer_killed_before_claiming_claims_everything_itself_after_a_restart(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SWARM_STATUS_DIR", str(tmp_path / "status"))
    with DemoEconomy(tmp_path, workload="digits", n_stages=1, stage_peers=1, round_duration=ROUND_S,
                     submit_window=180) as economy:  # fmt: skip
        dep = economy.deployment
        swarm = DemoSwarm(DemoConfig(n_stages=1, round_duration=ROUND_S, stage_peers=1), tmp_path, economy)
        with swarm:
            swarm.start_peer("bootstrap", ["--role", "bootstrap", "--n-stages", "1", "--round-duration",
                                           str(ROUND_S), *economy.bootstrap_args()])  # fmt: skip
            swarm.bootstrap_maddrs = swarm.wait_for("bootstrap", lambda e: isinstance(e, Ready)).maddrs
            paid_args = [*swarm.join_args, "--lr", "0.003", *economy.peer_args(0)]
            swarm.start_peer("paid", paid_args)
            swarm.wait_for("paid", lambda e: isinstance(e, Ready) and e.role == "stage")
            swarm.start_peer("trainer", [*swarm.join_args, "--role", "trainer", "--steps", "2000"])
            swarm.wait_for("paid", lambda e: isinstance(e, Settled) and e.action == "contributed", timeout=300)
            swarm.child("trainer").stop()  # no more training: later rounds have nothing to contribute
            swarm.child("paid").send_signal(signal.SIGKILL)  # killed with its rounds contributed and unclaimed
            swarm.child("paid").wait(30)

            chain = ChainClient(dep.rpc_url, escrow=dep.escrow)
            address = economy.chain.accounts[1].address
            where = {"experimentId": dep.experiment_id, "peer": address}
            mine = sorted((int(e["round"]), int(e["stage"])) for e in chain.events("Contributed", where=where))
            assert mine and not chain.events("Claimed", where=where)
            journal = journaled_rounds(tmp_path / "data" / "stage-peer-0")
            assert set(mine) <= {(r, s) for r, s, _ in journal}  # every round it contributed is journaled

            state = chain.experiment(dep.experiment_id)
            economy.chain.set_next_timestamp(max(state.audit_end(mine[-1][0]) + 2, economy.chain.latest_timestamp() + 1))
            deadline = time.monotonic() + 30
            while chain.block_timestamp() <= state.audit_end(mine[-1][0]):
                assert time.monotonic() < deadline, "the dev chain did not move past the audit window"
                time.sleep(0.5)

            swarm.start_peer("paid-again", paid_args)  # the same wallet and --data-dir
            for r, s in mine:
                swarm.wait_for("paid-again", lambda e, r=r: isinstance(e, Settled) and e.action == "claimed"
                               and e.round == r, timeout=180)  # fmt: skip
            claimed = [(int(e["round"]), int(e["stage"])) for e in chain.events("Claimed", where=where)]
            assert sorted(claimed) == mine  # each round claimed, once
            assert len({e["tx"] for e in chain.events("Claimed", where=where)}) == 1  # in one claimMany
            assert sorted((int(e["round"]), int(e["stage"])) for e in chain.events("Contributed", where=where)) == mine
            swarm.children.stop_all()
