"""A volunteer's view of their own peer: state from events, warnings with what to do, panel, plain lines, the
status file and `swarm-peer status` (real files and processes; the chain is tested in test_volunteer_money.py)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from swarm.apps.earnings import Earnings
from swarm.apps.events import Left, Ready, RoundDone, Settled, Step, Synced
from swarm.apps.status import main as status_main
from swarm.apps.view.monitor import PeerMonitor, start_view
from swarm.apps.view.render import event_line, panel, summary_lines
from swarm.apps.view.state import ChainInfo, PeerState, reach_of
from swarm.apps.view.status_file import (
    StatusDirError,
    prepare_status_dir,
    read_statuses,
    status_path,
    write_status,
)

TOKEN = 10**18


def rnd(r: int, group: int, stage: int = 1) -> RoundDone:
    return RoundDone(round=r, stage=stage, group_size=group, bytes_sent=1000, bytes_received=1048, seconds=0.5,
                     update_norm=0.1, requests=10 * r)  # fmt: skip


def paid_stage_peer() -> PeerState:
    s = PeerState(role="stage", experiment="exp")
    s.chain = ChainInfo(rpc_url="http://127.0.0.1:8545", escrow="0x" + "ab" * 20, experiment=3,
                        address="0x" + "cd" * 20, key_file="/home/v/.swarm/wallet.key")  # fmt: skip
    s.paid = True
    for e in (Synced(stage=1, from_peers=True, seconds=0.2), Ready(role="stage", peer_id="12D3KooWpeer", stage=1)):
        s.apply(e)
    return s


def earnings(**kw) -> Earnings:
    kw = {"symbol": "SWT", "block": 42, "stake": 100 * TOKEN, "min_stake": 100 * TOKEN, **kw}
    return Earnings(address="0x" + "cd" * 20, experiment=3, escrow="0x" + "ab" * 20, **kw)


def test_stage_peer_state_counts_rounds_proofs_and_says_why_its_stage_was_chosen():
    s = paid_stage_peer()
    for r, g in ((5, 2), (6, 3), (7, 2)):
        s.apply(rnd(r, g))
    s.apply(Settled(action="contributed", round=6, stage=1))
    s.apply(Settled(action="audit_answered", round=6, stage=1, detail={"chunk": 2}))
    s.apply(Settled(action="claimed", round=6, stage=1, detail={"amount": str(5 * TOKEN)}))
    s.apply(Settled(action="gave_up", round=7, stage=1, detail={"why": "NormBelowMinimum(normSq=0, minNormSq=1)"}))
    assert "round 7: NormBelowMinimum" in {w.key: w for w in s.warnings()}["given_up"].what
    assert (s.rounds, s.last_round, s.group_sizes, s.bytes_averaged) == (3, 7, [2, 3, 2], 3 * 2048)
    assert (s.contributions, s.audits_answered, s.proofs_made, s.claimed_by_peer) == (1, 1, 2, 5 * TOKEN)
    assert "limited the pipeline" in s.stage_reason
    pinned = PeerState(role="stage", stage_pinned=True)
    pinned.apply(Synced(stage=0, from_peers=False, seconds=0.1))
    assert pinned.stage_reason == "pinned by --stage"


def test_warnings_say_what_is_wrong_and_what_to_do():
    s = paid_stage_peer()
    s.addresses = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWpeer"]
    for r in range(10, 16):
        s.apply(rnd(r, 1))
    s.apply(Settled(action="contributed", round=10, stage=1))
    s.chain_error = "the RPC at http://127.0.0.1:8545 did not answer"
    s.earnings = earnings(stake=10)
    keys = {w.key: w for w in s.warnings()}
    assert set(keys) == {"unreachable", "alone", "proofs_behind", "rpc_down", "stake"}
    assert "--host 0.0.0.0" in keys["unreachable"].fix and "5 rounds behind" in keys["proofs_behind"].what
    assert "swarm-peer claim" in keys["rpc_down"].fix
    s.addresses = ["/ip4/192.168.1.20/tcp/4001/p2p/x"]
    assert "forward TCP port 4001" in {w.key: w for w in s.warnings()}["unreachable"].fix
    s.dialback, s.dialback_seen_as = "private", "81.2.69.160"
    assert "could not connect back (your connections come from 81.2.69.160)" in {
        w.key: w for w in s.warnings()}["unreachable"].what  # fmt: skip
    s.relayed_through = "/ip4/93.184.216.34/tcp/4001/p2p/QmR"
    assert "relay" in s.reach and "through a relay" in {w.key: w for w in s.warnings()}["unreachable"].what
    s.relayed_through, s.dialback = "", "public"
    assert s.reach.startswith("public") and "unreachable" not in {w.key for w in s.warnings()}
    s.dialback = ""
    s.apply(rnd(16, 3))
    s.apply(Settled(action="contributed", round=16, stage=1))
    s.chain_error, s.earnings = "", earnings()
    s.addresses = ["/ip4/93.184.216.34/tcp/4001/p2p/x", "/ip4/127.0.0.1/tcp/4001/p2p/x"]
    assert s.warnings() == []
    unpaid = PeerState(role="stage")
    assert [w.key for w in unpaid.warnings()] == ["unpaid"]
    assert reach_of(["/ip6/::1/tcp/1/p2p/x"]) == "this machine" and reach_of([]) == "unknown"


def test_panel_and_summary_show_the_chains_money_and_the_claim_command():
    s = paid_stage_peer()
    s.apply(rnd(5, 2))
    s.earnings = earnings(claimed=20 * TOKEN, claimed_rounds=2, claimable=10 * TOKEN, claimable_rounds=[(4, 1)],
                          waiting=1, contributions=4)  # fmt: skip
    console = Console(file=io.StringIO(), width=150, force_terminal=True, color_system=None)
    console.print(panel(s))
    text = console.file.getvalue()
    for fact in ("stage", "1: the stage that limited", "rounds averaged", "claimed 20 SWT", "claimable 10 SWT",
                 "1 round(s) in their windows", "stake 100 SWT", "chain block 42", "proofs"):  # fmt: skip
        assert fact in text, fact
    lines = "\n".join(summary_lines(s, "swarm-peer claim --chain-experiment 3 ..."))
    assert "claimed 20 SWT" in lines and "claimable 10 SWT" in lines and "swarm-peer claim --chain-experiment 3" in lines


def test_trainer_lines_and_summary_carry_loss_samples_and_evaluation():
    s = PeerState(role="trainer")
    lines = []
    for i in range(40):
        e = Step(step=i, loss=2.0 - i * 0.04, samples=(i + 1) * 32, samples_per_second=100.0)
        s.apply(e)
        lines.append(event_line(s, e))
    s.apply(Left(reason="done", eval_loss=0.5))
    assert [x for x in lines if x] == [lines[0], lines[10], lines[20], lines[30]]
    assert lines[10].startswith("step 10: loss 1.6000")
    text = "\n".join(summary_lines(s))
    assert "samples: 1280 in 40 steps" in text and "loss 1.6200 -> 0.8200" in text and "evaluation loss 0.5000" in text


def test_status_file_is_atomic_private_and_read_back(tmp_path: Path):
    s = paid_stage_peer()
    s.earnings = earnings(claimable=7)
    path = status_path(folder=tmp_path / "status")
    write_status(path, s)
    write_status(path, s)  # replaced, not appended
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    ((read_path, back),) = read_statuses(path.parent)
    assert read_path == path and back == s
    assert "wallet.key" in path.read_text() and "private" not in path.read_text().lower()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_status_command_with_no_peer_and_with_a_stale_file(tmp_path: Path, capsys):
    assert status_main(["--dir", str(tmp_path)]) == 1
    assert "no swarm peer is running" in capsys.readouterr().out
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)  # fmt: skip
    s = PeerState(role="stage", pid=int(dead.stdout), started=time.time() - 5)
    write_status(status_path(s.pid, tmp_path), s)
    assert status_main(["--dir", str(tmp_path)]) == 1  # its process is gone: not a running peer
    assert not list(tmp_path.glob("peer-*.json"))


def test_status_command_shows_a_running_peers_facts(tmp_path: Path, capsys):
    s = paid_stage_peer()
    s.apply(rnd(9, 2))
    write_status(status_path(os.getpid(), tmp_path), s)  # this test process is the "running peer"
    assert status_main(["--dir", str(tmp_path), "--no-chain"]) == 0
    out = capsys.readouterr().out
    assert "stage: 1: the stage that limited" in out and "rounds averaged: 1 (last: round 9)" in out
    assert "rewards: not read from the chain yet" in out
    assert status_main(["--dir", str(tmp_path), "--no-chain", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_round"] == 9


def test_monitor_in_plain_mode_writes_lines_keeps_the_file_and_removes_it_with_a_summary(tmp_path: Path):
    out = io.StringIO()
    path = status_path(folder=tmp_path)
    monitor = PeerMonitor(PeerState(), mode="lines", stream=out, status_file=path, refresh_s=0.05)
    writer = monitor.writer(enabled=False)
    with monitor:
        writer.emit(Ready(role="stage", peer_id="12D3KooWx", stage=0))
        writer.emit(rnd(3, 2, stage=0))
        deadline = time.monotonic() + 10
        while not (path.exists() and PeerState.model_validate_json(path.read_text()).rounds == 1):
            assert time.monotonic() < deadline, "the status file was not written"
            time.sleep(0.05)
    assert not path.exists()
    text = out.getvalue()
    assert "ready: stage peer 12D3KooWx serving stage 0" in text
    assert "round 3 stage 0: averaged with 1 other peer(s), 2.0 KiB in 0.5 s" in text
    assert "swarm-peer summary: stage peer 12D3KooWx" in text and "rounds averaged: 1" in text
    assert "\x1b[" not in text  # plain lines: no terminal control codes


def test_a_verified_round_that_left_this_peer_out_is_a_warning():
    s = paid_stage_peer()
    e = rnd(8, 3)
    e.verified, e.parts_checked, e.dropped = True, 4, {"12D3KooWpeer": "replayed an earlier commitment", "Qmo": "x"}
    s.apply(e)
    assert (s.verified_rounds, s.parts_checked, s.dropped_others) == (1, 4, 1)
    (w,) = [w for w in s.warnings() if w.key == "dropped"]
    assert "round 8: replayed an earlier commitment" in w.what and "clock" in w.fix


def test_an_rpc_that_is_down_is_a_warning_with_what_to_do_never_a_crash(tmp_path: Path):
    out = io.StringIO()
    monitor = PeerMonitor(PeerState(), mode="lines", stream=out, refresh_s=0.05, chain_poll_s=0.1)
    writer = monitor.writer(enabled=False)
    info = ChainInfo(rpc_url="http://127.0.0.1:9", escrow="0x" + "ab" * 20, experiment=1, address="0x" + "cd" * 20,
                     key_file=str(tmp_path / "w.key"))  # fmt: skip
    with monitor:
        writer.emit(Ready(role="stage", peer_id="QmX", stage=0))
        monitor.watch_chain(info)
        deadline = time.monotonic() + 20
        while not monitor.state.chain_error:
            assert time.monotonic() < deadline, "the dead RPC was not noticed"
            time.sleep(0.05)
    text = out.getvalue()
    assert "warning: cannot read the L2" in text and "swarm-peer claim" in text
    assert f"swarm-peer claim --chain-rpc http://127.0.0.1:9 --escrow {info.escrow} --chain-experiment 1 " \
        f"--wallet-key-file {tmp_path / 'w.key'}" in text  # fmt: skip


def test_a_status_folder_others_can_write_is_refused(tmp_path: Path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(StatusDirError, match="chmod 700"):
        prepare_status_dir(shared)
    monkeypatch.setenv("SWARM_STATUS_DIR", str(shared))
    monitor, _ = start_view(SimpleNamespace(events=True))
    assert monitor.status_file is None  # the peer runs on, without a status file
    assert prepare_status_dir(tmp_path / "mine") == tmp_path / "mine"
