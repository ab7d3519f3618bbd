"""The watchers end to end: a real swarm (every peer a `python -m swarm.peer` process: hivemind DHT + p2pd, GossipSub
sidecars, groth16py proofs) on the demo's real anvil and escrow. One of the two paid stage peers is silent (it
contributes but never proves nor answers its audits); the other's watcher opens the audit, slashes it after the
window and is paid the reporter's share, with no human step. Nobody else is slashed.

Short windows: 10 s rounds, the verifier pinned at 5 s a proof (this machine proves a chunk in ~2 s), a 20 s
submission window, k = 1 and the escrow's 30 s audit-window floor for it. The stage peers start together.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from web3.logs import DISCARD

from swarm.apps.demo import DemoConfig, DemoSwarm
from swarm.apps.demo.economy import DemoEconomy
from swarm.apps.events import Ready
from swarm.chain.client import ChainClient
from swarm.chain.deploy import TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DEADLINE_S = 420.0


def start_together(swarm: DemoSwarm, economy: DemoEconomy) -> None:
    """DemoSwarm.start, but the stage peers start at once (one stage: there is nothing to choose)."""
    c = swarm.config
    swarm.start_peer("bootstrap", ["--role", "bootstrap", "--n-stages", "1", "--round-duration",
                                   str(c.round_duration), *economy.bootstrap_args()])  # fmt: skip
    swarm.bootstrap_maddrs = swarm.wait_for("bootstrap", lambda e: isinstance(e, Ready)).maddrs
    for i, cheat in enumerate([[], ["--byzantine", "--attack", "silent"]]):
        swarm.start_peer(f"stage-peer-{i}", [*swarm.join_args, "--role", "stage", *economy.peer_args(i), *cheat])
    for i in range(2):
        swarm.wait_for(f"stage-peer-{i}", lambda e: isinstance(e, Ready) and e.role == "stage")
    swarm.start_peer("trainer-0", [*swarm.join_args, "--role", "trainer", "--duration", str(c.duration)])


def test_a_silent_stage_peer_is_slashed_by_the_other_peers_watcher_and_the_reporter_paid(tmp_path: Path):
    started = time.monotonic()
    config = DemoConfig(n_stages=1, stage_peers=2, trainers=1, round_duration=10, duration=DEADLINE_S, byzantine=1,
                        attack="silent", submit_window=20)  # fmt: skip
    with DemoEconomy(tmp_path, workload="digits", n_stages=1, stage_peers=2, round_duration=10, submit_window=20,
                     audits_per_peer=1, proof_seconds=5) as economy:  # fmt: skip
        dep = economy.deployment
        assert dep is not None
        chain = ChainClient(dep.rpc_url, escrow=dep.escrow)
        honest, silent = economy.address_of("stage-peer-0"), economy.address_of("stage-peer-1")
        with DemoSwarm(config, tmp_path, economy) as swarm:
            start_together(swarm, economy)
            assert swarm.cheaters() == ["stage-peer-1"]
            deadline = time.monotonic() + DEADLINE_S
            while not swarm.all_paid():  # the honest peer claimed a round and the silent one was slashed
                assert time.monotonic() < deadline, f"no slash in {DEADLINE_S:.0f} s: {chain.events('AuditOpened')}"
                for name in ("stage-peer-0", "stage-peer-1"):
                    assert swarm.child(name).alive, f"{name} exited: {swarm._log_tail(name)}"
                time.sleep(0.5)
                swarm.drain()
            took = time.monotonic() - started

        slashed = chain.events("Slashed")
        assert slashed and {e["peer"].lower() for e in slashed} == {silent}, slashed  # nobody else
        assert all(e["reporter"].lower() == honest for e in slashed)
        min_stake, bond = chain.read("minStake"), chain.read("auditBond")
        share = min_stake * chain.read("reporterBps") // 10_000
        for e in slashed:  # the reporter's share and the bond arrive in the slash's own transaction
            receipt = chain.w3.eth.get_transaction_receipt(e["tx"])
            transfers = chain.token.events.Transfer().process_receipt(receipt, errors=DISCARD)
            paid = [t["args"]["value"] for t in transfers if t["args"]["to"].lower() == honest]
            assert sorted(paid) == sorted([share, bond]) and e["reporterReward"] == share > 0
        assert chain.stake_of(silent).active == 100 * TOKEN - len(slashed) * min_stake
        assert chain.stake_of(honest).active == 100 * TOKEN
        opened = chain.events("AuditOpened")
        assert {e["opener"].lower() for e in opened if e["peer"].lower() == silent} == {honest}
        # an audit of the honest peer (its proof reached the other watcher too late, under load) is answered
        answered = {(e["round"], e["j"]) for e in chain.events("AuditAnswered") if e["peer"].lower() == honest}
        state, now = chain.experiment(dep.experiment_id), chain.block_timestamp()
        over = [(e["round"], e["j"]) for e in opened if e["peer"].lower() == honest and state.audit_end(e["round"]) <= now]
        assert set(over) <= answered, (over, answered)
        mine = [e for e in swarm.history if getattr(e, "action", None) == "slashed" and e.peer == "stage-peer-0"]
        assert mine and mine[0].detail["mine"] and mine[0].detail["peer"] == silent
        lines = economy.summary_lines()
    summary = "\n".join(lines)
    assert f"slashed: stage-peer-1 ({chain.w3.to_checksum_address(silent)}) round" in summary, summary
    assert "stake 100.00 -> 90.00 SWT" in summary and "opened by stage-peer-0's watcher" in summary, summary
    print(f"\nsilent peer slashed by the watcher after {took:.0f} s\n{summary}")
