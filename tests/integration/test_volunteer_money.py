"""A volunteer's money figures equal the chain's, and `swarm-peer claim` collects what a peer left unclaimed.

Real anvil started by our code, real escrow compiled by solc-js; the stand-in verifier keeps proofs cheap (the
zk path is tested in test_settlement.py). A peer that "was killed before claiming" is a wallet whose
contributions are on-chain and whose rounds were never claimed.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator

import pytest
from rich.console import Console

from runtime import procs
from swarm.apps.earnings import EarningsReader, claim_all, format_amount
from swarm.apps.status import main as status_main
from swarm.apps.view.render import panel, summary_lines
from swarm.apps.view.state import ChainInfo, PeerState
from swarm.apps.view.status_file import status_path, write_status
from swarm.chain import DevChain
from swarm.chain.testing import EscrowWorld

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> Iterator[EscrowWorld]:
    with DevChain(accounts=4) as chain:
        w = EscrowWorld(chain)
        w.mint(w.funder.address, 100_000)  # pools for every test of the module
        yield w


def contribute(world: EscrowWorld, peer, exp: int, round: int, stage: int, root: int) -> None:
    (c,) = world.prove([world.contribution(peer, exp, round, stage, root)], exp)
    peer.contribute(c)


def test_earnings_follow_the_chain_through_windows_finalize_and_claims(world: EscrowWorld) -> None:
    exp = world.create_experiment(reward_per_round=900, pool=5_000)
    a, b = world.peers[:2]
    a.stake(200)  # each contribution locks minStake (100) until it is claimed
    b.stake(100)
    reader = EarningsReader(a, exp, a.address)
    e = reader.read()
    assert (e.stake, e.contributions, e.claimed, e.claimable) == (200, 0, 0, 0) and e.min_stake == 100
    contribute(world, a, exp, 0, 0, 11)
    contribute(world, a, exp, 0, 1, 12)  # two stages in one round: two shares
    contribute(world, b, exp, 0, 0, 21)
    e = reader.read()
    assert (e.contributions, e.waiting, e.claimable) == (2, 2, 0)
    world.goto(exp, 0, "after")
    world.funder.finalize(exp, 0)  # 900 // 3 = 300 each
    e = reader.read()
    assert e.claimable == 600 and sorted(e.claimable_rounds) == [(0, 0), (0, 1)] and e.waiting == 0
    before = a.token_balance()
    a.claim(exp, 0, 1)
    e = reader.read()
    assert (e.claimed, e.claimable, e.claimed_rounds) == (300, 300, 1)
    assert a.token_balance() == before + 300 == e.balance
    assert sum(x["amount"] for x in a.events("Claimed") if x["peer"] == a.address and x["experimentId"] == exp) \
        == e.claimed  # fmt: skip
    assert e.amount(e.claimable) == f"0.0000000000000003 {e.symbol}" == format_amount(300, 18, e.symbol)


def test_claim_all_finalizes_and_claims_what_a_killed_peer_left(world: EscrowWorld) -> None:
    exp = world.create_experiment(reward_per_round=1_000, pool=10_000)
    a = world.peers[2]
    a.stake(300)  # three contributions in flight, minStake (100) of collateral each
    for r in range(3):  # the peer contributed three rounds, then died before claiming any of them
        world.goto(exp, r, "train", offset=1)
        contribute(world, a, exp, r, r % 2, 100 + r)
    world.goto(exp, 2, "after")
    world.funder.finalize(exp, 0)  # someone finalized round 0; rounds 1 and 2 await finalization
    e = EarningsReader(a, exp, a.address).read()
    assert e.claimable == 1_000 and sorted(e.to_finalize) == [(1, 1), (2, 0)]
    before = a.token_balance()
    out = claim_all(a, exp)
    assert out.finalized == [1, 2] and sorted(out.rounds) == [(0, 0), (1, 1), (2, 0)]
    assert out.claimed == 3_000 == a.token_balance() - before
    assert (out.earnings.claimed, out.earnings.claimable, out.earnings.to_finalize) == (3_000, 0, [])
    again = claim_all(a, exp)
    assert again.claimed == 0 and again.transactions == []


def test_claim_command_uses_the_env_key_and_says_what_it_claimed(world: EscrowWorld) -> None:
    exp = world.create_experiment(reward_per_round=500, pool=10_000)
    a = world.peers[0]
    world.goto(exp, 0, "train", offset=1)
    contribute(world, a, exp, 0, 0, 7)
    world.goto(exp, 0, "after")
    key = world.chain.accounts[a_index(world, a)].private_key.get_secret_value()
    argv = [sys.executable, "-m", "swarm.peer", "claim", "--chain-rpc", world.chain.rpc_url, "--escrow",
            world.escrow, "--chain-experiment", str(exp)]  # fmt: skip
    env = {**os.environ, "SWARM_WALLET_KEY": key}
    before = a.token_balance()
    done = procs.run(argv, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert a.token_balance() - before == 500
    e = EarningsReader(a, exp, a.address).read()
    assert f"claimed {format_amount(500, e.decimals, e.symbol)}" in done.stdout
    assert key.removeprefix("0x") not in done.stdout + done.stderr
    done = procs.run(argv, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "nothing to claim" in done.stdout
    no_key = procs.run(argv, check=False, env={k: v for k, v in os.environ.items() if k != "SWARM_WALLET_KEY"},
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert no_key.returncode == 2 and "wallet" in no_key.stderr


def a_index(world: EscrowWorld, peer) -> int:
    return next(i for i, c in enumerate(world.clients) if c.address == peer.address)


def test_status_and_summary_show_the_chains_figures_for_a_running_peers_wallet(world: EscrowWorld, tmp_path, capsys):
    exp = world.create_experiment(reward_per_round=800, pool=10_000)
    a, b = world.peers[1], world.peers[2]
    for p in (a, b):
        p.stake(500)  # collateral for two more contributions
    for r, stage in ((0, 0), (1, 1)):
        world.goto(exp, r, "train", offset=1)
        contribute(world, a, exp, r, stage, 40 + r)
        contribute(world, b, exp, r, stage, 50 + r)
    world.goto(exp, 1, "after")
    world.funder.finalize(exp, 0)
    world.funder.finalize(exp, 1)
    a.claim(exp, 0, 0)  # 400 claimed; round 1's 400 still claimable
    state = PeerState(role="stage", peer_id="QmA", paid=True)
    state.chain = ChainInfo(rpc_url=world.chain.rpc_url, escrow=world.escrow, experiment=exp, address=a.address)
    write_status(status_path(os.getpid(), tmp_path), state)  # this test process plays the running peer
    assert status_main(["--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    e = EarningsReader(a, exp, a.address).read()
    assert (e.claimed, e.claimable) == (400, 400)
    assert f"rewards: claimed {e.amount(e.claimed)}, claimable {e.amount(e.claimable)}" in out
    assert f"stake {e.amount(a.stake_of().active)}" in out
    state.set_earnings(e)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(panel(state))
    assert f"claimed {e.amount(400)}, claimable {e.amount(400)}" in console.file.getvalue()  # the live panel
    text = "\n".join(summary_lines(state, "swarm-peer claim ..."))
    assert f"claimed {e.amount(400)}, claimable {e.amount(400)}" in text and "swarm-peer claim ..." in text
