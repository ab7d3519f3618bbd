"""Verified rounds through real hivemind DHTs and p2pd on loopback: commit, exchange, check, agree, apply."""

from __future__ import annotations

import pathlib
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import torch
from eth_account import Account
from hivemind.utils import get_dht_time

from swarm.chain.client import ChainClient
from swarm.chain.testing import EscrowWorld
from swarm.network.dht import create_dht, local_dhts, visible_multiaddrs
from swarm.rounds.clock import RoundClock
from swarm.rounds.outer import exact_mean
from swarm.rounds.parts import EvidenceDomain, WalletSigner
from swarm.rounds.verified import RoundTiming, VerifiedAverager
from swarm.settlement.certificate import averaged_roots
from swarm.settlement.watcher import Watcher
from zk.circuit import SMALL_PARAMS
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROUND_S = 10.0
TIMING = RoundTiming(commit_s=2.5, exchange_s=3.5, agree_s=1.5)  # generous: CI shares 2 cores
PARAMS = SMALL_PARAMS  # 128-value chunks: a 2.6k-parameter module has 21 chunks, 3 parts of 8


def make_module(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 8))


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def train_locally(module: torch.nn.Module, seed: int) -> None:
    """A stand-in for local steps: a different, deterministic change on every peer."""
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


TEACHER = make_module(99)


def train_usefully(module: torch.nn.Module, seed: int) -> None:
    """Real local steps: SGD on the same regression task (fitting TEACHER) from a peer's own batches, so that
    honest updates share a direction (the alignment rule's premise) while each peer's differs."""
    g = torch.Generator().manual_seed(2000 + seed)
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    for _ in range(3):
        x = torch.randn(32, 32, generator=g)
        with torch.no_grad():
            y = TEACHER(x)
        opt.zero_grad()
        torch.nn.functional.mse_loss(module(x), y).backward()
        opt.step()


def clock_ending_now(r: int) -> RoundClock:
    """A clock whose round `r` has just ended, so that step(r) starts its commit phase at once."""
    return RoundClock(get_dht_time() - (r + 1) * ROUND_S + 0.2, ROUND_S)


@pytest.fixture
def experiment() -> str:
    return f"ver{uuid.uuid4().hex[:8]}"


def averagers(dhts, experiment, modules, clock, attacks=None, **kwargs) -> list[VerifiedAverager]:
    attacks = attacks or [None] * len(modules)
    return [VerifiedAverager(d, experiment, 0, m, clock=clock, params=PARAMS, part_chunks=8, timing=TIMING,
                             attack=a, **kwargs) for d, m, a in zip(dhts, modules, attacks)]


def step_all(avs, r):
    clock = clock_ending_now(r)  # made now: starting the averagers took seconds
    for a in avs:
        a.clock = clock
    with ThreadPoolExecutor(len(avs)) as pool:
        return list(pool.map(lambda a: a.step(r), avs))


def test_an_honest_group_of_three_ends_with_bit_identical_anchors_equal_to_the_committed_mean(experiment):
    modules = [make_module(0) for _ in range(3)]  # the same starting point (anchor)
    anchor = flat(modules[0]).clone()
    for i, m in enumerate(modules):
        train_locally(m, i)
    deltas = [flat(m) - anchor for m in modules]
    with local_dhts(3) as dhts:
        avs = averagers(dhts, experiment, modules, clock=clock_ending_now(0))
        try:
            for a in avs:  # the averagers were built after training: their anchor is the shared start
                a.anchor = anchor.clone()
            results = step_all(avs, 0)
        finally:
            for a in avs:
                a.shutdown()
    ids = sorted(a.peer_id for a in avs)
    for res in results:
        assert res.verified and res.averaged and res.included == ids and res.dropped == {}, res
        assert res.parts_checked == 2 * 3 and res.bytes_received > 0 and res.bytes_sent > 0
    committed = [avs[i].last_commitment.update for i in range(3)]
    for q, d in zip(committed, deltas):  # what was committed is the quantized Δ of each peer, not its parameters
        assert torch.equal(q.values, quantize_update(d, PARAMS.block).values)
    expected = anchor + exact_mean([committed[ids.index(a.peer_id)] for a in sorted(avs, key=lambda a: a.peer_id)])
    for a, m in zip(avs, modules):
        assert torch.equal(a.anchor, avs[0].anchor)  # bit-identical across the group
        assert torch.equal(flat(m), a.anchor)  # no local steps since the snapshot: parameters = anchor
        assert a.anchor_round == 0
    torch.testing.assert_close(avs[0].anchor, expected, rtol=0, atol=1e-7)
    honest_float_mean = anchor + torch.stack(deltas).mean(0)
    assert float((avs[0].anchor - honest_float_mean).abs().max()) < 1e-3  # only int8 rounding away from it


def run_group(experiment, attacks, rounds, wallets=None, train=train_locally, on_round=None, **kwargs):
    """Peers (one per attack) from one anchor, each round a different local change (`train`); returns (averagers, results per
    round, anchor before each round, accusations published per peer). `wallets`: each peer's WalletSigner (paid);
    `on_round(r, averagers)` is called before each round."""
    modules = [make_module(0) for _ in attacks]
    published: list[list] = [[] for _ in attacks]
    with local_dhts(len(attacks)) as dhts:
        avs = averagers(dhts, experiment, modules, clock_ending_now(0), attacks=attacks, **kwargs)
        for a, wallet in zip(avs, wallets or []):
            a.wallet = wallet
        for a, sink in zip(avs, published):
            a.on_accusation = sink.append
        try:
            history = []
            for r in rounds:
                before = avs[-1].anchor.clone()  # the last peer is honest in every test
                if on_round is not None:
                    on_round(r, avs)
                for i, m in enumerate(modules):
                    train(m, 10 * r + i)
                results = step_all(avs, r)
                history.append((before, results))
        finally:
            for a in avs:
                a.shutdown()
    return avs, history, published


@pytest.mark.parametrize("attack", ["poison", "random", "norm", "stale", "split"])
def test_a_cheater_is_dropped_by_every_honest_peer_in_the_same_round(experiment, attack, chain):
    """With "random" the peers are paid (a real anvil and escrow): their wallets sign their parts' leaves, and
    the cheater, dropped in the round, is also slashed on-chain from the signed part an honest peer caught."""
    rounds = [0, 1] if attack == "stale" else [0]  # a replay needs an earlier round to replay
    paid = attack == "random"
    world = EscrowWorld(chain) if paid else None  # `chain`: the module's anvil, started before the leak check
    kwargs = {}
    if paid:
        x = world.create_experiment(audits=1, pool=5_000, norm_bound=2**120)
        domain = EvidenceDomain(chain_id=world.funder.chain_id(), escrow=world.escrow, experiment_id=x)
        kwargs["wallets"] = [WalletSigner(p.wallet.account, domain) for p in world.peers[:3]]
    avs, history, published = run_group(experiment, [attack, None, None], rounds, **kwargs)
    cheater, honest = avs[0], avs[1:]
    before, results = history[-1]
    for a, res in zip(honest, results[1:]):
        assert cheater.peer_id in res.dropped, (attack, res)
        assert res.included == sorted(h.peer_id for h in honest)
        assert torch.equal(a.anchor, honest[0].anchor)
    r = rounds[-1]
    honest_updates = [h.last_commitment.update for h in sorted(honest, key=lambda h: h.peer_id)]
    assert torch.equal(honest[0].anchor, before + exact_mean(honest_updates))  # the honest-only mean, exactly
    assert all(h.anchor_round == r for h in honest)
    if attack in ("poison", "random", "split"):  # data off its root: caught (split: by one), published by both
        for a, sink in zip(honest, published[1:]):
            assert [acc.accused for acc in sink] == [cheater.peer_id]
            assert sink[0].round == r and sink[0].reason
    else:  # refused from its commitment alone: no data needed, no accusation
        assert published == [[], [], []]
    if paid:
        slashed_from_evidence(world, x, avs, published)


def slashed_from_evidence(world, x, avs, published) -> None:
    """Every peer contributes its round-0 commitment; an honest peer's watcher, handed its accusation, sends the
    cheater's signed part to slashMismatch: the cheater loses its collateral, the honest peers nothing."""
    peers = world.peers[:3]
    for p in peers:
        p.stake(300)
    proven = world.prove([world.contribution(p, x, 0, 0, a.last_commitment.root, a.last_commitment.norm_sq)
                          for p, a in zip(peers, avs)], x)  # fmt: skip
    for p, c in zip(peers, proven):
        p.contribute(c)
    w = Watcher(ChainClient(world.chain.rpc_url, peers[1].wallet, escrow=world.escrow), x, from_block=0)
    for acc in published[1]:
        w.on_accusation(acc)
    deadline = time.monotonic() + 60
    while not w.mismatch_slashes and time.monotonic() < deadline:
        w.step()
        time.sleep(0.5)
    assert w.mismatch_slashes == [(0, 0, peers[0].address.lower())]
    min_stake = world.funder.read("minStake")
    assert [p.stake_of().active for p in peers] == [300 - min_stake, 300, 300]
    assert [p.record(x, 0, 0, p.address).slashed for p in peers] == [True, False, False]


def test_a_noise_rider_is_averaged_without_the_alignment_rule_and_dropped_with_it(experiment):
    """A free rider commits, sends and proves a random update of its honest norm ("noise"): it passes every check
    of the data. Round 0 without the rule: averaged (so certified and paid). Rounds 1-2 with it (4 sigmas): every
    peer, the rider included, drops it with the reason, averages the 3 honest updates bit-identically, and what
    each peer's certifier signs (`averaged_roots`: the included peers' wallets and roots) leaves the rider out."""

    def rule(r, avs):
        for a in avs:
            a.min_alignment = None if r == 0 else 4.0

    domain = EvidenceDomain(chain_id=31337, escrow="0x" + "11" * 20, experiment_id=0)  # signing needs no chain
    wallets = [WalletSigner(Account.create(), domain) for _ in range(4)]
    avs, history, published = run_group(experiment, ["noise", None, None, None], [0, 1, 2], train=train_usefully,
                                        on_round=rule, wallets=wallets)
    rider, honest = avs[0], avs[1:]
    honest_ids = sorted(h.peer_id for h in honest)
    assert published == [[], [], [], []]  # its data matches its root: nothing to accuse
    before, results = history[0]
    for res in results:  # without the rule: the rider's noise enters the mean
        assert res.dropped == {} and res.included == sorted(a.peer_id for a in avs), res
    for r, (before, results) in enumerate(history[1:], start=1):
        roots = {a.wallet.address: a.records_of(r)[a.peer_id].root for a in honest}
        for a, res in zip(avs, results):
            assert res.included == honest_ids, (r, res)
            assert list(res.dropped) == [rider.peer_id], (r, res)
            assert res.dropped[rider.peer_id].startswith("update not aligned with the group's: cos with the "), res
            assert averaged_roots(SimpleNamespace(round=r, result=res, averager=a)) == roots
        if r == 2:
            updates = [h.last_commitment.update for h in sorted(honest, key=lambda h: h.peer_id)]
            assert torch.equal(honest[0].anchor, before + exact_mean(updates))  # the honest mean, exactly
    assert all(torch.equal(a.anchor, honest[0].anchor) and a.anchor_round == 2 for a in avs)  # rider too
    assert rider.last_commitment.norm_sq > 0


def test_a_bounded_adversary_passes_the_checks_and_centered_clip_limits_its_pull(experiment):
    avs, history, _ = run_group(experiment, ["scale", None, None], [0], aggregation="centered_clip")
    before, results = history[0]
    honest = avs[1:]
    assert results[1].dropped == {} and len(results[1].included) == 3  # well-formed and within the bound
    assert torch.equal(honest[0].anchor, honest[1].anchor)
    updates = {a.peer_id: a.last_commitment.update for a in avs}
    plain = before + exact_mean([updates[p] for p in sorted(updates)])
    honest_mean = before + exact_mean([a.last_commitment.update for a in honest])
    clipped_error = float((honest[0].anchor - honest_mean).norm())
    plain_error = float((plain - honest_mean).norm())
    assert clipped_error < 0.5 * plain_error, (clipped_error, plain_error)


def test_a_peer_killed_after_committing_does_not_stop_the_round(experiment, children, tmp_path):
    modules = [make_module(0) for _ in range(2)]
    lines: list[str] = []
    clock_file = tmp_path / "start_time"
    with local_dhts(2) as dhts:
        avs = averagers(dhts, experiment, modules, clock_ending_now(0))
        try:
            for i, m in enumerate(modules):
                train_locally(m, i)
            victim = children.start([sys.executable, __file__, "peer", visible_multiaddrs(dhts[0])[0], experiment,
                                     str(clock_file)], name="victim-verified", on_line=lines.append)
            assert wait_for(lambda: "ready" in lines, 60.0), f"the victim peer did not start: {lines}"
            clock = clock_ending_now(0)
            clock_file.write_text(repr(clock.start_time))
            for a in avs:
                a.clock = clock
            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(a.step, 0) for a in avs]
                # kill -9 once the exchange has begun: its record is fixed and the others are pulling its parts
                commit_deadline = clock.round_end(0) + TIMING.commit_s
                assert wait_for(lambda: get_dht_time() > commit_deadline + 0.3, 40.0)
                assert victim.alive, "the victim died before the exchange: the kill would not be mid-round"
                victim.send_signal(signal.SIGKILL)
                victim.stop()  # its DHT process and p2pd go too: the whole peer vanishes
                results = [f.result() for f in futures]
        finally:
            for a in avs:
                a.shutdown()
    survivors = sorted(a.peer_id for a in avs)
    for a, res in zip(avs, results):
        assert len(a._rounds[0].records) == 3  # the victim had committed: the kill landed inside the round
        assert set(survivors) <= set(res.included)
        assert res.included == results[0].included and res.dropped.keys() == results[0].dropped.keys()
    assert torch.equal(avs[0].anchor, avs[1].anchor) and avs[0].anchor_round == 0


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _run_peer(initial_peer: str, experiment: str, clock_file: str) -> None:
    """A peer in its own process (for the kill test): commit round 0, serve its parts, wait to be killed."""
    dht = create_dht([initial_peer])
    module = make_module(0)
    train_locally(module, 2)
    averager = VerifiedAverager(dht, experiment, 0, module, clock=RoundClock(0.0, ROUND_S), params=PARAMS,
                                part_chunks=8, timing=TIMING)
    try:
        averager.anchor = flat(make_module(0)).clone()
        print("ready", flush=True)
        path = pathlib.Path(clock_file)
        while not path.exists() or not path.read_text():
            time.sleep(0.02)
        averager.clock = RoundClock(float(path.read_text()), ROUND_S)
        averager.step(0)
        threading.Event().wait(60)
    finally:
        averager.shutdown()
        dht.shutdown()


if __name__ == "__main__" and sys.argv[1:2] == ["peer"]:
    _run_peer(sys.argv[2], sys.argv[3], sys.argv[4])


def test_a_peer_with_another_anchor_resyncs_in_the_round_and_nesterov_keeps_the_group_identical(experiment):
    """Round 0: peer 2 starts from another anchor: refused as stale by all, it downloads the group's state (checked
    against the digest in the records) and applies the round like the others. Round 1: all three contribute."""
    modules = [make_module(0), make_module(0), make_module(5)]
    with local_dhts(3) as dhts:
        avs = averagers(dhts, experiment, modules, clock_ending_now(0), outer="nesterov")
        try:
            shared = flat(make_module(0)).clone()
            for a in avs[:2]:
                a.anchor = shared.clone()
            avs[2].anchor = flat(modules[2]).clone()
            for i, m in enumerate(modules):
                train_locally(m, i)
            first = step_all(avs, 0)
            for i, m in enumerate(modules):
                train_locally(m, 10 + i)
            second = step_all(avs, 1)
        finally:
            for a in avs:
                a.shutdown()
    lagging = avs[2].peer_id
    for res in first:
        assert "stale anchor" in res.dropped[lagging] and lagging not in res.included and len(res.included) == 2
    assert [r.averaged for r in first[:2]] == [True, True]
    for res in second:
        assert res.dropped == {} and len(res.included) == 3
    for a in avs:
        assert a.anchor_round == 1 and torch.equal(a.anchor, avs[0].anchor)
        assert torch.equal(a.outer.momentum, avs[0].outer.momentum) and float(a.outer.momentum.abs().sum()) > 0


def test_a_leaving_peer_ends_its_round_at_once_without_applying_it(experiment):
    module = make_module(0)
    with local_dhts(1) as dhts:
        (av,) = averagers(dhts, experiment, [module], clock_ending_now(0))
        try:
            anchor = av.anchor.clone()
            train_locally(module, 0)
            av.clock = clock_ending_now(0)
            stop = threading.Event()
            threading.Timer(0.5, stop.set).start()  # Ctrl-C during the commit phase (it lasts 2.5 s)
            started = time.monotonic()
            result = av.step(0, stop=stop)
            took = time.monotonic() - started
        finally:
            av.shutdown()
    assert took < TIMING.commit_s, took  # did not sit out the round's phases
    assert not result.averaged and torch.equal(av.anchor, anchor) and av.anchor_round == -1
