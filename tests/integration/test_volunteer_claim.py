"""A paid stage peer (real prover, real escrow on anvil, real loopback swarm) contributes, shows its on-chain record
in `swarm-peer status`, is killed with SIGKILL before it could claim, and `swarm-peer claim` collects its reward."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import procs
from swarm.apps.demo import DemoConfig, DemoSwarm
from swarm.apps.demo.economy import DemoEconomy
from swarm.apps.earnings import EarningsReader
from swarm.apps.events import Ready, Settled
from swarm.chain.client import ChainClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROUND_S = 6


def swarm_peer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return procs.run([sys.executable, "-m", "swarm.peer", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_claim_collects_what_a_killed_paid_peer_earned(tmp_path: Path, monkeypatch):
    status_dir = tmp_path / "status"
    monkeypatch.setenv("SWARM_STATUS_DIR", str(status_dir))
    with DemoEconomy(tmp_path, workload="digits", n_stages=1, stage_peers=1, round_duration=ROUND_S,
                     submit_window=180) as economy:  # fmt: skip
        dep = economy.deployment
        swarm = DemoSwarm(DemoConfig(n_stages=1, round_duration=ROUND_S, stage_peers=1), tmp_path, economy)
        with swarm:
            swarm.start_peer("bootstrap", ["--role", "bootstrap", "--n-stages", "1", "--round-duration",
                                           str(ROUND_S), *economy.bootstrap_args()])  # fmt: skip
            swarm.bootstrap_maddrs = swarm.wait_for("bootstrap", lambda e: isinstance(e, Ready)).maddrs
            swarm.start_peer("paid", [*swarm.join_args, "--lr", "0.003", *economy.peer_args(0)])
            swarm.wait_for("paid", lambda e: isinstance(e, Ready) and e.role == "stage")
            swarm.start_peer("trainer", [*swarm.join_args, "--role", "trainer", "--steps", "2000"])
            contributed = swarm.wait_for(
                "paid", lambda e: isinstance(e, Settled) and e.action == "contributed", timeout=300
            )
            wallet = ChainClient(dep.rpc_url, escrow=dep.escrow)
            address = next(e for e in wallet.events("Contributed") if e["round"] == contributed.round)["peer"]

            deadline = time.monotonic() + 60  # the peer reads its wallet's figures every few seconds
            while not re.search(r"; [1-9]\d* on-chain records", (st := swarm_peer("status", "--no-chain")).stdout):
                assert time.monotonic() < deadline, st.stdout + st.stderr
                time.sleep(1)
            assert f"wallet: {address} in experiment {dep.experiment_id}" in st.stdout

            swarm.child("paid").send_signal(signal.SIGKILL)  # killed before any claim
            swarm.child("paid").wait(30)
            gone = swarm_peer("status")
            assert "peer: stage" not in gone.stdout  # its stale status file is not a running peer

            reader = EarningsReader(wallet, dep.experiment_id, address)
            owed = reader.read()
            assert owed.contributions >= 1 and owed.claimed == 0
            last = max(e["round"] for e in wallet.events("Contributed") if e["peer"] == address)
            state = wallet.experiment(dep.experiment_id)
            economy.chain.set_next_timestamp(max(state.audit_end(last) + 2, economy.chain.latest_timestamp() + 1))
            wait_until = time.monotonic() + 30
            while wallet.block_timestamp() <= state.audit_end(last):
                assert time.monotonic() < wait_until, "the dev chain did not move past the audit window"
                time.sleep(0.5)

            before = wallet.token_balance(address)
            done = swarm_peer("claim", "--chain-rpc", dep.rpc_url, "--escrow", dep.escrow, "--chain-experiment",
                              str(dep.experiment_id), "--wallet-key-file", str(economy.key_files[0]))  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            after = reader.read()
            gained = wallet.token_balance(address) - before
            assert gained > 0 and after.claimed == gained and after.claimable == 0 and not after.to_finalize
            assert f"claimed {after.amount(gained)} for {owed.contributions} round(s)" in done.stdout, done.stdout
            swarm.children.stop_all()
