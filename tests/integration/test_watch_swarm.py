"""The watchers end to end: a real swarm (every peer a `python -m swarm.peer` process: hivemind DHT + p2pd, GossipSub
sidecars, groth16py proofs) on the demo's real anvil and escrow, three paid stage peers. One is silent (it
contributes but never proves nor answers its audits); another's watcher opens the audit, slashes it after the
window and is paid the reporter's share, with no human step. One sends random data under its honest root (issue 7):
the others drop it in the round, and the watcher of a peer that caught it sends its wallet-signed part to
slashMismatch: slashed at once from the evidence. The honest peer is never slashed.

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
    cheats = [[], ["--byzantine", "--attack", "silent"], ["--byzantine", "--attack", "random"]]
    for i, cheat in enumerate(cheats):
        swarm.start_peer(f"stage-peer-{i}", [*swarm.join_args, "--role", "stage", *economy.peer_args(i), *cheat])
    for i in range(len(cheats)):
        swarm.wait_for(f"stage-peer-{i}", lambda e: isinstance(e, Ready) and e.role == "stage")
    swarm.start_peer("trainer-0", [*swarm.join_args, "--role", "trainer", "--duration", str(c.duration)])


def test_silent_and_lying_stage_peers_are_slashed_by_the_others_watchers_and_the_reporters_paid(tmp_path: Path):
    started = time.monotonic()
    config = DemoConfig(n_stages=1, stage_peers=3, trainers=1, round_duration=10, duration=DEADLINE_S, byzantine=2,
                        attack="silent", submit_window=20)  # fmt: skip
    with DemoEconomy(tmp_path, workload="digits", n_stages=1, stage_peers=3, round_duration=10, submit_window=20,
                     audits_per_peer=1, proof_seconds=5) as economy:  # fmt: skip
        dep = economy.deployment
        assert dep is not None
        chain = ChainClient(dep.rpc_url, escrow=dep.escrow)
        honest, silent, liar = (economy.address_of(f"stage-peer-{i}") for i in range(3))
        with DemoSwarm(config, tmp_path, economy) as swarm:
            start_together(swarm, economy)
            assert swarm.cheaters() == ["stage-peer-1", "stage-peer-2"]
            deadline = time.monotonic() + DEADLINE_S
            while not swarm.all_paid():  # the honest peer claimed a round and both cheaters were slashed
                assert time.monotonic() < deadline, f"no slash in {DEADLINE_S:.0f} s: {chain.events('AuditOpened')}"
                for name in ("stage-peer-0", "stage-peer-1", "stage-peer-2"):
                    assert swarm.child(name).alive, f"{name} exited: {swarm._log_tail(name)}"
                time.sleep(0.5)
                swarm.drain()
            took = time.monotonic() - started

        slashed = chain.events("Slashed")
        assert slashed and {e["peer"].lower() for e in slashed} == {silent, liar}, slashed  # never the honest one
        checker = str(chain.read("fraudChecker")).lower()
        by_evidence = [e for e in slashed if (chain.w3.eth.get_transaction(e["tx"])["to"] or "").lower() == checker]
        assert by_evidence and {e["peer"].lower() for e in by_evidence} == {liar}  # the liar: from its signed part
        assert all(e["reporter"].lower() in {honest, silent} for e in by_evidence)  # a peer that caught it
        audited = [e for e in slashed if e not in by_evidence]
        assert audited and {e["peer"].lower() for e in audited} == {silent}
        min_stake, bond = chain.read("minStake"), chain.read("auditBond")
        share = min_stake * chain.read("reporterBps") // 10_000
        for e in slashed:  # the reporter's share (and an audit's bond) arrive in the slash's own transaction
            receipt = chain.w3.eth.get_transaction_receipt(e["tx"])
            transfers = chain.token.events.Transfer().process_receipt(receipt, errors=DISCARD)
            paid = [t["args"]["value"] for t in transfers if t["args"]["to"].lower() == e["reporter"].lower()]
            assert e["reporterReward"] == share > 0 and share in paid
            if e in audited:
                assert sorted(paid) == sorted([share, bond])
        assert chain.stake_of(silent).active == 100 * TOKEN - len(audited) * min_stake
        assert chain.stake_of(liar).active == 100 * TOKEN - len(by_evidence) * min_stake
        assert chain.stake_of(honest).active == 100 * TOKEN
        opened = chain.events("AuditOpened")
        assert {e["opener"].lower() for e in opened if e["peer"].lower() == silent} <= {honest, liar}
        # an audit of the honest peer (its proof reached the other watcher too late, under load) is answered
        answered = {(e["round"], e["j"]) for e in chain.events("AuditAnswered") if e["peer"].lower() == honest}
        state, now = chain.experiment(dep.experiment_id), chain.block_timestamp()
        over = [(e["round"], e["j"]) for e in opened if e["peer"].lower() == honest and state.audit_end(e["round"]) <= now]
        assert set(over) <= answered, (over, answered)
        mine = [e for e in swarm.history if getattr(e, "action", None) == "slashed" and e.peer != "stage-peer-2"]
        assert any(e.detail.get("evidence") and e.detail["peer"] == liar for e in mine), mine  # the stage role's
        lines = economy.summary_lines()
    summary = "\n".join(lines)
    assert f"slashed: stage-peer-1 ({chain.w3.to_checksum_address(silent)}) round" in summary, summary
    assert f"slashed: stage-peer-2 ({chain.w3.to_checksum_address(liar)}) round" in summary, summary
    assert "stake 100.00 -> 90.00 SWT" in summary and "'s watcher, paid 2.00 SWT and its bond back" in summary, summary
    assert "from its own signed part that does not match its root" in summary, summary
    print(f"\nsilent and lying peers slashed by the watchers after {took:.0f} s\n{summary}")
